"""A passkey as the second factor, in a real browser: Chromium's virtual authenticator (the
DevTools WebAuthn domain) stands in for a phone's or laptop's platform authenticator, so the
whole ceremony runs (django-otp-webauthn's script, its views, py_webauthn's checks of the
signature, the challenge, the origin and the relying party) with no key or token faked.

A user manager (who must give a second factor) signs in, is sent to enrol one, adds a passkey
and lands where they were going; signs out, signs in again and verifies with the passkey. No
page breaks the Content-Security-Policy."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django_otp_webauthn.models import WebAuthnCredential

from scheduler.models import SecurityEvent
from tests.browser.test_admin import chromium_page
from tests.browser.test_logins import RECORD_VIOLATIONS

PASSWORD = "a-long-passphrase"  # noqa: S105 - a test account's


def virtual_authenticator(page: Any) -> tuple[Any, str]:
    """A platform authenticator that verifies its user (a fingerprint, say) at once."""
    devtools = page.context.new_cdp_session(page)
    devtools.send("WebAuthn.enable")
    added = devtools.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return devtools, added["authenticatorId"]


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state("load")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_user_manager_enrols_a_passkey_and_signs_in_with_it(live_server, settings) -> None:
    # The live server answers on http://localhost:<port>: the relying party is localhost and
    # the origin the browser reports must be exactly that one.
    settings.OTP_WEBAUTHN_RP_ID = "localhost"
    settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [live_server.url]
    root = get_user_model().objects.create_superuser("root", "r@example.org", PASSWORD)
    base = live_server.url

    with chromium_page() as page:
        page.add_init_script(RECORD_VIOLATIONS)
        devtools, authenticator = virtual_authenticator(page)

        sign_in(page, base)
        enrol_url = page.url
        page.click("#passkey-register-button")
        page.wait_for_url(f"{base}/admin/")
        enrolled_violations = page.evaluate("window.__violations")
        keys = devtools.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})

        page.click("#logout-form button")
        page.wait_for_load_state("load")
        sign_in(page, base)
        verify_url = page.url
        code_forms = page.locator("#two-factor-form").count()
        page.click("#passkey-verification-button")
        page.wait_for_url(f"{base}/admin/")
        heading = page.locator("#site-name").inner_text()
        verified_violations = page.evaluate("window.__violations")

    assert enrol_url == f"{base}/admin/two-factor/?next=%2Fadmin%2F"
    assert verify_url == f"{base}/admin/two-factor/verify/?next=%2Fadmin%2F"
    assert code_forms == 0  # a passkey only: no authenticator-app code is asked
    assert heading == "Trial visit scheduler"
    assert enrolled_violations == [] and verified_violations == []
    (credential,) = WebAuthnCredential.objects.filter(user=root)
    assert credential.confirmed
    assert credential.sign_count >= 1  # the sign-in used it: its counter moved
    assert len(keys["credentials"]) == 1
    assert list(
        SecurityEvent.objects.filter(username="root")
        .exclude(kind__in=["login", "logout"])
        .values_list("kind", flat=True)
    ) == ["second_factor_enrolled"]
