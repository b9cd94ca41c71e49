"""Webhooks are blind-safe: a crawl of every payload a blinded trial's calendar events produce
finds no arm, no contact detail and no free text, and two participants on different arms get
payloads that differ only in who they are."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import time_machine

from participants.models import TreatmentAssignment
from scheduler.models import WebhookDelivery
from scheduler.services import (
    participant_enroll,
    participant_withdraw,
    visit_book,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
)
from tests.factories import participant_for
from tests.webhooks.conftest import UTC, Receiver, World, subscribe

pytestmark = pytest.mark.django_db

PARTICIPANT_KEYS = {"id", "study_id", "status", "enrolled_at", "enrolled_on", "ended_on"}
VISIT_KEYS = {
    "id",
    "code",
    "status",
    "target_date",
    "window_start",
    "window_end",
    "booked_start",
    "booked_date",
    "actual_date",
    "version",
}
REASONS = [
    "patient asked for a later day",
    "flu, could not travel",
    "PET scanner under maintenance",
    "moved abroad for work",
]


def at(year: int, month: int, day: int, hour: int = 9):
    return time_machine.travel(dt.datetime(year, month, day, hour, tzinfo=UTC), tick=False)


def live_the_calendar(world: World, study_id: str, arm: str, capture) -> None:
    participant = world.people[study_id]
    by = world.system
    with at(2026, 1, 12), capture(execute=True):
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 12),
            arm=participant.protocol_version.arm_set.get(code=arm),
        )
    with at(2026, 2, 2, 12), capture(execute=True):
        visit_record_done(visit=world.visit(study_id, "V2"), actual_date=dt.date(2026, 2, 2), by=by)
    with at(2026, 3, 16), capture(execute=True):
        visit_book(
            visit=world.visit(study_id, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),
            by=by,
        )
    with at(2026, 3, 17), capture(execute=True):
        visit_book(
            visit=world.visit(study_id, "V4"),
            local_date=dt.date(2026, 3, 31),
            local_time=dt.time(14, 0),
            by=by,
            reason=REASONS[0],
        )
    with at(2026, 4, 2), capture(execute=True):
        visit_mark_missed(visit=world.visit(study_id, "V5"), by=by, reason=REASONS[1])
        visit_cancel(visit=world.visit(study_id, "V6"), by=by, reason=REASONS[2])
    with at(2026, 4, 10), capture(execute=True):
        participant_withdraw(
            participant=participant, on=dt.date(2026, 4, 10), by=by, reason=REASONS[3]
        )


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


def test_webhook_payloads_of_a_blinded_trial_carry_no_arm(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    assert world.trial.is_blinded
    subscribe(world, receiver)
    with at(2026, 1, 10):
        world.people["BERLIN-002"] = participant_for(
            world.people["BERLIN-001"].protocol_version,
            anchors={"day1": dt.date(2026, 2, 2)},
            site=world.berlin,
            study_id="BERLIN-002",
            email="berlin-002@example.org",
            phone="+49 30 7654321",
        )
    live_the_calendar(world, "BERLIN-001", "ANI", django_capture_on_commit_callbacks)
    live_the_calendar(world, "BERLIN-002", "PBO", django_capture_on_commit_callbacks)

    bodies = [d.body for d in WebhookDelivery.objects.order_by("id")]
    payloads = [json.loads(body) for body in bodies]
    # What the receiver took is exactly what was planned, nothing more.
    assert sorted(map(json.dumps, receiver.payloads())) == sorted(map(json.dumps, payloads))
    assert {p["type"] for p in payloads} == {
        "participant.enrolled",
        "visit.done",
        "visit.booked",
        "visit.moved",
        "visit.missed",
        "visit.cancelled",
        "participant.withdrawn",
    }
    forbidden_text = [
        *(arm.name.lower() for arm in world.people["BERLIN-001"].protocol_version.arm_set.all()),
        *(reason.lower() for reason in REASONS),
        "example.org",
        "+49",
        "1980-06-15",  # birth dates
        "lupus",
        "sle",
    ]
    arm_codes = set(TreatmentAssignment.objects.values_list("arm__code", flat=True))
    assert arm_codes == {"ANI", "PBO"}
    for payload in payloads:
        assert set(payload) == {"type", "timestamp", "data"}
        data = payload["data"]
        assert set(data) == (
            {"trial", "site", "participant", "visit"}
            if payload["type"].startswith("visit.")
            else {"trial", "site", "participant"}
        )
        assert set(data["participant"]) == PARTICIPANT_KEYS
        assert set(data.get("visit", VISIT_KEYS)) == VISIT_KEYS
        values = strings_in(payload)
        assert [v for v in values if v in arm_codes] == []
        assert [t for t in forbidden_text for v in values if t in v.lower()] == []
        assert payload["timestamp"].endswith("Z")
        booked = data.get("visit", {}).get("booked_start")
        assert booked is None or booked.endswith("Z")

    # The two arms' event streams differ only in who the participant is.
    def anonymous(study_id: str) -> list[str]:
        participant = world.people[study_id]
        stream = [p for p in payloads if p["data"]["participant"]["id"] == participant.pk]
        for p in stream:
            p["data"]["participant"].update(id=0, study_id="")
            if "visit" in p["data"]:
                p["data"]["visit"]["id"] = 0
        return [json.dumps(p, sort_keys=True) for p in stream]

    assert anonymous("BERLIN-001") == anonymous("BERLIN-002")
    print(f"\nblinded crawl: {len(payloads)} webhook payloads, 0 arms, 0 contact details")
