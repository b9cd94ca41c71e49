"""Signing in with a second factor in a real browser, and the pages people use running under
the Content-Security-Policy without one violation (Debian's Chromium through Playwright)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from scheduler.services import participant_enroll
from tests.browser.test_admin import chromium_page, give_second_factor
from tests.factories import SiteFactory, member_everywhere, participant_for
from trials.models import TrialSite

# Each CSP violation the page reports, as the browser describes it.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}`);
});
"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_user_manager_signs_in_with_a_code_and_no_page_breaks_the_csp(
    live_server, import_seed
) -> None:
    version = import_seed("000")
    site = SiteFactory.create(code="nih-cc", timezone="America/New_York")
    TrialSite.objects.create(trial=version.trial, site=site)
    participant = participant_for(
        version, anchors={"day1": dt.date(2026, 3, 2)}, site=site, study_id="NIH-CC-001"
    )
    participant_enroll(participant=participant, on=dt.date(2026, 2, 16))
    root = get_user_model().objects.create_superuser("root", "r@example.org", "a-long-passphrase")
    member_everywhere(root)
    key = TOTPDevice.objects.create(user=root, name="phone", confirmed=True).bin_key
    base = live_server.url
    pages = [
        "/admin/",  # the start page
        "/admin/participants/participant/",
        reverse("admin:participants_participant_change", args=[participant.pk]),
        reverse("admin:participants_participant_timeline", args=[participant.pk]),
        "/admin/auth/user/",
        "/admin/two-factor/",
        "/api/v1/docs/",
    ]

    errors: list[str] = []
    seen: dict[str, Any] = {}
    with chromium_page() as page:
        page.add_init_script(RECORD_VIOLATIONS)
        page.on(
            "console",
            lambda m: (
                errors.append(f"{m.text} {m.location.get('url', '')}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
        missing: list[str] = []
        page.on(
            "response",
            lambda r: missing.append(r.url.removeprefix(base)) if r.status == 404 else None,
        )
        page.goto(f"{base}/admin/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "a-long-passphrase")
        page.click("input[type=submit]")
        page.wait_for_load_state("load")
        seen["asked for a code at"] = page.url.removeprefix(base)
        give_second_factor(page, "root", key)
        seen["signed in at"] = page.url.removeprefix(base)
        for path in pages:
            page.goto(f"{base}{path}")
            page.wait_for_load_state("networkidle")
            if path == "/api/v1/docs/":
                page.wait_for_selector(".swagger-ui .info .title")
                seen["docs title"] = page.locator(".swagger-ui .info .title").inner_text()
            seen[path] = page.evaluate("window.__violations")

    assert seen.pop("asked for a code at") == "/admin/two-factor/verify/?next=%2Fadmin%2F"
    assert seen.pop("signed in at") == "/admin/"
    assert seen.pop("docs title").startswith("Trial visit scheduler API")
    assert seen == dict.fromkeys(pages, [])
    # The browser's own guess at a site icon is the only thing missing (the app has none).
    assert [e for e in errors if not e.endswith("/favicon.ico")] == []
    assert missing == []
