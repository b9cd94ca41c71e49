"""Logins: lockout after ten failures, its audit entry, idle sessions, second factors for
unblinded roles and user managers, and password rules (scheduler/security.py)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from base64 import b32encode, b64encode
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from scheduler.api.credentials import site_system_credentials_create
from scheduler.models import Membership, SecurityEvent
from tests.factories import SiteFactory, member
from trials.models import Trial

pytestmark = pytest.mark.django_db

Role = Membership.Role
LOGIN = "/admin/login/?next=/admin/"
T0 = dt.datetime(2026, 3, 8, 7, 0, tzinfo=dt.UTC)


def locked_out_text(response: Any) -> str:
    html = response.content.decode()
    paragraph = re.search(r'<p class="errornote" id="locked-out">(.*?)</p>', html, re.S)
    assert paragraph is not None, html
    return " ".join(paragraph.group(1).split())


def sign_in_with_password(client: Client, username: str, password: str, address: str) -> Any:
    return client.post(
        LOGIN,
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


@pytest.fixture
def kana(django_user_model) -> Any:
    return django_user_model.objects.create_user(
        "kana", password="a-long-passphrase-kana", is_staff=True
    )


@pytest.fixture
def trial_and_site(import_seed) -> tuple[Trial, Any]:
    version = import_seed("000")
    return version.trial, SiteFactory.create(code="berlin", timezone="Europe/Berlin")


def test_ten_failed_sign_ins_lock_the_account_for_the_configured_time(kana, settings) -> None:
    assert (settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_MINUTES) == (10, 30)
    client = Client()
    with time_machine.travel(T0, tick=False):
        # From a new address each time: the count is the username's, wherever it comes from.
        failures = [
            sign_in_with_password(client, "kana", "wrong", f"203.0.113.{n}") for n in range(1, 10)
        ]
        tenth = sign_in_with_password(client, "kana", "wrong", "203.0.113.10")
    with time_machine.travel(T0 + dt.timedelta(minutes=29), tick=False):
        right_password_while_locked = sign_in_with_password(
            client, "kana", "a-long-passphrase-kana", "198.51.100.7"
        )
    with time_machine.travel(T0 + dt.timedelta(minutes=30, seconds=1), tick=False):
        after_the_lock = sign_in_with_password(
            client, "kana", "a-long-passphrase-kana", "198.51.100.7"
        )

    assert {response.status_code for response in failures} == {200}
    assert "Please enter the correct username and password" in failures[-1].content.decode()
    assert tenth.status_code == 429
    assert locked_out_text(tenth) == (
        "This account is locked after 10 failed sign-ins. Try again after 2026-03-08 07:30 UTC."
    )
    # The right password changes nothing while locked, nor does it move the lock's end.
    assert right_password_while_locked.status_code == 429
    assert locked_out_text(right_password_while_locked) == locked_out_text(tenth)
    assert (after_the_lock.status_code, after_the_lock["Location"]) == (302, "/admin/")


def test_a_lockout_is_in_the_security_audit_and_the_log_names_no_one(kana, caplog) -> None:
    client = Client()
    with (
        time_machine.travel(T0, tick=False),
        caplog.at_level(logging.INFO),
    ):
        for n in range(1, 12):
            sign_in_with_password(client, "kana", f"wrong-{n}", f"203.0.113.{n}")

    events = list(
        SecurityEvent.objects.filter(kind__in=["lockout", "locked_out_attempt"])
        .order_by("id")
        .values_list("kind", "username", "ip_address", "at")
    )
    assert events == [
        ("lockout", "kana", "203.0.113.10", T0),
        ("locked_out_attempt", "kana", "203.0.113.11", T0),
    ]
    assert SecurityEvent.objects.filter(kind="login_failed", username="kana").count() == 9
    security_lines = [r.getMessage() for r in caplog.records if r.name == "scheduler.security"]
    assert security_lines[-3:] == [
        f"security event login_failed: user id {kana.pk}, path /admin/login/",
        f"security event lockout: user id {kana.pk}, path /admin/login/",
        f"security event locked_out_attempt: user id {kana.pk}, path /admin/login/",
    ]
    # Neither the username, the passwords tried nor the addresses reach any log line.
    everything_logged = "\n".join(r.getMessage() for r in caplog.records)
    assert [
        secret
        for secret in ("kana", "wrong-1", "wrong-11", "203.0.113.")
        if secret in everything_logged
    ] == []


def test_a_user_manager_lifts_a_lockout_by_deleting_the_access_attempt(kana, admin_client) -> None:
    client = Client()
    for _ in range(10):
        sign_in_with_password(client, "kana", "wrong", "203.0.113.1")
    attempts = admin_client.get(reverse("admin:axes_accessattempt_changelist"))
    coordinator_view = Client()
    coordinator_view.force_login(kana)

    assert attempts.status_code == 200
    assert [str(row.username) for row in attempts.context["cl"].result_list] == ["kana"]
    assert coordinator_view.get(reverse("admin:axes_accessattempt_changelist")).status_code == 403
    admin_client.post(
        reverse("admin:axes_accessattempt_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [attempts.context["cl"].result_list[0].pk],
            "post": "yes",
        },
    )
    again = sign_in_with_password(client, "kana", "a-long-passphrase-kana", "203.0.113.1")
    assert (again.status_code, again["Location"]) == (302, "/admin/")


def test_a_session_ends_after_thirty_idle_minutes_and_with_the_browser(
    kana, trial_and_site, settings
) -> None:
    # The deployment's idle limit (tests/conftest.py lengthens it for the rest of the suite).
    settings.SESSION_COOKIE_AGE = settings.SESSION_IDLE_MINUTES * 60
    settings.SESSION_REFRESH_SECONDS = 60
    trial, site = trial_and_site
    member(kana, trial=trial, site=site, role=Role.COORDINATOR)
    client = Client()
    with time_machine.travel(T0, tick=False):
        signed_in = sign_in_with_password(client, "kana", "a-long-passphrase-kana", "192.0.2.1")
    pages = []
    for minutes in (20, 40, 69):  # 20 minutes apart, then 29: each request moves the end
        with time_machine.travel(T0 + dt.timedelta(minutes=minutes), tick=False):
            pages.append(client.get("/admin/").status_code)
    with time_machine.travel(T0 + dt.timedelta(minutes=69 + 31), tick=False):
        idle = client.get("/admin/")

    assert signed_in.status_code == 302
    cookie = signed_in.cookies["sessionid"]
    # A browser-session cookie: no expiry of its own, so closing the browser ends it.
    assert (cookie["expires"], cookie["max-age"]) == ("", "")
    assert pages == [200, 200, 200]
    assert (idle.status_code, idle["Location"]) == (302, "/admin/login/?next=/admin/")


def test_a_coordinator_needs_no_second_factor(kana, trial_and_site) -> None:
    trial, site = trial_and_site
    member(kana, trial=trial, site=site, role=Role.COORDINATOR)
    client = Client()
    client.force_login(kana)

    assert client.get("/admin/").status_code == 200


def test_an_unblinded_pharmacist_enrols_a_second_factor_before_any_page(
    django_user_model, trial_and_site
) -> None:
    trial, site = trial_and_site
    pharmacist = django_user_model.objects.create_user(
        "pharma", password="a-long-passphrase-ph", is_staff=True
    )
    member(pharmacist, trial=trial, site=site, role=Role.UNBLINDED_PHARMACIST)
    client = Client()
    with time_machine.travel(T0, tick=False):
        signed_in = sign_in_with_password(client, "pharma", "a-long-passphrase-ph", "192.0.2.1")
        admin_page = client.get("/admin/participants/participant/")
        api_page = client.get("/api/v1/participants/")
        setup = client.get(admin_page["Location"])
        device = TOTPDevice.objects.get(user=pharmacist)
        wrong = client.post(admin_page["Location"], {"code": "000000"})
    # A wrong code holds the device back a moment (django-otp's throttling).
    with time_machine.travel(T0 + dt.timedelta(seconds=40), tick=False):
        right = client.post(
            admin_page["Location"],
            {"code": f"{totp(device.bin_key):06d}", "next": "/admin/participants/participant/"},
        )
        after = client.get("/admin/participants/participant/")

    assert (signed_in.status_code, signed_in["Location"]) == (302, "/admin/")
    assert (admin_page.status_code, admin_page["Location"]) == (
        302,
        "/admin/two-factor/?next=%2Fadmin%2Fparticipants%2Fparticipant%2F",
    )
    assert (api_page.status_code, api_page.json()) == (
        403,
        {
            "type": "about:blank",
            "title": "Two-factor verification required",
            "status": 403,
            "detail": "Verify your second factor in the admin before using the API with this "
            "session.",
        },
    )
    assert setup.status_code == 200
    assert "Your role needs a second factor" in setup.content.decode()
    # The key to type in, in groups of four, beside the QR code of device.config_url.
    shown = re.search(r'<code id="two-factor-secret">([A-Z2-7 ]+)</code>', setup.content.decode())
    assert shown is not None
    assert shown[1] == " ".join(re.findall(".{1,4}", b32encode(device.bin_key).decode()))
    assert wrong.context["form"].errors == {
        "code": ["That code is not the one your app shows now."]
    }
    assert (right.status_code, right["Location"]) == (302, "/admin/participants/participant/")
    assert TOTPDevice.objects.get(user=pharmacist).confirmed is True
    assert after.status_code == 200
    assert list(
        SecurityEvent.objects.filter(kind__startswith="second_factor")
        .order_by("id")
        .values_list("kind", "username")
    ) == [("second_factor_failed", "pharma"), ("second_factor_enrolled", "pharma")]


def test_an_enrolled_user_gives_the_code_at_each_sign_in(django_user_model) -> None:
    manager = django_user_model.objects.create_user(
        "manager", password="a-long-passphrase-mg", is_staff=True
    )
    manager.user_permissions.add(Permission.objects.get(codename="change_user"))
    device = TOTPDevice.objects.create(user=manager, name="phone", confirmed=True)
    client = Client()
    with time_machine.travel(T0, tick=False):
        sign_in_with_password(client, "manager", "a-long-passphrase-mg", "192.0.2.1")
        users = client.get("/admin/auth/user/")
        wrong = client.post(users["Location"], {"code": "123456"})
    with time_machine.travel(T0 + dt.timedelta(seconds=40), tick=False):
        right = client.post(
            users["Location"], {"code": f"{totp(device.bin_key):06d}", "next": "/admin/auth/user/"}
        )
        after = client.get("/admin/auth/user/")

    assert (users.status_code, users["Location"]) == (
        302,
        "/admin/two-factor/verify/?next=%2Fadmin%2Fauth%2Fuser%2F",
    )
    assert wrong.context["form"].errors == {
        "code": ["That code is not the one your app shows now."]
    }
    assert (right.status_code, right["Location"]) == (302, "/admin/auth/user/")
    assert after.status_code == 200


def test_a_user_manager_without_a_device_must_enrol_one(django_user_model) -> None:
    manager = django_user_model.objects.create_user("manager", is_staff=True)
    manager.user_permissions.add(Permission.objects.get(codename="change_user"))
    client = Client()
    client.force_login(manager)

    response = client.get("/admin/")

    assert (response.status_code, response["Location"]) == (
        302,
        "/admin/two-factor/?next=%2Fadmin%2F",
    )


def test_otp_required_for_names_the_roles_that_need_a_second_factor(
    django_user_model, settings
) -> None:
    settings.OTP_REQUIRED_FOR = ["unblinded"]
    manager = django_user_model.objects.create_user("manager", is_staff=True)
    manager.user_permissions.add(Permission.objects.get(codename="change_user"))
    client = Client()
    client.force_login(manager)

    assert client.get("/admin/").status_code == 200


def test_passwords_need_twelve_characters_and_no_common_or_all_digit_ones() -> None:
    with pytest.raises(ValidationError) as short:
        validate_password("lupus2026")
    with pytest.raises(ValidationError) as digits:
        validate_password("202603080730")
    with pytest.raises(ValidationError) as common:
        validate_password("password1234")

    assert short.value.messages == [
        "This password is too short. It must contain at least 12 characters."
    ]
    assert digits.value.messages == ["This password is entirely numeric."]
    assert common.value.messages == ["This password is too common."]
    validate_password("visit-window-taper-7")  # a long passphrase passes (no exception)


def test_a_site_systems_token_is_never_asked_for_a_second_factor(trial_and_site) -> None:
    trial, site = trial_and_site
    application, secret = site_system_credentials_create(
        name="berlin-ehr", trial=trial, sites=[site]
    )
    # Even a machine user that would need one as a person (here: it manages users).
    application.user.user_permissions.add(Permission.objects.get(codename="change_user"))
    issued = Client().post(
        "/api/v1/oauth/token/",
        {"grant_type": "client_credentials", "scope": "read"},
        HTTP_AUTHORIZATION="Basic "
        + b64encode(f"{application.client_id}:{secret}".encode()).decode(),
    )

    response = Client().get(
        "/api/v1/visits/", HTTP_AUTHORIZATION=f"Bearer {issued.json()['access_token']}"
    )

    assert (issued.status_code, response.status_code) == (200, 200)
