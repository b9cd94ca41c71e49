"""Planning outbox rows inside a calendar change's transaction.

- `reminders_sync` makes the participant's pending reminders match their calendar: rows that
  no longer apply are cancelled, new ones are added.
- `announce_visits` plans the invites (iMIP REQUEST or CANCEL) that tell a participant's
  calendar about a visit: a visit not yet invited is invited once, `INVITE_LEAD_DAYS` before
  its window opens (at once when it is booked or opens sooner); one already invited gets each
  change at once.
- `announce_welcome` queues the one welcome message of an enrollment.
- `announce_to_site_systems` (from `webhooks`) plans the webhooks of a calendar event for the
  site systems subscribed to it; `reminders_sync` leaves those rows alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from participants.contact import sms_number
from participants.models import Participant
from scheduler.access import participant_today
from scheduler.bulkwrite import rows_add_new, rows_create, values_add_new
from scheduler.calendars.events import attendee_of
from scheduler.calendars.imip import INVITE_EVENT
from scheduler.engine.reminders import (
    MilestoneFacts,
    Recipients,
    ReminderRuleSpec,
    VisitFacts,
    participant_send_time,
    plan_reminders,
)
from scheduler.models import Reminder, ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.outbox.dispatch import SEND_TASK, send_after_commit
from scheduler.outbox.webhooks import WEBHOOK_CHANNEL
from scheduler.outbox.webhooks import announce_to_site_systems as announce_to_site_systems
from scheduler.outbox.webhooks import (
    announce_to_site_systems_many as announce_to_site_systems_many,
)
from trials.models import ProtocolVersion, ReminderRule
from trials.protocol_file import DEFAULT_REMINDERS

WELCOME_EVENT = "welcome"
# Rows the reminder plan does not own: invites announce visits, the welcome an enrollment.
NOT_REMINDERS = (INVITE_EVENT, WELCOME_EVENT)
# A visit's first invite goes out at this local time (the participant's), on its invite day.
INVITE_AT = dt.time(9)
OPEN_STATUSES = (Reminder.Status.PENDING, Reminder.Status.FAILED)
# What a re-plan cancels when it no longer applies: the open rows, and a row being sent right
# now, whose attempt may still fail: its failure is then not written (outcomes apply to rows
# still sending), so it is not retried with what no longer holds; if it went, "sent" is.
CANCELLABLE = (*OPEN_STATUSES, Reminder.Status.SENDING)


def version_rules(version: ProtocolVersion) -> list[ReminderRuleSpec]:
    """The reminder rules of a protocol version, or the defaults."""
    if not version.default_reminders:
        return [
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
    # A file that names no reminders gets the defaults, and has no rules stored to read.
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
    if sms_number(participant, today=today):
        reachable.add("sms")
    return frozenset(wanted & reachable)


def reminders_sync(participant: Participant, *, now: dt.datetime | None = None) -> None:
    """Make the participant's pending reminders match their calendar (call in its transaction)."""
    reminders_sync_many([participant], now=now)


