"""Passkeys and security keys (WebAuthn, django-otp-webauthn) beside authenticator apps:
which second factor each page offers, that the ceremony's endpoints are reachable before the
second factor (they are how a person gets past it) but never let anyone skip one, that a
refused assertion is audited, and that only user managers see enrolled passkeys.
tests/browser/test_passkeys.py runs the real ceremony in Chromium."""

from __future__ import annotations

import base64
import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from config import settings as settings_module
from scheduler.models import SecurityEvent
from scheduler.security import PASSKEY_PATH  # also connects the sign-in receivers
from tests.factories import SiteFactory, member

pytestmark = pytest.mark.django_db
SETUP = "/admin/two-factor/"
VERIFY = "/admin/two-factor/verify/"


def manager(django_user_model: Any, username: str = "manager") -> Any:
    user = django_user_model.objects.create_user(username, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_user"))
    return user


def passkey(user: Any) -> WebAuthnCredential:
    return WebAuthnCredential.objects.create(
        user=user,
        name="laptop",
        confirmed=True,
        credential_id=b"\x01" * 16,
        public_key=b"\x02" * 77,
        sign_count=0,
    )


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_json(client: Client, name: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        reverse(f"otp_webauthn:{name}"),
        json.dumps(body or {}),
        content_type="application/json",
    )


def test_the_setup_page_offers_a_passkey_and_an_authenticator_app(django_user_model) -> None:
    page = signed_in(manager(django_user_model)).get(f"{SETUP}?next=/admin/auth/user/")

    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="passkey-register-button"' in html
    assert 'id="two-factor-secret"' in html
    config = page.context["configuration"]
    assert config["beginRegistrationUrl"] == f"{PASSKEY_PATH}registration/begin/"
    assert config["completeRegistrationUrl"] == f"{PASSKEY_PATH}registration/complete/"
    assert PASSKEY_PATH == "/admin/two-factor/passkey/"


@pytest.mark.parametrize(
    ("devices", "offered"),
    [
        (("passkey",), {"passkey": True, "code": False}),
        (("app",), {"passkey": False, "code": True}),
        (("passkey", "app"), {"passkey": True, "code": True}),
    ],
)
def test_the_verify_page_asks_for_what_the_person_enrolled(
    django_user_model, devices: tuple[str, ...], offered: dict[str, bool]
) -> None:
    user = manager(django_user_model)
    if "passkey" in devices:
        passkey(user)
    if "app" in devices:
        TOTPDevice.objects.create(user=user, name="phone", confirmed=True)

    page = signed_in(user).get(f"{VERIFY}?next=/admin/")

    html = page.content.decode()
    assert {
        "passkey": 'id="passkey-verification-button"' in html,
        "code": 'id="two-factor-form"' in html,
    } == offered


def test_a_person_who_must_enrol_may_start_a_passkey_ceremony_for_this_site(
    django_user_model, settings
) -> None:
    settings.OTP_WEBAUTHN_RP_ID = "scheduler.example.org"
    client = signed_in(manager(django_user_model))

    assert client.get("/admin/")["Location"] == "/admin/two-factor/?next=%2Fadmin%2F"
    options = post_json(client, "credential-registration-begin")

    assert options.status_code == 200
    body = options.json()
    assert body["rp"] == {"name": "Trial visit scheduler", "id": "scheduler.example.org"}
    assert body["user"]["name"] == "manager"
    assert len(base64.urlsafe_b64decode(body["challenge"] + "==")) >= 16


def test_a_second_factor_cannot_be_skipped_by_registering_a_passkey(django_user_model) -> None:
    """Someone with an authenticator app who has not given its code in this session (a
    stolen password) may not add a passkey and so sign in with it."""
    user = manager(django_user_model)
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = signed_in(user)

    refused = post_json(client, "credential-registration-begin")

    assert refused.status_code == 403
    assert refused.json()["code"] == "user_not_verified"
    assert client.get("/admin/")["Location"] == "/admin/two-factor/verify/?next=%2Fadmin%2F"
    assert not WebAuthnCredential.objects.filter(user=user).exists()


def test_no_one_signs_in_with_a_passkey_alone(client) -> None:
    """Passkeys are a second factor here, never a password's replacement: axes counts
    passwords."""
    refused = post_json(client, "credential-authentication-begin")

    assert refused.status_code == 403
    assert refused.json()["code"] == "passwordless_login_disabled"


def test_a_forged_assertion_is_refused_and_audited(django_user_model) -> None:
    user = manager(django_user_model)
    passkey(user)
    client = signed_in(user)
    assert post_json(client, "credential-authentication-begin").status_code == 200

    forged = post_json(
        client,
        "credential-authentication-complete",
        {
            "id": "AQEBAQEBAQEBAQEBAQEBAQ",
            "rawId": "AQEBAQEBAQEBAQEBAQEBAQ",
            "type": "public-key",
            "response": {
                "clientDataJSON": "e30",
                "authenticatorData": "AAAA",
                "signature": "AAAA",
            },
        },
    )

    assert (forged.status_code, forged.json()["code"]) == (422, "invalid_authentication_response")
    assert client.get("/admin/")["Location"] == "/admin/two-factor/verify/?next=%2Fadmin%2F"
    assert list(
        SecurityEvent.objects.filter(kind__startswith="second_factor").values_list(
            "kind", "username"
        )
    ) == [("second_factor_failed", "manager")]


def test_only_user_managers_see_enrolled_passkeys(django_user_model, import_seed) -> None:
    owner = manager(django_user_model, "owner")
    key = passkey(owner)
    coordinator = member(
        django_user_model.objects.create_user("coordinator", is_staff=True),
        trial=import_seed("000").trial,
        site=SiteFactory.create(code="nih"),
    )
    changelist = reverse("admin:django_otp_webauthn_webauthncredential_changelist")
    delete = reverse("admin:django_otp_webauthn_webauthncredential_delete", args=[key.pk])
    root = django_user_model.objects.create_superuser("root", "r@example.org", "x")
    TOTPDevice.objects.create(user=root, name="phone", confirmed=True)

    as_root = signed_in(root)
    session = as_root.session
    session["otp_device_id"] = TOTPDevice.objects.get(user=root).persistent_id
    session.save()

    assert signed_in(coordinator).get(changelist).status_code in (302, 403)
    listed = as_root.get(changelist)
    assert listed.status_code == 200
    assert [row.name for row in listed.context["cl"].result_list] == ["laptop"]
    assert as_root.post(delete, {"post": "yes"}).status_code == 302
    assert not WebAuthnCredential.objects.filter(pk=key.pk).exists()


@pytest.mark.parametrize(
    ("allowed_hosts", "rp_id"),
    [
        ("127.0.0.1,localhost", "localhost"),
        ("10.0.0.7,[::1],scheduler-1.example.org", "scheduler-1.example.org"),
        (".example.org", "example.org"),
    ],
)
def test_passkeys_are_bound_to_the_first_host_name_not_an_address(
    allowed_hosts: str, rp_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", allowed_hosts)
    monkeypatch.setenv("DEBUG", "false")
    monkeypatch.setenv("SECRET_KEY", "a-deployment-key-for-this-test-only-0123456789")

    deployed = runpy.run_path(str(Path(settings_module.__file__)))

    assert (deployed["OTP_WEBAUTHN_RP_ID"], deployed["OTP_WEBAUTHN_ALLOWED_ORIGINS"]) == (
        rp_id,
        [f"https://{rp_id}"],
    )
