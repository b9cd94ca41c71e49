"""Planning outbox rows inside a calendar change's transaction.

- `reminders_sync` makes the participant's pending reminders match their calendar: rows that
  no longer apply are cancelled, new ones are added.
- `announce_visits` queues the invites (iMIP REQUEST or CANCEL) that tell a participant's
  calendar about a change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.utils import timezone

from participants.models import Participant
from scheduler.calendars.events import attendee_of
from scheduler.engine.reminders import (
    MilestoneFacts,
    Recipients,
    ReminderRuleSpec,
    VisitFacts,
    plan_reminders,
)
from scheduler.models import Reminder, ScheduledMilestone, ScheduledVisit
from scheduler.outbox.dispatch import SEND_TASK, send_after_commit
from trials.models import ReminderRule
from trials.protocol_file import DEFAULT_REMINDERS

INVITE_EVENT = "invite"


def _rules(participant: Participant) -> list[ReminderRuleSpec]:
    """The reminder rules of the participant's protocol version, or the defaults."""
    version = participant.protocol_version
    stored = [
        ReminderRuleSpec(
            code=r.code,
            event=r.event,
            at=r.at,
            days=r.days,
            channels=tuple(r.channels),
            visits=frozenset(r.visit_codes),
            procedures=frozenset(r.procedure_codes),
        )
        for r in ReminderRule.objects.filter(version=version).order_by("order")
    ]
    if not version.default_reminders:
        return stored
    return [
        ReminderRuleSpec(
            code=r.code,
            event=r.event.value,
            at=r.at,
            days=r.days,
            channels=tuple(c.value for c in r.channels),
            visits=frozenset(r.visits),
            procedures=frozenset(r.procedures),
        )
        for r in DEFAULT_REMINDERS
    ]


def participant_channels(participant: Participant, today: dt.date) -> frozenset[str]:
    if participant.reminders_opt_out or participant.status not in ("screening", "enrolled"):
        return frozenset()
    wanted = set(participant.reminder_channels or ["email"])
    reachable = set()
    if attendee_of(participant, today) is not None:
        reachable.add("email")
    if participant.phone:
        reachable.add("sms")
    return frozenset(wanted & reachable)


def reminders_sync(participant: Participant, *, now: dt.datetime | None = None) -> None:
    """Make the participant's pending reminders match their calendar (call in its transaction)."""
    now = now or timezone.now()
    participant = Participant.objects.select_related("site", "protocol_version").get(
        pk=participant.pk
    )
    visits = [
        VisitFacts(
            target_key=f"visit:{v.pk}",
            visit_code=v.visit_definition.code if v.visit_definition else "UNSCHEDULED",
            status=v.status,
            window_start=v.window_start,
            window_end=v.window_end,
            booked_start=v.booked_start,
            procedures=frozenset(p.procedure.code for p in v.procedures.all()),
        )
        for v in ScheduledVisit.objects.filter(participant=participant)
        .select_related("visit_definition")
        .prefetch_related("procedures__procedure")
    ]
    milestones = []
    previous: dict[int, object] = {}
    for m in (
        ScheduledMilestone.objects.filter(
            participant=participant, rule__participant_facing=True, dose_mg__isnull=False
        )
        .exclude(status="cancelled")
        .order_by("rule_id", "sequence")
    ):
        milestones.append(
            MilestoneFacts(
                f"milestone:{m.pk}",
                m.due_date,
                starts_new_dose=previous.get(m.rule_id) != m.dose_mg,
            )
        )
        previous[m.rule_id] = m.dose_mg
    recipients = Recipients(
        participant_zone=participant.timezone,
        site_zone=participant.site.timezone,
        participant_channels=participant_channels(participant, timezone.localdate()),
        quiet_start=participant.quiet_hours_start,
        quiet_end=participant.quiet_hours_end,
    )
    if participant.status not in ("screening", "enrolled"):
        still_apply = []
    else:
        # Every moment the calendar calls for, past ones included: a pending row that is due
        # but not swept yet still applies and must not be cancelled; only future moments
        # get new rows.
        still_apply = plan_reminders(
            _rules(participant),
            visits,
            milestones,
            recipients,
            dt.datetime.min.replace(tzinfo=dt.UTC),
        )
    wanted = [w for w in still_apply if w.due_at > now]

    wanted_keys = {(w.target_key, w.rule_code, w.channel, w.due_at) for w in still_apply}
    open_rows = Reminder.objects.filter(
        participant=participant, status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED]
    ).exclude(event="invite")  # invites announce changes; the reminder plan does not own them
    stale = [
        row.pk
        for row in open_rows
        if (row.target_key, row.rule_code, row.channel, row.due_at) not in wanted_keys
    ]
    if stale:
        Reminder.objects.filter(pk__in=stale).update(status=Reminder.Status.CANCELLED)
    Reminder.objects.bulk_create(
        [
            Reminder(
                participant=participant,
                visit_id=int(w.target_key.split(":")[1])
                if w.target_key.startswith("visit:")
                else None,
                milestone_id=int(w.target_key.split(":")[1])
                if w.target_key.startswith("milestone:")
                else None,
                target_key=w.target_key,
                rule_code=w.rule_code,
                event=w.event,
                channel=w.channel,
                audience=w.audience,
                due_at=w.due_at,
                next_attempt_at=w.due_at,
            )
            for w in wanted
        ],
        # Rows already planned, sent or cancelled for the same moment stay as they are.
        ignore_conflicts=True,
    )


def announce_visits(participant: Participant, visits: Iterable[ScheduledVisit]) -> None:
    """Queue each visit's current invite (REQUEST, or CANCEL once cancelled) in the outbox.

    Called inside the change's transaction: the rows commit with the change or not at all, and
    are handed to a worker right after commit (the sweep re-sends any message Redis loses).
    One row per visit and SEQUENCE; a row whose visit has a newer SEQUENCE by the time it is
    sent is superseded, so a burst of changes sends the newest state once.
    """
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
    send_after_commit(SEND_TASK, created)
