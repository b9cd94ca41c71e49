"""What a read costs before its view runs, and that the savings keep every guarantee: the token,
its application and machine user in one query, memberships without joins, the throttle in one
Redis round trip (atomic), the calendar's record view as one INSERT; a revoked token, a
deactivated machine user or a removed membership still count from the very next request."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from oauth2_provider.models import AccessToken, Application
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIRequestFactory

from scheduler import selectors
from scheduler.api import serializers as out
from scheduler.api import views
from scheduler.api.auth import SiteSystemAuthentication
from scheduler.api.credentials import site_system_credentials_create
from scheduler.api.throttling import CredentialRateThrottle
from scheduler.models import Membership, ScheduledVisit, SecurityEvent
from scheduler.selectors import visits_attach_procedures
from tests.api.conftest import NOW, World
from tests.api.test_auth import bearer, token
from tests.api.test_planned_output import _vary
from trials.models import ProtocolVersion


@pytest.fixture
def berlin_system(world: World) -> tuple[Application, str]:
    return site_system_credentials_create(
        name="berlin-ehr", trial=world.trial, sites=[world.berlin]
    )


def _tables(sql: str) -> list[str]:
    """The tables a query reads (or inserts into), in the order it names them."""
    words = sql.replace("(", " ").split()
    return [
        words[i + 1].strip('"')
        for i, word in enumerate(words[:-1])
        if word in ("FROM", "JOIN", "INTO")
    ]


# ----------------------------------------------------------------------------------------
# Authentication and memberships


@pytest.mark.django_db
def test_a_bearer_token_costs_one_query_for_token_application_and_user(
    world: World, berlin_system
) -> None:
    application, secret = berlin_system
    issued = token(application.client_id, secret)["access_token"]
    request = APIRequestFactory().get("/api/v1/sites/", HTTP_AUTHORIZATION=f"Bearer {issued}")

    with CaptureQueriesContext(connection) as queries:
        user, access_token = SiteSystemAuthentication().authenticate(request)  # type: ignore[misc]
        assert (user.username, user.is_active) == ("system:berlin-ehr", True)
        assert access_token.application.pk == application.pk

    assert [_tables(q["sql"]) for q in queries] == [
        ["oauth2_provider_accesstoken", "auth_user", "oauth2_provider_application", "auth_user"]
    ]
    assert "ORDER BY" not in queries[0]["sql"]


@pytest.mark.django_db
def test_an_api_read_queries_memberships_once_without_joins(world: World, berlin_system) -> None:
    application, secret = berlin_system
    client = bearer(token(application.client_id, secret)["access_token"])

    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/sites/").json()["results"][0]["code"] == "berlin"

    memberships = [q["sql"] for q in queries if '"scheduler_membership"' in q["sql"]]
    assert [_tables(sql) for sql in memberships] == [["scheduler_membership"]]
    assert not any(_tables(q["sql"]) == ["auth_user"] for q in queries)  # no second user read


@pytest.mark.django_db
def test_revocation_deactivation_and_a_removed_membership_count_from_the_next_request(
    world: World, berlin_system
) -> None:
    application, secret = berlin_system
    berlin = world.people["BERLIN-001"].pk
    calendar = f"/api/v1/participants/{berlin}/calendar/"
    first, second = (token(application.client_id, secret)["access_token"] for _ in range(2))

    assert bearer(first).get(calendar).status_code == 200
    AccessToken.objects.filter(pk=_pk(first)).delete()
    assert bearer(first).get(calendar).status_code == 401  # revoked: refused at once
    assert bearer(second).get(calendar).status_code == 200

    Membership.objects.filter(user=application.user).delete()
    assert bearer(second).get(calendar).status_code == 404  # no membership: not there

    Membership.objects.create(
        user=application.user, trial=world.trial, site=world.berlin, role="site_system"
    )
    assert bearer(second).get(calendar).status_code == 200
    assert application.user is not None
    application.user.is_active = False
    application.user.save(update_fields=["is_active"])
    refused = bearer(second).get(calendar)
    assert (refused.status_code, refused.json()["detail"]) == (
        401,
        "this credential has no active user",
    )


def _pk(raw: str) -> int:
    import hashlib

    checksum = hashlib.sha256(raw.encode()).hexdigest()
    return int(AccessToken.objects.get(token_checksum=checksum).pk)


# ----------------------------------------------------------------------------------------
# The calendar


@pytest.mark.django_db
def test_the_calendar_reads_in_six_queries_and_writes_its_view_in_one_insert(
    world: World, berlin_system
) -> None:
    """Once the process has read the protocol version's definitions, procedures and rules
    (three queries, the first time any request needs them), a calendar is six statements."""
    application, secret = berlin_system
    client = bearer(token(application.client_id, secret)["access_token"])
    participant = world.people["BERLIN-001"]
    url = f"/api/v1/participants/{participant.pk}/calendar/"

    selectors._published_catalogs.clear()  # as a worker starts: enrolling the world read it
    with CaptureQueriesContext(connection) as cold:
        assert client.get(url).status_code == 200
    # Read now: every request clears the connection's log of statements.
    first = list(cold)
    with CaptureQueriesContext(connection) as warm:
        response = client.get(url)
    queries = list(warm)

    assert response.status_code == 200
    assert [_tables(q["sql"])[0] for q in queries] == [
        "oauth2_provider_accesstoken",  # with its application and machine user
        "scheduler_membership",
        "participants_participant",  # with trial, site and protocol version; no anchors
        "scheduler_securityevent",  # the record view: INSERT INTO
        "scheduler_scheduledvisit",
        "scheduler_scheduledprocedure",
        "scheduler_scheduledmilestone",
    ]
    assert sorted(
        {_tables(q["sql"])[0] for q in first} - {_tables(q["sql"])[0] for q in queries}
    ) == ["trials_milestonerule", "trials_proceduredefinition", "trials_visitdefinition"]
    assert len(first) == len(queries) + 3
    assert response.json() == client.get(url).json()
    assert queries[3]["sql"].startswith('INSERT INTO "scheduler_securityevent"')
    assert "RETURNING" not in queries[3]["sql"]
    assert list(
        SecurityEvent.objects.filter(kind="view").values_list(
            "at", "kind", "username", "ip_address", "participant_id", "surface", "detail"
        )
    ) == 3 * [
        (
            NOW,
            "view",
            "system:berlin-ehr",
            "127.0.0.1",
            participant.pk,
            "api",
            {"page": "calendar"},
        )
    ]
    labels = {v["protocol_version"] for v in response.json()["visits"]}
    assert labels == {participant.protocol_version.label}


@pytest.mark.django_db
def test_calendar_visits_of_an_earlier_version_show_that_version(world: World) -> None:
    participant = world.people["BERLIN-001"]
    current = participant.protocol_version
    earlier = ProtocolVersion.objects.create(
        trial=current.trial, label="0.9", status=ProtocolVersion.Status.DRAFT
    )
    kept = ScheduledVisit.objects.filter(participant=participant).order_by("target_date", "id")
    first = kept.first()
    assert first is not None
    ScheduledVisit.objects.filter(pk=first.pk).update(protocol_version=earlier)

    with CaptureQueriesContext(connection) as queries:
        response = world.client("coordinator").get(
            f"/api/v1/participants/{participant.pk}/calendar/"
        )

    visits = response.json()["visits"]
    assert [(v["id"], v["protocol_version"]) for v in visits] == [
        (visit.pk, "0.9" if visit.pk == first.pk else current.label) for visit in kept
    ]
    # One more query than with one version: the earlier version, once.
    versions = [q for q in queries if _tables(q["sql"])[:1] == ["trials_protocolversion"]]
    assert len(versions) == 1


# ----------------------------------------------------------------------------------------
# The throttle: DRF's sliding window, on Redis as one atomic script


def _backends() -> list[Any]:
    backends: list[Any] = [pytest.param("locmem", id="locmem")]
    redis = settings.CACHES["default"]
    backends.append(
        pytest.param(
            "redis",
            id="redis",
            marks=pytest.mark.skipif(
                not redis["BACKEND"].endswith("RedisCache"), reason="no Redis cache configured"
            ),
        )
    )
    return backends


def _cache(kind: str) -> Any:
    if kind == "locmem":
        return LocMemCache(f"throttle-test-{uuid.uuid4()}", {})  # its own memory
    location = settings.CACHES["default"]["LOCATION"]
    cache = RedisCache(location, {"KEY_PREFIX": "throttle-test"})
    cache.clear()
    return cache


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _throttle(cache: Any, clock: _Clock, rate: str) -> CredentialRateThrottle:
    class Throttle(CredentialRateThrottle):
        THROTTLE_RATES = {"credential": rate}  # noqa: RUF012

    Throttle.cache = cache
    throttle = Throttle()
    throttle.timer = clock  # type: ignore[method-assign]
    return throttle


def _request(application_id: int) -> Any:
    request: Any = APIRequestFactory().get("/api/v1/sites/")
    request.auth = type("Token", (), {"application_id": application_id})()
    request.user = None
    return request


@pytest.mark.parametrize("kind", _backends())
def test_the_throttle_window_slides_as_drfs_does(kind: str) -> None:
    cache, clock = _cache(kind), _Clock()
    throttle = _throttle(cache, clock, "3/minute")
    start = clock.now
    decisions = []
    for offset in (0, 10, 20, 30, 59.5, 60, 60.5, 70):
        clock.now = start + offset
        allowed = throttle.allow_request(_request(7), None)  # type: ignore[arg-type]
        decisions.append((offset, allowed, None if allowed else throttle.wait()))

    # At 30 s three requests are in the window; the first leaves it at 60 s exactly (DRF drops
    # a request at or before now - duration), the second at 70 s.
    assert decisions == [
        (0, True, None),
        (10, True, None),
        (20, True, None),
        (30, False, 30.0),
        (59.5, False, 0.5),
        (60, True, None),
        (60.5, False, 9.5),
        (70, True, None),
    ]
    # Another credential has a budget of its own.
    assert throttle.allow_request(_request(8), None) is True  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", _backends())
def test_requests_at_the_same_instant_each_count(kind: str) -> None:
    cache, clock = _cache(kind), _Clock()
    throttle = _throttle(cache, clock, "2/minute")

    assert [throttle.allow_request(_request(7), None) for _ in range(3)] == [True, True, False]  # type: ignore[arg-type]


@pytest.mark.skipif(
    not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"),
    reason="no Redis cache configured",
)
def test_on_redis_the_window_is_one_atomic_sorted_set() -> None:
    cache, clock = _cache("redis"), _Clock()
    allowed: list[bool] = []
    lock = threading.Lock()

    def spend() -> None:
        # A throttle object per request, as DRF makes; one budget for all of them.
        throttle = _throttle(cache, clock, "5/minute")
        for _ in range(5):
            decision = throttle.allow_request(_request(7), None)  # type: ignore[arg-type]
            with lock:
                allowed.append(decision)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (allowed.count(True), allowed.count(False)) == (5, 35)
    client = cache._cache.get_client()
    key = cache.make_and_validate_key("throttle_credential_app-7:window")
    assert (client.type(key), client.zcard(key), 0 < client.ttl(key) <= 60) == (
        b"zset",
        5,
        True,
    )


# ----------------------------------------------------------------------------------------
# Procedures of a page of visits: plain rows, the same output


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["en", "ja"])
def test_attached_procedures_render_byte_for_byte_as_prefetched_ones(
    world: World, language: str
) -> None:
    _vary(world)
    today = views._SiteToday()
    visits = ScheduledVisit.objects.order_by("target_date", "id")

    def render(rows: list[ScheduledVisit]) -> bytes:
        data = out.VisitOut(rows, many=True, context={"glance": today.glance}).data
        return JSONRenderer().render(data)

    with translation.override(language):
        prefetched = render(list(views._visits(visits)))
        with CaptureQueriesContext(connection) as queries:
            attached = visits_attach_procedures(list(views._visits(visits, procedures=False)))
        assert render(attached) == prefetched

    # The visits and their prefetches, then two: the procedure rows and their definitions.
    assert [_tables(q["sql"])[0] for q in queries][-2:] == [
        "scheduler_scheduledprocedure",
        "trials_proceduredefinition",
    ]
    late = [p for v in attached for p in v.procedures_in_order if p.status == "not_done"]
    assert late
    assert {p.not_done_reason for p in late} == {"Scanner down"}
    assert visits_attach_procedures([]) == []


@pytest.mark.django_db
def test_the_visit_list_reads_a_page_in_eight_queries(world: World, berlin_system) -> None:
    application, secret = berlin_system
    client = bearer(token(application.client_id, secret)["access_token"])

    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/visits/?page_size=200")

    rows = response.json()["results"]
    assert len(rows) == ScheduledVisit.objects.filter(participant__site=world.berlin).count()
    assert [_tables(q["sql"])[0] for q in queries] == [
        "oauth2_provider_accesstoken",
        "scheduler_membership",
        "scheduler_scheduledvisit",
        "participants_participant",
        "trials_visitdefinition",
        "trials_protocolversion",
        "scheduler_scheduledprocedure",
        "trials_proceduredefinition",
    ]
    expected = {
        visit.pk: [p.procedure.code for p in visit.procedures_in_order]
        for visit in ScheduledVisit.objects.filter(participant__site=world.berlin)
    }
    assert {row["id"]: [p["code"] for p in row["procedures"]] for row in rows} == expected
