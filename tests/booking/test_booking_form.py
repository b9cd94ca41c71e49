"""The booking form shows the site's calendar across the visit's window: each day open or
closed (and why), what is booked on its resources, and the first feasible starts, each a link
that fills the form in."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.urls import reverse

from scheduler.services import visit_book
from tests.booking.test_holds import DAY1, enrolled, visit
from tests.conftest import sign_in
from tests.factories import member

T = dt.time
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


def test_the_booking_form_shows_the_sites_days_bookings_and_first_free_starts(
    client, django_user_model, import_seed, niams_site
) -> None:
    niams = import_seed("000")
    first = visit(enrolled(niams, niams_site), "V2")
    visit_book(visit=first, local_date=DAY1, local_time=T(7, 45), by=None)
    second = visit(enrolled(niams, niams_site), "V2")
    coordinator = django_user_model.objects.create_user("c", is_staff=True)
    member(coordinator, trial=niams.trial, site=niams_site)
    sign_in(client, coordinator)
    url = reverse("admin:scheduler_scheduledvisit_book", args=[second.pk])

    page = client.get(url)
    calendar = page.context["site_calendar"]
    suggestions = page.context["site_suggestions"]
    picked = client.get(f"{url}?{suggestions[0][1]}")

    target = next(day for day in calendar.days if day.is_target)
    assert (target.day, target.hours, target.closed) == (DAY1, "07:30–17:30", "")
    assert target.booked == (
        "08:00–09:50 PET/CT 1",
        "09:50–10:10 CAVI 1",
        "10:10–11:40 Chair 1",
    )
    # V2's window is its one day; one start a day is offered.
    assert [day.day for day in calendar.days] == [DAY1]
    # The scanner is taken 08:00-09:50 and the scan starts 15 minutes into the visit (labs
    # first): the first start on the 15-minute grid from 07:30 whose scan begins after 09:50.
    assert [label for label, _ in suggestions] == ["Tue 3 Feb 2026 09:45 EST"]
    form = picked.context["form"]
    assert (str(form["local_date"].value()), str(form["local_time"].value())) == (
        "2026-02-03",
        "09:45",
    )
