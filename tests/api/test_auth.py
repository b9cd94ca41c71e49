"""Machine credentials: OAuth2 client credentials, scopes, expiry, revocation, throttling."""

from __future__ import annotations

import datetime as dt
from typing import cast

import pytest
import time_machine
from django.core.management import call_command
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIClient

from scheduler.api.credentials import site_system_credentials_create
from tests.api.conftest import NOW, World


def token(client_id: str, secret: str, scope: str = "read write") -> dict:
    response = APIClient().post(
        "/api/v1/oauth/token/",
        {"grant_type": "client_credentials", "scope": scope},
        HTTP_AUTHORIZATION=_basic(client_id, secret),
    )
    assert response.status_code == 200, response.content
    return response.json()


def _basic(client_id: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def bearer(access_token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client


@pytest.fixture
def berlin_system(world: World) -> tuple[Application, str]:
    return site_system_credentials_create(
        name="berlin-ehr", trial=world.trial, sites=[world.berlin]
    )


@pytest.mark.django_db
def test_a_site_system_token_reads_only_its_sites(world: World, berlin_system) -> None:
    application, secret = berlin_system
    issued = token(application.client_id, secret)

    response = bearer(issued["access_token"]).get("/api/v1/visits/")

    assert issued["token_type"] == "Bearer"
    assert issued["expires_in"] == 3600
    assert issued["scope"] == "read write"
    assert response.status_code == 200
    assert {v["site"] for v in response.json()["results"]} == {"berlin"}
    tokyo = world.people["TOKYO-001"].pk
    assert bearer(issued["access_token"]).get(f"/api/v1/participants/{tokyo}/").status_code == 404


@pytest.mark.django_db
def test_secrets_and_tokens_are_stored_hashed(world: World, berlin_system) -> None:
    application, secret = berlin_system
    issued = token(application.client_id, secret)

    application.refresh_from_db()
    assert application.client_secret != secret
    assert application.client_secret.startswith("pbkdf2_sha256$")
    stored = AccessToken.objects.get()
    assert stored.token == ""  # RFC 9700: only the token's SHA-256 is kept
    assert stored.token_checksum != issued["access_token"]


@pytest.mark.django_db
def test_a_read_scoped_token_cannot_change_anything(world: World, berlin_system) -> None:
    application, secret = berlin_system
    client = bearer(token(application.client_id, secret, scope="read")["access_token"])
    visit = world.visit("BERLIN-001", "V2")

    response = client.post(
        f"/api/v1/visits/{visit.pk}/cancel/",
        {"reason": "x"},
        format="json",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
        HTTP_IDEMPOTENCY_KEY="k",
    )

    assert response.status_code == 403
    assert response.json() == {
        "type": "/api/v1/problems/permission-denied",
        "title": "Permission denied",
        "status": 403,
        "detail": "this credential lacks the scope this request needs",
        "errors": [],
    }


@pytest.mark.django_db
def test_an_anonymous_request_gets_401_with_a_bearer_challenge(world: World) -> None:
    response = APIClient().get("/api/v1/visits/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "/api/v1/problems/not-authenticated",
        "title": "Not authenticated",
        "status": 401,
        "detail": "Authentication credentials were not provided.",
        "errors": [],
    }


@pytest.mark.django_db
def test_expired_and_revoked_tokens_are_refused(world: World, berlin_system) -> None:
    application, secret = berlin_system
    expiring = token(application.client_id, secret)["access_token"]
    revoked = token(application.client_id, secret)["access_token"]

    gone = APIClient().post(
        "/api/v1/oauth/revoke/",
        {"token": revoked},
        HTTP_AUTHORIZATION=_basic(application.client_id, secret),
    )
    assert gone.status_code == 200
    assert bearer(revoked).get("/api/v1/sites/").status_code == 401
    assert bearer(expiring).get("/api/v1/sites/").status_code == 200
    with time_machine.travel(NOW + dt.timedelta(hours=1, seconds=1), tick=False):
        assert bearer(expiring).get("/api/v1/sites/").status_code == 401


@pytest.mark.django_db
def test_a_wrong_secret_gets_no_token(world: World, berlin_system) -> None:
    application, _secret = berlin_system
    response = APIClient().post(
        "/api/v1/oauth/token/",
        {"grant_type": "client_credentials"},
        HTTP_AUTHORIZATION=_basic(application.client_id, "guess"),
    )
    assert (response.status_code, response.json()) == (401, {"error": "invalid_client"})


@pytest.mark.django_db
def test_throttling_is_per_credential(world: World, berlin_system, settings) -> None:
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    application, secret = berlin_system
    other, other_secret = site_system_credentials_create(
        name="berlin-lims", trial=world.trial, sites=[world.berlin]
    )
    first = bearer(token(application.client_id, secret)["access_token"])
    second_token_same_app = bearer(token(application.client_id, secret)["access_token"])
    other_app = bearer(token(other.client_id, other_secret)["access_token"])
    # The stubs type the default rates as numbers; DRF reads them as "N/period" strings.
    defaults = cast("dict[str, str | None]", api_settings.DEFAULT_THROTTLE_RATES)
    rates = {**defaults, "credential": "3/minute"}
    original = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = rates
    try:
        statuses = [first.get("/api/v1/sites/").status_code for _ in range(3)]
        same_app = second_token_same_app.get("/api/v1/sites/")
        another = other_app.get("/api/v1/sites/")
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original

    assert statuses == [200, 200, 200]
    assert same_app.status_code == 429  # one budget per application, whatever its tokens
    assert same_app["Retry-After"] == "61"
    assert same_app.json()["type"] == "/api/v1/problems/throttled"
    assert another.status_code == 200


@pytest.mark.django_db
def test_the_command_issues_credentials_once(world: World, capsys) -> None:
    call_command("api_client_create", "tokyo-ehr", "--trial", world.trial.code, "--site", "tokyo")

    lines = capsys.readouterr().out.splitlines()
    client_id = lines[0].split()[-1]
    secret = lines[1].split()[-1]
    issued = token(client_id, secret)
    visits = bearer(issued["access_token"]).get("/api/v1/visits/").json()["results"]
    assert {v["site"] for v in visits} == {"tokyo"}
