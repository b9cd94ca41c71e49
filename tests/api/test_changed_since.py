"""`changed_since` on the visit and participant lists: what changed at or after an instant,
by the audit trail (a visit's own entries and its procedures'; a participant's and its
anchors'), within the caller's scope as every list is, for a site system's incremental sync."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine

from participants.models import Participant
from scheduler.models import ScheduledProcedure, ScheduledVisit
from scheduler.services import participant_anchor_change, visit_book
from tests.api.conftest import NOW, World

pytestmark = pytest.mark.django_db
VISITS = "/api/v1/visits/"
PARTICIPANTS = "/api/v1/participants/"
BOOKED_AT = NOW + dt.timedelta(hours=1)  # 09:00 UTC, 10:00 in Berlin, 18:00 in Tokyo
TOKYO_AT = NOW + dt.timedelta(hours=2)
PROCEDURE_AT = NOW + dt.timedelta(hours=3)
ANCHOR_AT = NOW + dt.timedelta(hours=4)
SECOND = dt.timedelta(seconds=1)


def at(moment: dt.datetime) -> Any:
    return time_machine.travel(moment, tick=False)


def ids(client: Any, url: str, since: str, **params: Any) -> list[int]:
    response = client.get(url, {"changed_since": since, "page_size": 200, **params})
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def z(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def changed(world: World) -> World:
    """BERLIN-001's V2 booked at BOOKED_AT, TOKYO-001's V2 at TOKYO_AT, a procedure of
    BERLIN-001's V3 changed at PROCEDURE_AT, BERLIN-001's Day 1 moved at ANCHOR_AT."""
    coordinator = world.users["coordinator"]
    with at(BOOKED_AT):
        visit_book(
            visit=world.visit("BERLIN-001", "V2"),
            local_date=dt.date(2026, 2, 2),
            local_time=dt.time(9, 30),
            by=coordinator,
        )
    with at(TOKYO_AT):
        visit_book(
            visit=world.visit("TOKYO-001", "V2"),
            local_date=dt.date(2026, 2, 2),
            local_time=dt.time(10),
            by=coordinator,
        )
    with at(PROCEDURE_AT):
        procedure = ScheduledProcedure.objects.filter(visit=world.visit("BERLIN-001", "V3"))[0]
        procedure._change_reason = "procedure edited"  # type: ignore[attr-defined]
        procedure.save()
    return world


def test_visits_changed_since_an_instant_are_those_changed_then_and_after(
    changed: World,
) -> None:
    client = changed.client("coordinator")  # Berlin's
    berlin = ScheduledVisit.objects.filter(participant=changed.people["BERLIN-001"])
    # What the booking moved (the visit itself, and any visit counted from it), by its own
    # counter, not by the audit trail the filter reads.
    booked = sorted(berlin.filter(version__gt=1).values_list("id", flat=True))
    v2, v3 = changed.visit("BERLIN-001", "V2").pk, changed.visit("BERLIN-001", "V3").pk

    assert v2 in booked and v3 not in booked
    assert ids(client, VISITS, z(BOOKED_AT)) == sorted({*booked, v3})
    # The same instant in Tokyo's offset, and in Berlin's.
    assert ids(client, VISITS, "2026-01-20T18:00:00+09:00") == sorted({*booked, v3})
    assert ids(client, VISITS, "2026-01-20T10:00:00.000+01:00") == sorted({*booked, v3})
    # A procedure's change counts for its visit.
    assert ids(client, VISITS, z(PROCEDURE_AT)) == [v3]
    assert ids(client, VISITS, z(PROCEDURE_AT + SECOND)) == []
    # Every visit of the caller's, from when they were planned.
    assert ids(client, VISITS, z(NOW)) == sorted(berlin.values_list("id", flat=True))


def test_another_sites_changes_stay_out_of_a_site_roles_list_and_in_a_monitors(
    changed: World,
) -> None:
    tokyo_v2 = changed.visit("TOKYO-001", "V2").pk

    berlin_sees = ids(changed.client("coordinator"), VISITS, z(TOKYO_AT))
    monitor_sees = ids(changed.client("sponsor_monitor"), VISITS, z(TOKYO_AT))
    with_other_filters = ids(
        changed.client("sponsor_monitor"), VISITS, z(BOOKED_AT), site="tokyo", status="booked"
    )

    assert tokyo_v2 not in berlin_sees
    assert tokyo_v2 in monitor_sees
    assert with_other_filters == [tokyo_v2]


def test_participants_changed_since_count_their_anchors(changed: World) -> None:
    berlin_001 = changed.people["BERLIN-001"]
    with at(ANCHOR_AT):
        participant_anchor_change(
            participant=berlin_001,
            code="day1",
            new_date=dt.date(2026, 2, 3),
            by=changed.users["coordinator"],
            reason="infusion postponed a day",
        )
    client = changed.client("coordinator")

    assert ids(client, PARTICIPANTS, z(ANCHOR_AT)) == [berlin_001.pk]
    assert ids(client, PARTICIPANTS, z(ANCHOR_AT + SECOND)) == []
    # Booking a visit changes the calendar, not the participant.
    assert ids(client, PARTICIPANTS, z(BOOKED_AT)) == [berlin_001.pk]
    assert ids(client, PARTICIPANTS, z(NOW)) == sorted(
        Participant.objects.filter(site=changed.berlin).values_list("id", flat=True)
    )


@pytest.mark.parametrize("url", [VISITS, PARTICIPANTS])
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("2026-01-20T09:00:00", "give the instant's zone (Z for UTC, or an offset such as -05:00)"),
        (
            # "+09:00" sent without encoding its "+": the query string reads it as a space.
            "2026-01-20T18:00:00+09:00",
            "'2026-01-20T18:00:00 09:00' is not an ISO 8601 instant; give one with its zone, "
            "e.g. 2026-02-03T13:00:00Z; a '+' in a URL reads as a space: send it as %2B",
        ),
        (
            "yesterday",
            "'yesterday' is not an ISO 8601 instant; give one with its zone, e.g. "
            "2026-02-03T13:00:00Z",
        ),
        (
            "2026-02-30T00:00:00Z",
            "'2026-02-30T00:00:00Z' is not an ISO 8601 instant; give one with its zone, e.g. "
            "2026-02-03T13:00:00Z",
        ),
        ("9999-01-01T00:00:00Z", "must be between 1900-01-01 and 2200-12-31"),
    ],
)
def test_a_changed_since_that_is_not_an_instant_with_its_zone_is_a_400(
    world: World, url: str, raw: str, message: str
) -> None:
    response = world.client("coordinator").get(f"{url}?changed_since={raw}")

    assert response.status_code == 400, response.content
    assert [(e["field"], e["message"]) for e in response.json()["errors"]] == [
        ("changed_since", message)
    ]
