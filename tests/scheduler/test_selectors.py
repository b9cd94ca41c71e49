from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.selectors import participants_with_visit_status, sites_with_visit_status
from scheduler.services import (
    participant_enroll,
    visit_book,
    visit_mark_missed,
    visit_record_done,
)
from tests.factories import SiteFactory, participant_for
from trials.models import Site

D = dt.date
TODAY = D(2026, 3, 31)
pytestmark = pytest.mark.django_db

COUNTS = ("due", "booked", "done", "missed", "out_of_window", "overdue")


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 3, 31, 12, tzinfo=dt.UTC), tick=False):
        yield


def counts(row) -> dict[str, int]:
    return {key: getattr(row, f"visits_{key}") for key in COUNTS}


def enrolled(version, site, study_id: str) -> Participant:
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 2)}, site=site, study_id=study_id
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


def at(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )


def test_status_counts_per_participant_and_per_site(import_seed, django_user_model) -> None:
    by = django_user_model.objects.create_user("coordinator")
    version = import_seed("000")
    site = SiteFactory.create(code="nih")
    busy, quiet = enrolled(version, site, "P-001"), enrolled(version, site, "P-002")
    # NIAMS from Day 1 = 2026-02-02; today 2026-03-31: V4's window (03-27..04-02) is open.
    visit_record_done(visit=at(busy, "V1"), actual_date=D(2026, 1, 12), by=by)
    visit_record_done(visit=at(busy, "V2"), actual_date=D(2026, 2, 2), by=by)
    visit_record_done(visit=at(busy, "V3"), actual_date=D(2026, 3, 8), by=by, reason="flu")
    visit_mark_missed(visit=at(busy, "V3C"), by=by, reason="no answer")
    visit_book(visit=at(busy, "V5"), local_date=D(2026, 4, 27), local_time=dt.time(9), by=by)

    rows = {
        p.study_id: counts(p)
        for p in participants_with_visit_status(queryset=Participant.objects.all(), today=TODAY)
    }

    assert rows == {
        # V4 due; V5 booked; V1, V2, V3 done (V3 3 days late); V3C missed.
        "P-001": {"due": 1, "booked": 1, "done": 3, "missed": 1, "out_of_window": 1, "overdue": 0},
        # Nothing recorded: V1, V2, V3, V3C overdue, V4 due.
        "P-002": {"due": 1, "booked": 0, "done": 0, "missed": 0, "out_of_window": 0, "overdue": 4},
    }
    assert [
        counts(s) for s in sites_with_visit_status(queryset=Site.objects.all(), today=TODAY)
    ] == [{"due": 2, "booked": 1, "done": 3, "missed": 1, "out_of_window": 1, "overdue": 4}]
    quiet.refresh_from_db()
    assert quiet.status == "enrolled"


def test_status_counts_take_one_query_whatever_the_number_of_participants(
    import_seed, django_assert_num_queries
) -> None:
    version = import_seed("000")
    site = SiteFactory.create(code="nih")
    enrolled(version, site, "P-001")
    with django_assert_num_queries(1):
        assert (
            len(
                list(
                    participants_with_visit_status(queryset=Participant.objects.all(), today=TODAY)
                )
            )
            == 1
        )
    for number in range(2, 6):
        enrolled(version, site, f"P-{number:03d}")
    with django_assert_num_queries(1):
        assert (
            len(
                list(
                    participants_with_visit_status(queryset=Participant.objects.all(), today=TODAY)
                )
            )
            == 5
        )
