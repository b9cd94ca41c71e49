"""Booking holds a visit's resources: created, moved, freed exactly, and a start that would
overbook the scanner is refused in plain words with the nearest feasible starts.

NIAMS V2 (week 0) on Tuesday 3 February 2026 (EST, UTC-5): LABS 0-15, FDGPET 15-125 on the
scanner, CAVI 125-145, INFUSION 145-235 in a chair, EXAM and SLEQ during the observation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine

from participants.models import Participant
from scheduler.access import site_today
from scheduler.models import BookingHold, ScheduledVisit
from scheduler.services import (
    CalendarError,
    participant_enroll,
    participant_withdraw,
    visit_book,
    visit_book_preview,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
)
from tests.conftest import seed_path
from tests.factories import participant_for
from trials.models import (
    ProtocolVersion,
    ResourceOutOfService,
    Site,
    SiteClosure,
    SiteResource,
    StaffShift,
)
from trials.services import protocol_import

D = dt.date
T = dt.time
DAY1 = D(2026, 2, 3)
pytestmark = pytest.mark.django_db


def utc(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def niams(import_seed) -> ProtocolVersion:
    return import_seed("000")


@pytest.fixture
def coordinator(django_user_model) -> Any:
    return django_user_model.objects.create_user("coordinator")


def enrolled(version: ProtocolVersion, site: Site, day1: dt.date = DAY1) -> Participant:
    participant = participant_for(version, anchors={"day1": day1}, site=site)
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


def visit(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.get(participant=participant, visit_definition__code=code)


def holds(of: ScheduledVisit) -> list[tuple[str, str, dt.datetime, dt.datetime, int]]:
    return [
        (h.resource.name if h.resource else h.staff_kind, h.procedure, h.start, h.end, h.count)
        for h in BookingHold.objects.filter(visit=of).select_related("resource").order_by("start")
    ]


def booked_at_0745(of: ScheduledVisit) -> list[tuple[str, str, dt.datetime, dt.datetime, int]]:
    # 07:45 EST is 12:45 UTC: the scanner from 08:00 (13:00 UTC) to 09:50, CAVI 09:50-10:10,
    # a chair 10:10-11:40.
    return [
        ("PET/CT 1", "FDGPET", utc(2, 3, 13), utc(2, 3, 14, 50), 1),
        ("CAVI 1", "CAVI", utc(2, 3, 14, 50), utc(2, 3, 15, 10), 1),
        ("Chair 1", "INFUSION", utc(2, 3, 15, 10), utc(2, 3, 16, 40), 1),
    ]


def test_booking_holds_scanner_cavi_and_chair_exactly(niams, niams_site, coordinator) -> None:
    v2 = visit(enrolled(niams, niams_site), "V2")
    visit_book(visit=v2, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    assert holds(v2) == booked_at_0745(v2)


def test_rescheduling_moves_the_holds(niams, niams_site, coordinator) -> None:
    v2 = visit(enrolled(niams, niams_site), "V2")
    visit_book(visit=v2, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    visit_book(
        visit=v2, local_date=DAY1, local_time=T(9), by=coordinator, reason="participant late"
    )
    assert holds(v2) == [
        ("PET/CT 1", "FDGPET", utc(2, 3, 14, 15), utc(2, 3, 16, 5), 1),
        ("CAVI 1", "CAVI", utc(2, 3, 16, 5), utc(2, 3, 16, 25), 1),
        ("Chair 1", "INFUSION", utc(2, 3, 16, 25), utc(2, 3, 17, 55), 1),
    ]
    assert BookingHold.objects.count() == 3


@pytest.mark.parametrize("close", ["cancel", "missed", "withdraw"])
def test_a_visit_that_will_not_happen_frees_its_holds(
    niams, niams_site, coordinator, close
) -> None:
    participant = enrolled(niams, niams_site)
    v2 = visit(participant, "V2")
    visit_book(visit=v2, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    if close == "cancel":
        visit_cancel(visit=v2, by=coordinator, reason="participant unwell")
    elif close == "missed":
        visit_mark_missed(visit=v2, by=coordinator, reason="did not come")
    else:
        participant_withdraw(  # today: a withdrawal is dated on or before the site's today
            participant=participant,
            on=site_today(participant.site),
            by=coordinator,
            reason="moved away",
        )
    assert BookingHold.objects.count() == 0


def test_a_done_visit_keeps_its_holds_as_history(niams, niams_site, coordinator) -> None:
    v2 = visit(enrolled(niams, niams_site), "V2")
    visit_book(visit=v2, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    with time_machine.travel(dt.datetime(2026, 2, 3, 22, tzinfo=dt.UTC), tick=False):
        visit_record_done(visit=v2, actual_date=DAY1, by=coordinator)
    assert holds(v2) == booked_at_0745(v2)


def test_a_start_that_overbooks_the_scanner_is_refused(niams, niams_site, coordinator) -> None:
    first = visit(enrolled(niams, niams_site), "V2")
    second = visit(enrolled(niams, niams_site), "V2")
    visit_book(visit=first, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    with pytest.raises(CalendarError) as refused:
        visit_book(visit=second, local_date=DAY1, local_time=T(8), by=coordinator)
    assert str(refused.value) == (
        "V2 cannot start at 08:00 on 2026-02-03: the PET/CT scanner is full from 08:15 to "
        "10:05 (needed for FDGPET); the CAVI device is full from 10:05 to 10:25 (needed for "
        "CAVI). Nearest feasible starts: Tue 2026-02-03 09:45 EST"
    )
    # The preview says the same before anything is confirmed; nothing was written.
    with pytest.raises(CalendarError, match="the PET/CT scanner is full from 08:15"):
        visit_book_preview(visit=second, local_date=DAY1, local_time=T(8))
    second.refresh_from_db()
    assert (second.status, holds(second)) == ("planned", [])
    visit_book(visit=second, local_date=DAY1, local_time=T(9, 35), by=coordinator)
    assert [h[:4] for h in holds(second)][0] == (
        "PET/CT 1",
        "FDGPET",
        utc(2, 3, 14, 50),
        utc(2, 3, 16, 40),
    )


def test_a_start_outside_the_scanner_hours_is_refused(niams, niams_site, coordinator) -> None:
    v2 = visit(enrolled(niams, niams_site), "V2")
    with pytest.raises(CalendarError) as refused:
        visit_book(visit=v2, local_date=DAY1, local_time=T(14), by=coordinator)
    assert str(refused.value) == (
        "V2 cannot start at 14:00 on 2026-02-03: the visit would run 14:00-17:55, outside the "
        "site's opening hours (07:30-17:30) or its resources' hours (PET/CT scanner "
        "08:00-16:00) or out of service. Nearest feasible starts: Tue 2026-02-03 07:45 EST"
    )


def test_a_closed_day_is_refused_with_its_reason_and_deviations(
    niams, niams_site, coordinator
) -> None:
    SiteClosure.objects.create(site=niams_site, date=DAY1, reason="building move")
    v2 = visit(enrolled(niams, niams_site), "V2")
    with pytest.raises(CalendarError) as refused:
        visit_book(visit=v2, local_date=DAY1, local_time=T(8), by=coordinator)
    assert str(refused.value) == (
        "V2 cannot start at 08:00 on 2026-02-03: closed on 3 Feb (building move). Nothing fits "
        "inside the window (window 2026-02-03: closed on 3 Feb (building move)); nearest "
        "starts outside it: Mon 2026-02-02 07:45 EST (1 day before the window), "
        "Wed 2026-02-04 07:45 EST (1 day after the window), "
        "Thu 2026-02-05 07:45 EST (2 days after the window)"
    )


def test_out_of_service_scanner_blocks_the_day(niams, niams_site, coordinator) -> None:
    scanner = niams_site.resources.get(name="PET/CT 1")
    ResourceOutOfService.objects.create(
        resource=scanner, start=utc(2, 3, 0), end=utc(2, 4, 0), reason="detector service"
    )
    v2 = visit(enrolled(niams, niams_site), "V2")
    with pytest.raises(CalendarError, match=r"out of service: detector service"):
        visit_book(visit=v2, local_date=DAY1, local_time=T(7, 45), by=coordinator)


def test_visits_without_a_plan_and_sites_without_resources_book_as_before(
    niams, niams_site, coordinator
) -> None:
    v3 = visit(enrolled(niams, niams_site), "V3")  # EXAM, LABS, INFUSION: no plan
    visit_book(visit=v3, local_date=D(2026, 3, 3), local_time=T(19), by=coordinator)
    elsewhere = visit(
        enrolled(
            niams,
            niams_site.__class__.objects.create(
                code="no-calendar", name="No calendar", timezone="America/New_York", country="US"
            ),
        ),
        "V2",
    )
    visit_book(visit=elsewhere, local_date=DAY1, local_time=T(20), by=coordinator)
    assert BookingHold.objects.count() == 0


def test_staff_are_held_and_counted(import_seed, niams_site, coordinator) -> None:
    text = seed_path("000").read_text(encoding="utf-8")
    text = text.replace(
        "    resource: Infusion chair\n",
        "    resource: Infusion chair\n    staff: {kind: infusion nurse}\n",
        1,
    )
    version = protocol_import(text=text, source="niams-with-nurses.yaml")
    SiteResource.objects.create(site=niams_site, kind="PET/CT scanner", name="PET/CT 2")
    SiteResource.objects.create(site=niams_site, kind="CAVI device", name="CAVI 2")
    StaffShift.objects.create(
        site=niams_site, kind="infusion nurse", weekday=1, start=T(7, 30), end=T(17, 30), count=1
    )
    first = visit(enrolled(version, niams_site), "V2")
    second = visit(enrolled(version, niams_site), "V2")
    visit_book(visit=first, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    assert holds(first) == [
        *booked_at_0745(first)[:2],
        ("Chair 1", "INFUSION", utc(2, 3, 15, 10), utc(2, 3, 16, 40), 1),
        ("infusion nurse", "INFUSION", utc(2, 3, 15, 10), utc(2, 3, 16, 40), 1),
    ]
    with pytest.raises(CalendarError) as refused:
        visit_book(visit=second, local_date=DAY1, local_time=T(7, 45), by=coordinator)
    assert str(refused.value) == (
        "V2 cannot start at 07:45 on 2026-02-03: no infusion nurse is free from 10:10 to 11:40 "
        "(needed for INFUSION). Nearest feasible starts: Tue 2026-02-03 09:15 EST"
    )
