"""The API when its cache (Redis: the per-credential rate budgets) is away.

The budget is fairness between site systems, not access control: tokens, memberships and
scopes live in the database. So a cache that refuses connections, or takes them and never
answers, must not turn every API request into a 500 or hold it for as long as redis-py waits
(5 s by default): the request is served unmetered, and the log says so once a minute, not once
a request. The cache is configured as a deployment configures it (config/settings.py with
REDIS_URL set), pointed at the outage.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from scheduler.api import throttling
from scheduler.api.credentials import site_system_credentials_create
from scheduler.sparselog import Sparse
from tests.api.conftest import World
from tests.api.test_auth import bearer, token
from tests.outages import Blackhole, closed_port, configured

UNMETERED = (
    "API rate budgets not checked: the cache is unavailable ({kind}); requests are served "
    "unmetered until it answers"
)


@pytest.fixture(autouse=True)
def nothing_said_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttling, "UNMETERED_SAID", Sparse(60.0))


def deployed_cache_at(location: str) -> dict[str, Any]:
    deployed = configured("CACHES", REDIS_URL="redis://127.0.0.1:6379/0")
    return {"default": {**deployed["default"], "LOCATION": location}}


@pytest.fixture
def client(world: World) -> APIClient:
    """Berlin's site system, signed in with a token of its own."""
    application, secret = site_system_credentials_create(
        name="berlin-ehr", trial=world.trial, sites=[world.berlin]
    )
    return bearer(token(application.client_id, secret)["access_token"])


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == throttling.__name__]


@pytest.mark.django_db
def test_a_cache_that_refuses_connections_serves_requests_unmetered_and_says_so_once(
    world: World, client: APIClient, caplog: pytest.LogCaptureFixture
) -> None:
    participant = world.people["BERLIN-001"]

    with override_settings(CACHES=deployed_cache_at(f"redis://127.0.0.1:{closed_port()}/1")):
        caplog.set_level(logging.WARNING, logger=throttling.__name__)
        sites = client.get("/api/v1/sites/")
        calendar = client.get(f"/api/v1/participants/{participant.pk}/calendar/")
        person = world.client("coordinator").get("/api/v1/visits/?site=berlin")

    assert (sites.status_code, [s["code"] for s in sites.json()["results"]]) == (200, ["berlin"])
    assert (calendar.status_code, calendar.json()["study_id"]) == (200, "BERLIN-001")
    assert person.status_code == 200
    assert said(caplog) == [UNMETERED.format(kind="ConnectionError")]


@pytest.mark.django_db
def test_a_cache_that_never_answers_holds_a_request_half_a_second_not_five(
    client: APIClient, caplog: pytest.LogCaptureFixture
) -> None:

    with Blackhole() as redis, override_settings(CACHES=deployed_cache_at(redis.url(1))):
        caplog.set_level(logging.WARNING, logger=throttling.__name__)
        started = time.perf_counter()
        response = client.get("/api/v1/sites/")
        took = time.perf_counter() - started

    assert redis.accepted >= 1  # the request did reach the silent server
    assert response.status_code == 200
    # The configured 0.5 s (once to connect, once to read at most), not redis-py's 5 s.
    assert took < 2.5
    assert said(caplog) == [UNMETERED.format(kind="TimeoutError")]


@pytest.mark.django_db
def test_a_cache_that_answers_again_meters_again(client: APIClient) -> None:
    """Unmetered only while the cache is away: the budget applies again as it answers."""
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    original = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = {
        **api_settings.DEFAULT_THROTTLE_RATES,  # type: ignore[dict-item]
        "credential": "2/minute",
    }
    try:
        with override_settings(CACHES=deployed_cache_at(f"redis://127.0.0.1:{closed_port()}/1")):
            away = [client.get("/api/v1/sites/").status_code for _ in range(3)]
        back = [client.get("/api/v1/sites/").status_code for _ in range(3)]
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original

    assert away == [200, 200, 200]
    assert back == [200, 200, 429]