def reminders_sync_many(
    participants: Iterable[Participant],
    *,
    now: dt.datetime | None = None,
    only_visits: Collection[int] | None = None,
) -> None:
    """`reminders_sync` for many participants at once (a site's amendment), with the same
    queries as for one: each reads every participant's rows, and one statement cancels and
    one adds the reminders of them all.

    `only_visits`: the reminders of these visits (of these participants) and of every
    milestone, the rest left as they are. Only for a caller that knows nothing else a
    reminder depends on changed since the last sync: not the participant (status, contact,
    channels, quiet hours, zone), not the reminder rules (`version_rules`), and no other
    visit's code, status, window, booking or procedures (an amendment whose rules are the
    same as the ones it leaves: `site_move_to_version`)."""
    now = now or timezone.now()
    ids = [participant.pk for participant in participants]
    if not ids:
        return
    # In no order (the plan is sorted): the models' default orders join the participant and
    # the trial, and the visit, for every row.
    visit_rows = ScheduledVisit.objects.filter(participant__in=ids).order_by()
    procedure_rows = ScheduledProcedure.objects.filter(visit__participant__in=ids).order_by()
    stored_rows = Reminder.objects.filter(participant__in=ids).order_by()
    if only_visits is not None:
        visit_rows = visit_rows.filter(pk__in=only_visits)
        procedure_rows = procedure_rows.filter(visit__in=only_visits)
        stored_rows = stored_rows.filter(Q(visit__in=only_visits) | Q(milestone__isnull=False))
    # Plain values, not model instances: this runs on every change of every calendar.
    procedures: dict[int, set[str]] = {}
    for visit_id, code in procedure_rows.values_list("visit_id", "procedure__code"):
        procedures.setdefault(visit_id, set()).add(code)
    visits: dict[int, list[VisitFacts]] = {pk: [] for pk in ids}
    for (
        pk,
        participant_id,
        code,
        status,
        window_start,
        window_end,
        booked_start,
    ) in visit_rows.values_list(
        "pk",
        "participant_id",
        "visit_definition__code",
        "status",
        "window_start",
        "window_end",
        "booked_start",
    ):
        visits[participant_id].append(
            VisitFacts(
                target_key=f"visit:{pk}",
                visit_code=code or "UNSCHEDULED",
                status=status,
                window_start=window_start,
                window_end=window_end,
                booked_start=booked_start,
                procedures=frozenset(procedures.get(pk, ())),
            )
        )
    milestones: dict[int, list[MilestoneFacts]] = {pk: [] for pk in ids}
    previous: dict[tuple[int, int], object] = {}
    for pk, participant_id, rule_id, due_date, dose_mg in (
        ScheduledMilestone.objects.filter(
            participant__in=ids, rule__participant_facing=True, dose_mg__isnull=False
        )
        .exclude(status="cancelled")
        .order_by("participant_id", "rule_id", "sequence")
        .values_list("pk", "participant_id", "rule_id", "due_date", "dose_mg")
    ):
        milestones[participant_id].append(
            MilestoneFacts(
                f"milestone:{pk}",
                due_date,
                starts_new_dose=previous.get((participant_id, rule_id)) != dose_mg,
            )
        )
        previous[(participant_id, rule_id)] = dose_mg
    # Every row of these participants' reminder plans still to come, whatever its status: the
    # open ones that no longer apply are cancelled; a cancelled one that applies again (a
    # visit moved away and back) is pending again; a moment that has a row already keeps it,
    # and only the others are added (one row a moment: sent is never sent twice).
    stored: dict[int, list[tuple[int, str, tuple[str, str, str, dt.datetime]]]] = {
        pk: [] for pk in ids
    }
    for pk, participant_id, status, target_key, rule_code, channel, due_at in (
        stored_rows.filter(Q(due_at__gt=now) | Q(status__in=CANCELLABLE))
        .exclude(event__in=NOT_REMINDERS)
        .exclude(channel=WEBHOOK_CHANNEL)  # webhooks are events, not reminders of the calendar
        .values_list(
            "pk", "participant_id", "status", "target_key", "rule_code", "channel", "due_at"
        )
    ):
        stored[participant_id].append((pk, status, (target_key, rule_code, channel, due_at)))

    rules: dict[int, list[ReminderRuleSpec]] = {}
    stale: list[int] = []
    revived: dict[tuple[str, str], list[int]] = {}  # by (event, audience)
    ended: list[int] = []
    new_rows: list[tuple[Any, ...]] = []
    for participant in Participant.objects.filter(pk__in=ids).select_related(
        "site", "protocol_version"
    ):
        active = participant.status in ("screening", "enrolled")
        if not active:
            still_apply = []
            # Withdrawn or done before their welcome went out: nobody to welcome any more.
            ended.append(participant.pk)
        else:
            version_id = participant.protocol_version_id
            if version_id not in rules:
                rules[version_id] = version_rules(participant.protocol_version)
            recipients = Recipients(
                participant_zone=participant.timezone,
                site_zone=participant.site.timezone,
                participant_channels=participant_channels(
                    participant, participant_today(participant)
                ),
                quiet_start=participant.quiet_hours_start,
                quiet_end=participant.quiet_hours_end,
            )
            # Every moment the calendar calls for, past ones included: a pending row that is
            # due but not swept yet still applies and must not be cancelled; only future
            # moments get new rows.
            still_apply = plan_reminders(
                rules[version_id],
                visits[participant.pk],
                milestones[participant.pk],
                recipients,
                dt.datetime.min.replace(tzinfo=dt.UTC),
            )
        wanted = {(w.target_key, w.rule_code, w.channel, w.due_at): w for w in still_apply}
        planned: set[tuple[str, str, str, dt.datetime]] = set()
        for pk, status, key in stored[participant.pk]:
            if key[3] > now:
                planned.add(key)
                if status == Reminder.Status.CANCELLED and key in wanted:
                    revived.setdefault((wanted[key].event, wanted[key].audience), []).append(pk)
            # Open rows already due (not swept yet, or failing and retried) included, and
            # rows being sent.
            if status in CANCELLABLE and key not in wanted:
                stale.append(pk)
        new_rows += [
            (
                participant.pk,
                int(w.target_key.split(":")[1]) if w.target_key.startswith("visit:") else None,
                int(w.target_key.split(":")[1]) if w.target_key.startswith("milestone:") else None,
                w.target_key,
                w.rule_code,
                w.event,
                w.channel,
                w.audience,
                w.due_at,
                w.due_at,
            )
            for w in still_apply
            if w.due_at > now and (w.target_key, w.rule_code, w.channel, w.due_at) not in planned
        ]
    if stale:
        # Still cancellable when written: a row sent meanwhile stays sent.
        Reminder.objects.filter(pk__in=stale, status__in=CANCELLABLE).update(
            status=Reminder.Status.CANCELLED
        )
    for (event, audience), pks in revived.items():
        # As a new row would be: its moment due, no attempt made (a row cancelled while
        # failing starts over), its rule's event and audience as they are now.
        Reminder.objects.filter(pk__in=pks).update(
            status=Reminder.Status.PENDING,
            event=event,
            audience=audience,
            next_attempt_at=F("due_at"),
            attempts=0,
            enqueued_at=None,
            claimed_at=None,
            last_error="",
        )
    if ended:
        Reminder.objects.filter(
            participant__in=ended, event=WELCOME_EVENT, status__in=OPEN_STATUSES
        ).update(status=Reminder.Status.CANCELLED)
    # Rows already planned, sent or cancelled for the same moment stay as they are (a row
    # another transaction added since is one of them).
    values_add_new(Reminder, NEW_REMINDER_FIELDS, new_rows)


