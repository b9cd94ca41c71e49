"""Concurrent edits against a real Postgres: one wins, the others get a clear conflict."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import time_machine
from django.db import connection, connections

from scheduler.models import ScheduledVisit
from scheduler.services import VisitConflict, participant_enroll, visit_book
from tests.factories import participant_for

THREADS = 20


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_twenty_coordinators_rescheduling_one_visit_one_wins_the_rest_conflict(
    import_seed, django_user_model
) -> None:
    assert connection.vendor == "postgresql"
    coordinator = django_user_model.objects.create_user("coordinator")
    participant = participant_for(
        import_seed("000"), anchors={"day1": dt.date(2026, 2, 2)}, birth_date=dt.date(1980, 1, 1)
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    target = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V5")
    read_version = target.version
    start = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def reschedule(minute: int) -> None:
        try:
            start.wait()
            visit_book(
                visit=target,
                local_date=dt.date(2026, 4, 28),
                local_time=dt.time(9, minute),
                by=coordinator,
                reason=f"coordinator {minute}",
                expected_version=read_version,
            )
            outcome = "booked"
        except VisitConflict:
            outcome = "conflict"
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome = f"unexpected {exc!r}"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    with time_machine.travel(dt.datetime(2026, 4, 1, tzinfo=dt.UTC), tick=True):
        threads = [threading.Thread(target=reschedule, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert sorted(outcomes) == ["booked"] + ["conflict"] * (THREADS - 1)
    target.refresh_from_db()
    assert (target.status, target.version) == ("booked", read_version + 1)
    changes = list(target.history.filter(history_type="~"))
    assert len(changes) == 1
    assert changes[0].history_change_reason == target.reason
