"""Bookings are made to the minute: a time with seconds is refused by the service and by the
forms, saying which minute was meant, and nothing is written."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from scheduler.forms import VisitBookForm
from scheduler.models import BookingHold
from scheduler.services import CalendarError, visit_book
from tests.booking.test_holds import DAY1, enrolled, visit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


@pytest.mark.parametrize("at", [dt.time(7, 45, 30), dt.time(7, 45, 0, 1)])
def test_the_service_refuses_a_start_with_seconds(import_seed, niams_site, admin_user, at):
    v2 = visit(enrolled(import_seed("000"), niams_site), "V2")
    with pytest.raises(CalendarError) as refused:
        visit_book(visit=v2, local_date=DAY1, local_time=at, by=admin_user)
    assert str(refused.value) == (
        f"{at.isoformat()} has seconds: bookings are made to the minute (07:45)"
    )
    v2.refresh_from_db()
    assert (v2.status, BookingHold.objects.count()) == ("planned", 0)


def test_the_booking_form_refuses_seconds_and_takes_whole_minutes() -> None:
    with_seconds = VisitBookForm(data={"local_date": "2026-02-03", "local_time": "07:45:30"})
    whole = VisitBookForm(data={"local_date": "2026-02-03", "local_time": "07:45"})
    assert not with_seconds.is_valid()
    assert with_seconds.errors["local_time"] == [
        "Times are to the minute: 07:45:30 has seconds (enter 07:45)."
    ]
    assert "local_time" not in whole.errors
