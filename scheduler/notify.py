"""Telling participants' calendars about changes: enqueue invites after the change commits."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from scheduler.models import ScheduledVisit


def announce_visits(visits: Iterable[ScheduledVisit]) -> None:
    """After commit, send each visit's current invite (REQUEST, or CANCEL once cancelled).

    The task is told the SEQUENCE this change produced and sends only if the visit still has
    it, so a burst of changes to one visit sends its newest state, not every intermediate one.
    """
    from scheduler.tasks import send_visit_invite

    def enqueue(visit_id: int, sequence: int) -> None:
        transaction.on_commit(lambda: send_visit_invite.delay(visit_id, sequence))

    for visit in visits:
        enqueue(visit.pk, visit.ical_sequence)
