"""Adversarial review of the API's write endpoints, as a site system's integration meets them:
Idempotency-Key reuse (other body, other endpoint, other credential, after a 4xx, in flight),
If-Match variants, hostile bodies, method/path variants, rate budgets. Every refusal must be
problem+json (never a 500) and write nothing."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler.api import views
from scheduler.api.models import IdempotencyRecord
from scheduler.api.throttling import CredentialRateThrottle
from scheduler.models import ScheduledVisit
from tests.api.conftest import World

PROBLEM = "application/problem+json"


def _post(client: APIClient, url: str, body: Any, *, ct: str = "application/json", **headers: Any):
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.generic("POST", url, raw, content_type=ct, **headers)  # type: ignore[arg-type]


def _state() -> tuple[int, ...]:
    """What a refused write must leave as it was."""
    return (
        ScheduledVisit.objects.count(),
        ScheduledVisit.history.count(),
        sum(ScheduledVisit.objects.values_list("version", flat=True)),
        Participant.objects.count(),
        Participant.history.count(),
        IdempotencyRecord.objects.count(),
    )


def _assert_problem(response: Any, status: int, field: str | None = "__any__") -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    if field != "__any__":
        assert field in [e["field"] for e in body["errors"]], body
    return body


def _cancel(world: World) -> tuple[APIClient, str, str]:
    visit = world.visit("BERLIN-001", "V2")
    return (
        world.client("site_system"),
        f"/api/v1/visits/{visit.pk}/cancel/",
        f'"visit-{visit.pk}-v1"',
    )


# ----------------------------------------------------------------------------------------
# Idempotency-Key


@pytest.mark.django_db
def test_a_key_reused_on_another_endpoint_or_body_is_422_and_writes_nothing(world: World) -> None:
    client, url, etag = _cancel(world)
    first = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)
    assert first.status_code == 200, first.content
    v3 = world.visit("BERLIN-001", "V3")
    before = _state()

    other_body = _post(client, url, {"reason": "y"}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)
    other_endpoint = _post(
        client,
        f"/api/v1/visits/{v3.pk}/cancel/",
        {"reason": "x"},
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=f'"visit-{v3.pk}-v1"',
    )
    # Duplicate keys in the JSON: the parsed body differs from the first, so it is refused too.
    duplicate_keys = _post(
        client, url, '{"reason": "x", "reason": "y"}', HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag
    )

    for response in (other_body, other_endpoint, duplicate_keys):
        body = _assert_problem(response, 422, "Idempotency-Key")
        assert body["type"] == "/api/v1/problems/idempotency-key-reused"
        assert "Idempotent-Replayed" not in response
    assert _state() == before


@pytest.mark.django_db
def test_another_credentials_key_is_never_replayed(world: World) -> None:
    client, url, etag = _cancel(world)
    first = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)
    assert first.status_code == 200, first.content
    before = _state()

    # Same key, same body, another user: its own request (now stale), not the first's answer.
    other = _post(
        world.client("coordinator"),
        url,
        {"reason": "x"},
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=etag,
    )

    _assert_problem(other, 412, "If-Match")
    assert "Idempotent-Replayed" not in other
    assert _state() == before


@pytest.mark.django_db
def test_a_key_whose_first_request_was_refused_runs_afresh(world: World) -> None:
    client, url, etag = _cancel(world)
    before = _state()
    refused = _post(client, url, {"reason": ""}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)
    _assert_problem(refused, 400, "reason")
    assert _state() == before

    fixed = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)

    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed
    assert fixed["ETag"] == client.get(url.removesuffix("cancel/"))["ETag"] == f'"{etag[1:-4]}-v2"'


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "ключ", "a\tb"])
def test_bad_keys_are_400s_naming_the_header(world: World, key: str) -> None:
    client, url, etag = _cancel(world)
    before = _state()
    response = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY=key, HTTP_IF_MATCH=etag)
    _assert_problem(response, 400, "Idempotency-Key")
    assert _state() == before


@pytest.mark.django_db
def test_a_255_character_key_is_accepted_and_replayed(world: World) -> None:
    client, url, etag = _cancel(world)
    key = "k" * 255
    first = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY=key, HTTP_IF_MATCH=etag)
    again = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY=key, HTTP_IF_MATCH=etag)
    assert (first.status_code, again.status_code, again["Idempotent-Replayed"]) == (
        200,
        200,
        "true",
    )
    assert again.json() == first.json()


def _in_flight(world: World, monkeypatch, second_body: dict[str, Any]) -> tuple[Any, Any]:
    """Two threads send the same Idempotency-Key to book/; the second starts while the first
    is inside its transaction (held there one second)."""
    visit = world.visit("BERLIN-001", "V2")
    slot = {"local_date": "2026-02-02", "local_time": "09:30"}
    client = world.client("site_system")
    preview = _post(client, f"/api/v1/visits/{visit.pk}/book/preview/", slot).json()
    body = {**slot, "preview_digest": preview["preview_digest"]}
    inside = threading.Event()
    real = views.visit_book

    def slow_book(**kwargs: Any) -> Any:
        result = real(**kwargs)
        inside.set()
        time.sleep(1.0)
        return result

    monkeypatch.setattr(views, "visit_book", slow_book)
    answers: dict[str, Any] = {}

    def send(name: str, data: dict[str, Any]) -> None:
        try:
            answers[name] = _post(
                world.client("site_system"),
                f"/api/v1/visits/{visit.pk}/book/",
                data,
                HTTP_IDEMPOTENCY_KEY="same-key",
                HTTP_IF_MATCH=preview["visit_etag"],
            )
        finally:
            connection.close()

    first = threading.Thread(target=send, args=("first", body))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=send, args=("second", {**body, **second_body}))
    second.start()
    first.join(20)
    second.join(20)
    return answers["first"], answers["second"]


# Two write transactions at once: Postgres (SQLite takes one writer at a time).
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_concurrent_duplicate_waits_and_gets_the_first_answer(world: World, monkeypatch) -> None:
    first, second = _in_flight(world, monkeypatch, {})

    assert (first.status_code, second.status_code) == (200, 200), second.content
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json() and second["ETag"] == first["ETag"]
    visit = world.visit("BERLIN-001", "V2")
    assert (visit.status, visit.version) == ("booked", 2)
    assert visit.history.filter(history_change_reason="booked").count() == 1
    assert IdempotencyRecord.objects.count() == 1


# Two write transactions at once: Postgres (SQLite takes one writer at a time).
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_concurrent_same_key_other_body_is_422(world: World, monkeypatch) -> None:
    first, second = _in_flight(world, monkeypatch, {"reason": "another body"})

    assert first.status_code == 200
    _assert_problem(second, 422, "Idempotency-Key")
    assert world.visit("BERLIN-001", "V2").version == 2
    assert IdempotencyRecord.objects.count() == 1


# ----------------------------------------------------------------------------------------
# If-Match


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        (None, 428),
        ("", 428),
        ("*", 428),  # documented: a change names the copy it changes
        ('"visit-0-v1"', 412),
        ("visit-{pk}-v1", 412),  # unquoted (malformed): never matches
        ('"visit-{pk}-v0", "other"', 412),
        ('"visit-{pk}-v1x"', 412),
    ],
)
def test_if_match_missing_wildcard_stale_or_malformed_writes_nothing(
    world: World, if_match: str | None, status: int
) -> None:
    client, url, _ = _cancel(world)
    pk = world.visit("BERLIN-001", "V2").pk
    headers = {"HTTP_IDEMPOTENCY_KEY": "k"}
    if if_match is not None:
        headers["HTTP_IF_MATCH"] = if_match.replace("{pk}", str(pk))
    before = _state()

    response = _post(client, url, {"reason": "x"}, **headers)

    _assert_problem(response, status, "If-Match")
    assert _state() == before


@pytest.mark.django_db
def test_if_match_list_with_the_current_etag_and_the_etag_after_writes_match_a_get(
    world: World,
) -> None:
    client = world.client("site_system")
    participant = world.people["BERLIN-001"]
    purl = f"/api/v1/participants/{participant.pk}/"
    preview = _post(client, f"{purl}anchors/day1/preview/", {"date": "2026-02-09"}).json()
    anchor = _post(
        client,
        f"{purl}anchors/day1/",
        {"date": "2026-02-09", "reason": "moved", "preview_digest": preview["preview_digest"]},
        HTTP_IDEMPOTENCY_KEY="a",
        HTTP_IF_MATCH=f'"stale", {preview["participant_etag"]}',
    )
    assert anchor.status_code == 200, anchor.content
    assert anchor["ETag"] == client.get(purl)["ETag"] == anchor.json()["participant"]["etag"]
    assert anchor["ETag"] != preview["participant_etag"]

    # A visit moved by the anchor got a new ETag too: its old one is refused.
    v3 = world.visit("BERLIN-001", "V3")
    assert v3.version == 2
    stale = _post(
        client,
        f"/api/v1/visits/{v3.pk}/cancel/",
        {"reason": "x"},
        HTTP_IDEMPOTENCY_KEY="b",
        HTTP_IF_MATCH=f'"visit-{v3.pk}-v1"',
    )
    _assert_problem(stale, 412, "If-Match")

    added = _post(
        client,
        f"{purl}unscheduled-visits/",
        {"local_date": "2026-01-22", "reason": "flare"},
        HTTP_IDEMPOTENCY_KEY="c",
        HTTP_IF_MATCH=anchor["ETag"],
    )
    assert added.status_code == 201, added.content
    assert added["ETag"] == client.get(added["Location"])["ETag"]


# ----------------------------------------------------------------------------------------
# Bodies, content types, methods, paths


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "content_type", "status", "field"),
    [
        ("reason=x", "application/json", 400, None),
        ('{"reason": NaN}', "application/json", 400, None),
        ('{"reason": Infinity}', "application/json", 400, None),
        ('{"reason": ' + "9" * 5000 + "}", "application/json", 400, None),
        ('{"reason": "x"}', "text/plain", 415, None),
        ('{"reason": "x"}', "application/x-www-form-urlencoded", 415, None),
        ("", "application/json", 400, "reason"),
        ("[1, 2]", "application/json", 400, None),
        ('"reason"', "application/json", 400, None),
        ("null", "application/json", 400, None),
        ('{"reason": "a\\u0000b"}', "application/json", 400, "reason"),
        ('{"reason": "a\\ud800b"}', "application/json", 400, "reason"),
        ('{"reason": {"nested": 1}}', "application/json", 400, "reason"),
        ('{"reason": "' + "x" * 2001 + '"}', "application/json", 400, "reason"),
        (b'{"reason": "caf\xe9"}', "application/json", 400, None),  # latin-1 bytes, no charset
    ],
)
def test_hostile_bodies_are_problem_4xx_and_write_nothing(
    world: World, raw: Any, content_type: str, status: int, field: str | None
) -> None:
    client, url, etag = _cancel(world)
    before = _state()

    response = _post(
        client, url, raw, ct=content_type, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag
    )

    body = _assert_problem(response, status)
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    assert _state() == before


@pytest.mark.django_db
def test_a_declared_latin1_charset_is_decoded_as_declared(world: World) -> None:
    client, url, etag = _cancel(world)
    response = _post(
        client,
        url,
        '{"reason": "caf\u00e9"}'.encode("latin-1"),
        ct="application/json; charset=latin-1",
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=etag,
    )
    assert response.status_code == 200, response.content
    assert response.json()["visit"]["status"] == "cancelled"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"local_date": "2027-02-29", "local_time": "09:00"}, "local_date"),
        ({"local_date": "2026-02-02", "local_time": "25:00"}, "local_time"),
        ({"local_date": "2026-02-02T09:00+14:00", "local_time": "09:00"}, "local_date"),
        ({"local_date": "+2026-02-02", "local_time": "09:00"}, "local_date"),
        ({"local_date": "9999-12-31", "local_time": "09:00"}, "local_date"),
    ],
)
def test_bad_dates_and_times_name_their_field(world: World, body: dict, field: str) -> None:
    client = world.client("site_system")
    visit = world.visit("BERLIN-001", "V2")
    before = _state()
    response = _post(
        client,
        f"/api/v1/visits/{visit.pk}/book/",
        {**body, "preview_digest": "0" * 64},
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
    )
    _assert_problem(response, 400, field)
    assert _state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "slot", ["2026-02-02T09:00", "2026-02-02T09:00:30+01:00", "2026-02-02T09:00+25:00", 1770000000]
)
def test_bad_slot_instants_name_slot(world: World, slot: Any) -> None:
    client = world.client("site_system")
    visit = world.visit("BERLIN-001", "V2")
    before = _state()
    response = _post(
        client,
        f"/api/v1/visits/{visit.pk}/book-slot/",
        {"slot": slot},
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
    )
    _assert_problem(response, 400, "slot")
    assert _state() == before


@pytest.mark.django_db
def test_wrong_methods_are_405_with_allow_and_paths_without_slash_are_404(world: World) -> None:
    client, url, etag = _cancel(world)
    before = _state()
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = client.generic(method, url, "{}", content_type="application/json")
        _assert_problem(response, 405)
        assert response["Allow"] == "POST, OPTIONS"
    no_slash = _post(
        client, url.rstrip("/"), {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag
    )
    _assert_problem(no_slash, 404)
    assert _state() == before


@pytest.mark.django_db
def test_nested_json_of_moderate_depth_is_refused_cleanly(world: World) -> None:
    client, url, etag = _cancel(world)
    response = _post(
        client,
        url,
        '{"reason": ' + "[" * 500 + "]" * 500 + "}",
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=etag,
    )
    _assert_problem(response, 400, "reason")


@pytest.mark.django_db
def test_deeply_nested_json_is_a_400_not_a_500(world: World) -> None:
    client, url, etag = _cancel(world)
    before = _state()
    deep = '{"reason": ' + "[" * 5000 + "]" * 5000 + "}"  # 10 KB
    response = _post(client, url, deep, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)
    assert _state() == before
    _assert_problem(response, 400)


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_a_413_not_a_500(world: World, settings) -> None:
    client, url, etag = _cancel(world)
    before = _state()
    big = json.dumps({"reason": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = _post(client, url, big, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)
    assert _state() == before
    _assert_problem(response, 413)


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["register-timezone", "record-done-procedure"])
def test_a_lone_surrogate_echoed_in_an_error_is_not_a_500(world: World, where: str) -> None:
    client = world.client("site_system")
    client.raise_request_exception = False
    before = _state()
    if where == "register-timezone":
        raw = (
            f'{{"trial": "{world.trial.code}", "site": "berlin", "study_id": "B-9", '
            '"birth_date": "1980-01-01", "timezone": "\\ud800"}'
        )
        response = _post(client, "/api/v1/participants/", raw, HTTP_IDEMPOTENCY_KEY="k")
        field = "timezone"
    else:
        visit = world.visit("BERLIN-001", "V1")
        raw = (
            '{"actual_date": "2026-01-19", "procedures_not_done": {"\\ud800": ""}, '
            '"preview_digest": "x"}'
        )
        response = _post(
            client,
            f"/api/v1/visits/{visit.pk}/record-done/",
            raw,
            HTTP_IDEMPOTENCY_KEY="k",
            HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
        )
        field = "procedures_not_done"
    assert _state() == before
    body = _assert_problem(response, 400)
    assert any((e["field"] or "").startswith(field) for e in body["errors"]), body


# ----------------------------------------------------------------------------------------
# Rate budget


@pytest.mark.django_db
def test_a_spent_budget_answers_429_with_retry_after_and_writes_nothing(
    world: World, monkeypatch
) -> None:
    monkeypatch.setattr(CredentialRateThrottle, "THROTTLE_RATES", {"credential": "2/minute"})
    client, url, etag = _cancel(world)
    assert client.get(url.removesuffix("cancel/")).status_code == 200
    assert client.get(url.removesuffix("cancel/")).status_code == 200
    before = _state()

    response = _post(client, url, {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k", HTTP_IF_MATCH=etag)

    body = _assert_problem(response, 429)
    assert body["type"] == "/api/v1/problems/throttled"
    assert 0 < int(response["Retry-After"]) <= 61
    assert _state() == before
    assert world.visit("BERLIN-001", "V2").status != "cancelled"
