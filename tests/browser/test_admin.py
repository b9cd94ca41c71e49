"""The admin in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import io
import time
from base64 import b32decode
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from tests.factories import member_everywhere
from trials.models import Trial

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A page in headless Debian Chromium.

    Playwright's sync API runs in a greenlet with its own context, where Django would open a
    second database connection; tests therefore do their ORM work before entering this block.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


# Authenticator keys the browser enrolled (by username), and the 30-second step of the last
# code each gave: django-otp accepts a code once.
TOTP_KEYS: dict[str, bytes] = {}
TOTP_LAST_STEP: dict[str, int] = {}


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    """Sign in as a person does: the password, then, where the account needs a second factor
    (a superuser manages users), enrol an authenticator app or give its code."""
    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state("load")
    if "/admin/two-factor/" in page.url:
        give_second_factor(page, username)


def give_second_factor(page: Any, username: str, key: bytes | None = None) -> None:
    """On the enrol page, read the key it shows; on the verify page, use `key` or the one
    enrolled earlier; then type the code of now (waiting for a fresh one if this user's last
    code was of the same 30-second step)."""
    from django_otp.oath import totp

    secret = page.locator("#two-factor-secret")
    if secret.count():
        TOTP_KEYS[username] = b32decode(secret.inner_text().replace(" ", ""))
    key = key or TOTP_KEYS[username]
    if TOTP_LAST_STEP.get(username) == int(time.time()) // 30:
        time.sleep(30.5 - time.time() % 30)
    TOTP_LAST_STEP[username] = int(time.time()) // 30
    page.fill("#id_code", f"{totp(key):06d}")
    page.click("#two-factor-form input[type=submit]")
    page.wait_for_load_state("load")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_admin_shows_seed_trials_and_demo_participant_calendars(live_server) -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    get_user_model().objects.create_superuser("coordinator", "c@example.org", "a-long-passphrase")
    niams_id = Trial.objects.get(code="niams-ani-vascular").id

    # The admin shows clinical data through memberships: a coordinator at every site.
    member_everywhere(get_user_model().objects.get(username="coordinator"))
    with chromium_page() as page:
        log_in(page, live_server.url, "coordinator", "a-long-passphrase")
        page.goto(f"{live_server.url}/admin/trials/trial/")
        trial_codes = page.locator("#result_list tbody th a").all_inner_texts()
        page.goto(f"{live_server.url}/admin/participants/participant/?trial__id__exact={niams_id}")
        study_ids = page.locator("#result_list tbody th a").all_inner_texts()
        page.click("text=NIH-CC-001")
        page.wait_for_load_state("load")
        visit_codes = page.locator("#visits-group td.field-visit_definition").all_inner_texts()

    assert sorted(trial_codes) == [
        "ani-lupus-nephritis",
        "ani-pediatric-sle",
        "ani-vitiligo-nbuvb",
        "jasmine-myositis",
        "lavender-cle",
        "niams-ani-vascular",
        "tsukuba-early-ani",
    ]
    # The three enrolled, then the screening log's three candidates (load_demo).
    assert sorted(study_ids) == [
        "NIH-CC-001",
        "NIH-CC-002",
        "NIH-CC-003",
        "NIH-CC-S01",
        "NIH-CC-S02",
        "NIH-CC-S03",
    ]
    assert [code.split(" ")[0] for code in visit_codes] == [
        "V1",
        "V2",
        "V3",
        "V3C",
        "V4",
        "V5",
        "V6",
        "V7",
        "V8",
        "V9",
        "V10",
        "V11",
    ]
