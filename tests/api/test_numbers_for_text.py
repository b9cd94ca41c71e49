"""A JSON number where the API takes text is refused, naming the field, and nothing is written.

DRF's CharField turns 1001 into "1001", 1e2 into "100.0" and 1e999 into "inf": a site system's
bug (a study id read from a spreadsheet as a number, say) would be stored as text nobody sent.
Every body the API takes goes through `scheduler.api.jsonbodies.refuse_numbers_for_text`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import time_machine
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler.models import ScheduledVisit, WebhookSubscription
from tests.api.conftest import World
from tests.factories import participant_for
from trials.models import ProtocolVersion

pytestmark = pytest.mark.django_db
MESSAGE = "Must be a string (in quotes), not a number."
REGISTER = {
    "trial": "niams-ani-vascular",
    "site": "berlin",
    "study_id": "BERLIN-777",
    "birth_date": "1985-03-01",
    "anchors": {"day1": "2026-02-16"},
}


def post(client: APIClient, url: str, raw: str, **headers: Any) -> Any:
    return client.generic("POST", url, raw, content_type="application/json", **headers)


def errors(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    return sorted((e["field"], e["message"]) for e in response.json()["errors"])


def written() -> tuple[int, ...]:
    return (
        Participant.objects.count(),
        Participant.history.count(),
        ScheduledVisit.objects.count(),
        ScheduledVisit.history.count(),
        WebhookSubscription.objects.count(),
    )


@pytest.mark.parametrize(
    ("field", "number"),
    [
        ("study_id", "1001"),
        ("study_id", "1e2"),
        ("study_id", "-0"),
        ("site", "7"),
        ("phone", "4930123456"),
        ("language", "1"),
        ("timezone", "9"),
    ],
)
def test_registering_with_a_number_for_text_is_refused(
    world: World, field: str, number: str
) -> None:
    before = written()
    body = json.dumps({**REGISTER, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', number)

    response = post(
        world.client("site_system"), "/api/v1/participants/", body, HTTP_IDEMPOTENCY_KEY="k"
    )

    assert errors(response) == [(field, MESSAGE)]
    assert written() == before


def test_every_number_for_text_is_named_at_once_inside_lists_and_maps(world: World) -> None:
    body = {**REGISTER, "study_id": 5, "guardian_name": 1.5, "reminder_channels": ["sms", 2]}

    response = post(
        world.client("site_system"),
        "/api/v1/participants/",
        json.dumps(body),
        HTTP_IDEMPOTENCY_KEY="k",
    )

    assert errors(response) == [
        ("guardian_name", MESSAGE),
        ("reminder_channels.1", MESSAGE),
        ("study_id", MESSAGE),
    ]


def test_the_same_body_with_text_is_registered(world: World) -> None:
    response = post(
        world.client("site_system"),
        "/api/v1/participants/",
        json.dumps({**REGISTER, "study_id": "1001", "phone": "4930123456"}),
        HTTP_IDEMPOTENCY_KEY="k",
    )

    assert response.status_code == 201, response.content
    assert Participant.objects.get(pk=response.json()["id"]).study_id == "1001"


def test_a_number_for_an_arm_in_a_cohort_names_the_item(world: World) -> None:
    version = ProtocolVersion.objects.get(trial=world.trial)
    screened = participant_for(
        version, anchors={"day1": dt.date(2026, 2, 16)}, site=world.berlin, study_id="BERLIN-778"
    )
    before = written()
    body = {
        "enrollments": [
            {"participant": screened.pk, "on": "2026-01-20"},
            {"participant": screened.pk, "on": "2026-01-20", "arm": 1},
        ]
    }

    with time_machine.travel(dt.datetime(2026, 1, 20, 12, tzinfo=dt.UTC), tick=False):
        response = post(
            world.client("coordinator"),
            "/api/v1/enrollments/",
            json.dumps(body),
            HTTP_IDEMPOTENCY_KEY="k",
        )

    assert errors(response) == [("enrollments.1.arm", MESSAGE)]
    assert written() == before


def test_a_number_for_a_reason_or_a_webhook_field_is_refused(world: World) -> None:
    visit = world.visit("BERLIN-001", "V2")
    before = written()

    cancel = post(
        world.client("site_system"),
        f"/api/v1/visits/{visit.pk}/cancel/",
        '{"reason": 42}',
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
    )
    subscribe = post(
        world.client("site_system"),
        "/api/v1/webhooks/",
        json.dumps(
            {
                "trial": 12,
                "sites": ["berlin", 3],
                "url": "https://rx.example/h",
                "events": ["visit.booked"],
            }
        ),
        HTTP_IDEMPOTENCY_KEY="k2",
    )

    assert errors(cancel) == [("reason", MESSAGE)]
    assert errors(subscribe) == [("sites.1", MESSAGE), ("trial", MESSAGE)]
    assert written() == before


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "0.1e310"])
def test_a_number_too_large_for_a_float_is_a_parse_error(world: World, number: str) -> None:
    visit = world.visit("BERLIN-001", "V2")
    before = written()

    response = post(
        world.client("site_system"),
        f"/api/v1/visits/{visit.pk}/cancel/",
        '{"reason": "x", "n": ' + number + "}",
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
    )

    assert response.status_code == 400, response.content
    assert response.json()["detail"] == f"JSON parse error - the number {number} is out of range"
    assert written() == before
