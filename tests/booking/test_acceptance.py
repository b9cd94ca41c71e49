"""Issue 11's acceptance on the database: the NIAMS site with 1 PET/CT scanner open 08:00-16:00
on weekdays; 12 participants whose week-32 (FDG-PET/CT) windows overlap around Labor Day
(Monday 7 September 2026), each booked at the first slot the finder proposes, give 12
non-overlapping scanner holds inside the windows, none on a weekend or a US federal holiday."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import holidays
import pytest
import time_machine

from scheduler.access import site_now
from scheduler.booking import site_calendar, site_holds, visit_plan
from scheduler.engine.slots import find_slots
from scheduler.models import BookingHold, ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.factories import participant_for

D = dt.date
pytestmark = pytest.mark.django_db
NEW_YORK = ZoneInfo("America/New_York")


def test_twelve_fdg_pet_visits_share_one_scanner_inside_their_windows(
    import_seed, niams_site, django_user_model
) -> None:
    coordinator = django_user_model.objects.create_user("coordinator")
    version = import_seed("000")
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        for n in range(12):
            # Day 1 from Thursday 22 January: week 32 (day 1 + 224) targets 3 to 10 September.
            day1 = D(2026, 1, 22) + dt.timedelta(days=n * 8 // 12)
            participant = participant_for(version, anchors={"day1": day1}, site=niams_site)
            participant_enroll(participant=participant, on=D(2026, 1, 5))
    visits = list(
        ScheduledVisit.objects.filter(visit_definition__code="V10").order_by("target_date", "id")
    )
    windows = {v.pk: (v.window_start, v.window_end) for v in visits}
    assert (
        min(w[0] for w in windows.values()) <= D(2026, 9, 7) <= max(w[1] for w in windows.values())
    )

    with time_machine.travel(dt.datetime(2026, 8, 20, 15, tzinfo=dt.UTC), tick=False):
        for visit in visits:
            first = visit.window_start - dt.timedelta(days=14)
            last = visit.window_end + dt.timedelta(days=14)
            calendar = site_calendar(niams_site, first, last)
            plan = visit_plan(visit, calendar)
            assert plan is not None
            search = find_slots(
                plan,
                calendar,
                site_holds(niams_site, first, last),
                window_start=visit.window_start,
                window_end=visit.window_end,
                target=visit.target_date,
                not_before=site_now(niams_site),
            )
            slot = search.slots[0]
            visit_book(
                visit=visit, local_date=slot.day, local_time=slot.start.time(), by=coordinator
            )

    scanner = list(
        BookingHold.objects.filter(resource__name="PET/CT 1")
        .select_related("visit")
        .order_by("start")
    )
    assert len(scanner) == 12
    assert all(a.end <= b.start for a, b in zip(scanner, scanner[1:], strict=False))
    federal = holidays.country_holidays("US", years=2026)
    for hold in scanner:
        start, end = hold.start.astimezone(NEW_YORK), hold.end.astimezone(NEW_YORK)
        window_start, window_end = windows[hold.visit_id]
        assert window_start <= start.date() <= window_end
        assert start.weekday() < 5 and start.date() not in federal
        assert dt.time(8) <= start.time() and end.time() <= dt.time(16)
        assert end - start == dt.timedelta(minutes=110)
    # Labor Day falls inside windows and takes no booking; the days used, exactly:
    used = sorted({h.start.astimezone(NEW_YORK).date() for h in scanner})
    assert D(2026, 9, 7) not in used
    assert used == [D(2026, 9, 3), D(2026, 9, 4), D(2026, 9, 8), D(2026, 9, 9), D(2026, 9, 10)]
    per_day = [sum(h.start.astimezone(NEW_YORK).date() == day for h in scanner) for day in used]
    # Three a day at most: the 235-minute visit must also end by the clinic's 17:30, so the
    # scanner's 14:00 start (visit at 13:45, ending 17:40) is never used.
    assert per_day == [2, 3, 3, 3, 1]
