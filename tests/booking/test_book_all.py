"""Booking all of a participant's remaining visits: each at the first slot inside its window,
visits counted from an earlier one searched in their moved window, and the visits that cannot
be placed returned with the finder's reason."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine

from scheduler.models import BookingHold, ScheduledVisit
from scheduler.services import participant_enroll, visit_book_all_remaining
from tests.factories import participant_for
from trials.models import ResourceOutOfService, SiteResource

D = dt.date
NEW_YORK = ZoneInfo("America/New_York")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


def booked(participant) -> list[tuple[str, str]]:
    return [
        (v.code, f"{v.booked_start.astimezone(NEW_YORK):%a %Y-%m-%d %H:%M}")  # type: ignore[union-attr]
        for v in ScheduledVisit.objects.filter(participant=participant, status="booked")
        .select_related("visit_definition")
        .order_by("booked_start")
    ]


def test_every_niams_visit_is_booked_in_its_window(import_seed, niams_site, admin_user) -> None:
    participant = participant_for(
        import_seed("000"), anchors={"day1": D(2026, 2, 3)}, site=niams_site
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    result = visit_book_all_remaining(participant=participant, by=admin_user)
    assert result.unplaced == ()
    assert booked(participant) == [
        ("V1", "Tue 2026-01-13 07:30"),
        ("V2", "Tue 2026-02-03 07:45"),  # the scanner opens at 08:00, 15 minutes of labs first
        ("V3", "Tue 2026-03-03 07:30"),
        ("V3C", "Tue 2026-03-10 07:30"),  # 7 days after V3 as booked
        ("V4", "Tue 2026-03-31 07:30"),
        ("V5", "Tue 2026-04-28 07:30"),
        ("V6", "Tue 2026-05-26 07:30"),
        ("V7", "Tue 2026-06-23 07:30"),
        ("V8", "Tue 2026-07-21 07:30"),
        ("V9", "Tue 2026-08-18 07:30"),
        ("V10", "Tue 2026-09-15 07:45"),
        ("V11", "Tue 2026-10-13 07:30"),  # 28 days after V10 as booked
    ]
    assert BookingHold.objects.filter(resource__name="PET/CT 1").count() == 2


def test_a_visit_that_cannot_be_placed_is_returned_with_the_reason(
    import_seed, niams_site, admin_user
) -> None:
    participant = participant_for(
        import_seed("000"), anchors={"day1": D(2026, 2, 3)}, site=niams_site
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    ResourceOutOfService.objects.create(
        resource=SiteResource.objects.get(name="PET/CT 1"),
        start=dt.datetime(2026, 9, 1, tzinfo=dt.UTC),
        end=dt.datetime(2026, 9, 30, tzinfo=dt.UTC),
        reason="detector replacement",
    )
    result = visit_book_all_remaining(participant=participant, by=admin_user)
    assert [(u.visit.code, u.reason) for u in result.unplaced] == [
        (
            "V10",
            "window 2026-09-12 to 2026-09-18: closed on 12 and 13 Sep (weekend); PET/CT "
            "scanner unavailable at the needed times on 14, 15, 16, 17 and 18 Sep (out of "
            "service: detector replacement)",
        )
    ]
    assert [code for code, _ in booked(participant)][-2:] == ["V9", "V11"]