# What `reminders_sync_many` gives a new reminder (in this order); the rest are its defaults.
NEW_REMINDER_FIELDS = [
    "participant",
    "visit",
    "milestone",
    "target_key",
    "rule_code",
    "event",
    "channel",
    "audience",
    "due_at",
    "next_attempt_at",
]


def invite_day(visit: ScheduledVisit) -> dt.date:
    """The day a visit not yet booked is first invited: INVITE_LEAD_DAYS before its window."""
    return visit.window_start - dt.timedelta(days=settings.INVITE_LEAD_DAYS)


def _first_invite_due(
    visit: ScheduledVisit, participant: Participant, today: dt.date, now: dt.datetime
) -> dt.datetime | None:
    """When a visit the participant has never been sent an invite for should get its first.

    None when there is nothing to invite to: a visit already done, missed or cancelled (a
    CANCEL for an event their calendar never held is noise), or one whose window closed
    unbooked (the site's to follow up, not a date for the participant's calendar).
    """
    if not visit.is_open:
        return None
    if visit.booked_start is not None:
        return now
    if visit.window_end < today:
        return None
    day = invite_day(visit)
    if day <= today:
        return now
    recipients = Recipients(
        participant_zone=participant.timezone or participant.site.timezone,
        site_zone=participant.site.timezone,
        participant_channels=frozenset({"email"}),
        quiet_start=participant.quiet_hours_start,
        quiet_end=participant.quiet_hours_end,
    )
    return max(participant_send_time(day, INVITE_AT, recipients), now)


def announce_visits(
    participant: Participant, visits: Iterable[ScheduledVisit], *, now: dt.datetime | None = None
) -> None:
    """Plan each visit's invite (REQUEST, or CANCEL once cancelled) in the outbox.

    Call it inside the transaction of every change that raises a visit's SEQUENCE, with the
    visits changed; the rows commit with the change or not at all, and due rows are handed to
    a worker right after commit (the sweep sends later ones when they fall due, and re-sends
    any message Redis loses).

    - A visit the participant has already been sent an invite for (or is being sent one)
      gets its new state at once: one row per visit and SEQUENCE; a row whose visit has a
      newer SEQUENCE by the time it is sent is superseded, so a burst of changes sends the
      newest state once.
    - A visit never invited gets exactly one open row: due now when it is booked or its
      window opens within INVITE_LEAD_DAYS, else at 09:00 (participant's time) on its invite
      day. Its earlier unsent rows are cancelled, so a visit moved before its invite went
      out is invited once, at the time its new window calls for, never early.
    """
    announce_visits_many([(participant, list(visits))], now=now)


def invitees(
    participants: Iterable[Participant], *, now: dt.datetime | None = None
) -> dict[int, dt.date]:
    """Those of `participants` who are sent invites to their visits (an email of their own,
    or a guardian's for a minor, on their today): each one's key and today. The others'
    visits need no model instances for `announce_visits_many`."""
    now = now or timezone.now()
    todays: dict[int, dt.date] = {}
    for participant in participants:
        today = participant_today(participant, now=now)
        if attendee_of(participant, today) is not None:
            todays[participant.pk] = today
    return todays


