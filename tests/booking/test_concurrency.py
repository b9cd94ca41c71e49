"""50 coordinators book the last free scanner slot for 50 different visits at once, against a
real Postgres: the site's resource rows are locked in a fixed order, so exactly one booking
wins and 49 are refused in plain words, and one hold row exists."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import time_machine
from django.db import connection, connections

from scheduler.models import BookingHold, ScheduledVisit
from scheduler.services import CalendarError, participant_enroll, visit_book
from tests.booking.conftest import niams_calendar
from tests.factories import SiteFactory, participant_for
from trials.models import ResourceOutOfService, SiteResource

THREADS = 50
DAY1 = dt.date(2026, 2, 3)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_fifty_bookings_of_the_last_scanner_slot_one_wins(import_seed, django_user_model) -> None:
    assert connection.vendor == "postgresql"
    coordinator = django_user_model.objects.create_user("coordinator")
    site = niams_calendar(SiteFactory.create(code="nih-cc"))
    # The scanner is out of service from 09:50 (14:50 UTC): the only start left on 3 February
    # is 07:45 (FDG-PET/CT 08:00-09:50).
    ResourceOutOfService.objects.create(
        resource=SiteResource.objects.get(site=site, name="PET/CT 1"),
        start=dt.datetime(2026, 2, 3, 14, 50, tzinfo=dt.UTC),
        end=dt.datetime(2026, 2, 4, 0, tzinfo=dt.UTC),
        reason="detector calibration",
    )
    version = import_seed("000")
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        for _ in range(THREADS):
            participant = participant_for(version, anchors={"day1": DAY1}, site=site)
            participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    visits = list(ScheduledVisit.objects.filter(visit_definition__code="V2").order_by("id"))
    assert len(visits) == THREADS
    start = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def book(visit: ScheduledVisit) -> None:
        try:
            start.wait()
            visit_book(visit=visit, local_date=DAY1, local_time=dt.time(7, 45), by=coordinator)
            outcome = "booked"
        except CalendarError as exc:
            outcome = (
                "full"
                if "the PET/CT scanner is full from 08:00 to 09:50" in str(exc)
                else (f"unexpected {exc}")
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome = f"unexpected {exc!r}"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    with time_machine.travel(dt.datetime(2026, 1, 20, 15, tzinfo=dt.UTC), tick=True):
        threads = [threading.Thread(target=book, args=(visit,)) for visit in visits]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert sorted(outcomes) == ["booked"] + ["full"] * (THREADS - 1)
    scanner = list(BookingHold.objects.filter(resource__name="PET/CT 1"))
    assert [(h.start, h.end) for h in scanner] == [
        (
            dt.datetime(2026, 2, 3, 13, tzinfo=dt.UTC),
            dt.datetime(2026, 2, 3, 14, 50, tzinfo=dt.UTC),
        )
    ]
    assert ScheduledVisit.objects.filter(visit_definition__code="V2", status="booked").count() == 1
