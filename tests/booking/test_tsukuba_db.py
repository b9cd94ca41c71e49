"""Tsukuba acceptance on the database: a visit whose target date is a Japanese public holiday
is proposed, and booked by "book all remaining visits", on the nearest open day inside its
window. The holidays come from the `holidays` package for Japan (Site.country), not from
rows: the site keeps only its weekday hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine

from scheduler.booking import visit_slots
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll, visit_book_all_remaining
from tests.factories import SiteFactory, participant_for
from trials.models import SiteHours

D = dt.date
TOKYO = ZoneInfo("Asia/Tokyo")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    # Monday 30 March 2026, 09:00 in Tsukuba.
    with time_machine.travel(dt.datetime(2026, 3, 30, 0, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def tsukuba(import_seed):
    version = import_seed("001")
    site = SiteFactory.create(
        code="tsukuba", name="University of Tsukuba Hospital", timezone="Asia/Tokyo", country="JP"
    )
    SiteHours.objects.bulk_create(
        SiteHours(site=site, weekday=d, start=dt.time(8, 30), end=dt.time(17, 15)) for d in range(5)
    )
    # Day 1 on Tuesday 7 April: the second infusion's target is Tuesday 5 May, Children's
    # Day, in Golden Week: its window (2 to 8 May) has a weekend (2, 3 May), Greenery Day
    # (4 May), Children's Day (5 May) and the substitute holiday for Constitution Day (6 May).
    participant = participant_for(
        version, anchors={"psl_start": D(2026, 3, 31), "day1": D(2026, 4, 7)}, site=site
    )
    participant_enroll(participant=participant, on=D(2026, 3, 30))
    return participant


def second_infusion(participant) -> ScheduledVisit:
    return ScheduledVisit.objects.get(
        participant=participant, visit_definition__code="INF", occurrence=2
    )


def test_a_visit_targeted_on_a_japanese_holiday_is_proposed_on_the_nearest_open_day(
    tsukuba,
) -> None:
    visit = second_infusion(tsukuba)
    assert (visit.target_date, visit.window_start, visit.window_end) == (
        D(2026, 5, 5),
        D(2026, 5, 2),
        D(2026, 5, 8),
    )

    found = visit_slots(visit, now=dt.datetime.now(dt.UTC), count=2, per_day=1)

    assert [f"{s.start_utc.astimezone(TOKYO):%a %Y-%m-%d %H:%M}" for s in found.slots] == [
        "Thu 2026-05-07 08:30",
        "Fri 2026-05-08 08:30",
    ]
    assert [s.days_out for s in found.slots] == [0, 0]


def test_book_all_remaining_books_it_on_the_nearest_open_day_inside_its_window(
    tsukuba, admin_user
) -> None:
    result = visit_book_all_remaining(participant=tsukuba, by=admin_user)

    assert result.unplaced == ()
    booked = {
        v.occurrence: f"{v.booked_start.astimezone(TOKYO):%a %Y-%m-%d %H:%M}"  # type: ignore[union-attr]
        for v in ScheduledVisit.objects.filter(
            participant=tsukuba, visit_definition__code="INF", status="booked"
        )
    }
    assert booked[1] == "Tue 2026-04-07 08:30"
    assert booked[2] == "Thu 2026-05-07 08:30"
    assert second_infusion(tsukuba).deviation_days == 0