def announce_visits_many(
    changes: Sequence[tuple[Participant, Sequence[ScheduledVisit]]],
    *,
    now: dt.datetime | None = None,
    todays: Mapping[int, dt.date] | None = None,
) -> None:
    """`announce_visits` for the changed visits of many participants (a cohort enrolled, a
    site's amendment): the same rows, with the same statements for all of them as for one.
    `todays`: what `invitees` gave the caller for these participants at `now`."""
    now = now or timezone.now()
    if todays is None:
        todays = invitees([participant for participant, visits in changes if visits], now=now)
    reached = [
        (participant, visits, todays[participant.pk])
        for participant, visits in changes
        if visits and participant.pk in todays
    ]
    if not reached:
        return
    every_visit = [visit.pk for _participant, visits, _today in reached for visit in visits]
    # The newest SEQUENCE each visit was sent (or is being sent) to the participant.
    told: dict[int, int] = {}
    for visit_id, sequence in Reminder.objects.filter(
        event=INVITE_EVENT,
        visit__in=every_visit,
        status__in=[Reminder.Status.SENT, Reminder.Status.SENDING],
    ).values_list("visit_id", "ical_sequence"):
        told[visit_id] = max(told.get(visit_id, 0), sequence or 0)
    unsent: dict[int, list[Reminder]] = {}
    for row in Reminder.objects.filter(
        event=INVITE_EVENT,
        visit__in=[pk for pk in every_visit if pk not in told],
        status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED],
    ).order_by("pk"):
        unsent.setdefault(row.visit_id, []).append(row)  # type: ignore[arg-type]
    wanted: list[Reminder] = []
    kept: set[int] = set()
    for participant, visits, today in reached:
        for visit in visits:
            if visit.pk in told:
                # Already told: the change goes at once, unless they have this state already.
                due: dt.datetime | None = now if told[visit.pk] < visit.ical_sequence else None
            else:
                due = _first_invite_due(visit, participant, today, now)
                # An open row for this very state that is already due (queued, or failing and
                # being retried) stays the one that sends it.
                same = [
                    row
                    for row in unsent.get(visit.pk, ())
                    if due is not None
                    and row.ical_sequence == visit.ical_sequence
                    and (row.due_at == due or (due == now and row.due_at <= now))
                ]
                if same:
                    kept.add(same[0].pk)
                    continue
            if due is not None:
                wanted.append(
                    Reminder(
                        participant=participant,
                        visit=visit,
                        target_key=f"visit:{visit.pk}",
                        rule_code=f"INVITE-{visit.ical_sequence}",
                        event=INVITE_EVENT,
                        channel="email",
                        audience="participant",
                        due_at=due,
                        next_attempt_at=due,
                        enqueued_at=now if due <= now else None,
                        ical_sequence=visit.ical_sequence,
                    )
                )
    replanned = [row.pk for rows in unsent.values() for row in rows if row.pk not in kept]
    if replanned:
        Reminder.objects.filter(pk__in=replanned).update(
            status=Reminder.Status.CANCELLED, last_error="replanned before it was sent"
        )
    if not wanted:
        return
    rows_add_new(wanted, Reminder)
    # Rows due now go to a worker after commit; later ones wait for the sweep.
    due_now = [row for row in wanted if row.due_at <= now]
    if due_now:
        # Rows added past conflicts come back without ids: read them back.
        send_after_commit(
            SEND_TASK,
            list(
                Reminder.objects.filter(
                    event=INVITE_EVENT,
                    due_at=now,
                    visit__in=[row.visit_id for row in due_now],
                    status=Reminder.Status.PENDING,
                ).values_list("pk", flat=True)
            ),
        )


def announce_welcome(participant: Participant, *, now: dt.datetime | None = None) -> None:
    """Queue the participant's welcome message (email; once per participant, ever).

    Call inside the enrollment's transaction. What the message says (the calendar's visits,
    the feed to subscribe to, whom to call) is read when it is sent, after commit; see
    `scheduler.outbox.channels`.
    """
    announce_welcome_many([participant], now=now)


def announce_welcome_many(
    participants: Sequence[Participant], *, now: dt.datetime | None = None
) -> None:
    """`announce_welcome` for many participants (a cohort enrolled at once): one query for
    those already welcomed and one write for the rest, in the order given."""
    now = now or timezone.now()
    reachable = [
        participant
        for participant in participants
        if attendee_of(participant, participant_today(participant, now=now)) is not None
    ]
    if not reachable:
        return
    welcomed = set(
        Reminder.objects.filter(
            participant__in=[participant.pk for participant in reachable], event=WELCOME_EVENT
        ).values_list("participant_id", flat=True)
    )
    rows = rows_create(
        [
            Reminder(
                participant=participant,
                target_key=f"participant:{participant.pk}",
                rule_code="WELCOME",
                event=WELCOME_EVENT,
                channel="email",
                audience="participant",
                due_at=now,
                next_attempt_at=now,
                enqueued_at=now,
            )
            for participant in reachable
            if participant.pk not in welcomed
        ],
        Reminder,
    )
    if rows:
        send_after_commit(SEND_TASK, [row.pk for row in rows])
