"""A service that fails half-way writes nothing: each is one transaction, so a fault after its
first row (here: announcing the new visit) leaves the calendar as it was."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from scheduler import services
from scheduler.models import ScheduledProcedure, ScheduledVisit
from scheduler.services import participant_enroll, visit_add_unscheduled
from tests.factories import participant_for

pytestmark = pytest.mark.django_db


def test_an_unscheduled_visit_that_fails_to_announce_leaves_nothing(
    import_seed, monkeypatch
) -> None:
    with time_machine.travel(dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC), tick=False):
        participant = participant_for(import_seed("000"), anchors={"day1": dt.date(2026, 2, 2)})
        participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
        before = (ScheduledVisit.objects.count(), ScheduledProcedure.objects.count())

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the outbox is down")

        monkeypatch.setattr(services, "announce_visits", broken)
        with pytest.raises(RuntimeError, match="the outbox is down"):
            visit_add_unscheduled(
                participant=participant,
                local_date=dt.date(2026, 4, 10),
                local_time=dt.time(14, 0),
                reason="flare",
                procedure_codes=["EXAM", "LABS"],
                by=None,
            )

        after = (ScheduledVisit.objects.count(), ScheduledProcedure.objects.count())
    assert after == before
