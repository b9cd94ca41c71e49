"""Telling participants' calendars about changes: invites go through the reminder outbox."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from participants.models import Participant
from scheduler.models import Reminder, ScheduledVisit

INVITE_EVENT = "invite"


def announce_visits(participant: Participant, visits: Iterable[ScheduledVisit]) -> None:
    """Queue each visit's current invite (REQUEST, or CANCEL once cancelled) in the outbox.

    Called inside the change's transaction: the rows commit with the change or not at all, and
    are handed to a worker right after commit (the sweep re-sends any message Redis loses).
    One row per visit and SEQUENCE; a row whose visit has a newer SEQUENCE by the time it is
    sent is superseded, so a burst of changes sends the newest state once.
    """
    from scheduler.invites import attendee_of
    from scheduler.tasks import send_reminder

    visits = list(visits)
    if not visits or attendee_of(participant, timezone.localdate()) is None:
        return
    now = timezone.now()
    rows = Reminder.objects.bulk_create(
        [
            Reminder(
                participant=participant,
                visit=visit,
                target_key=f"visit:{visit.pk}",
                rule_code=f"INVITE-{visit.ical_sequence}",
                event=INVITE_EVENT,
                channel="email",
                audience="participant",
                due_at=now,
                next_attempt_at=now,
                enqueued_at=now,
                ical_sequence=visit.ical_sequence,
            )
            for visit in visits
        ],
        ignore_conflicts=True,
    )
    created = [row.pk for row in rows if row.pk is not None]
    if not created:  # backends that do not return ids with ignore_conflicts
        created = list(
            Reminder.objects.filter(
                event=INVITE_EVENT, due_at=now, visit__in=[v.pk for v in visits]
            ).values_list("pk", flat=True)
        )
    transaction.on_commit(lambda: [send_reminder.delay(pk) for pk in created])
