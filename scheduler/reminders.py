"""The reminder outbox: planning rows, the periodic sweep, and claiming and sending one row.

- `reminders_sync` runs inside every calendar change's transaction, so the outbox always
  matches the calendar: pending rows that no longer apply are cancelled, new ones are added.
- `reminders_sweep` (Celery beat, every minute) hands due rows to workers: it re-queues rows
  whose message may have been lost (Redis flushed or restarted) and re-claims rows stuck in
  "sending" (a worker killed mid-send), then enqueues one task per row after commit.
- `reminder_send` claims its row with a conditional UPDATE and sends only if it won, so a
  redelivered or duplicated message sends nothing twice. Transient failures are retried with
  exponential backoff by the sweep (no long ETAs on Redis); after the last attempt the row is
  dead and listed for coordinators.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from participants.models import Participant
from scheduler.engine.reminders import (
    MilestoneFacts,
    Recipients,
    ReminderRuleSpec,
    VisitFacts,
    plan_reminders,
)
from scheduler.models import (
    CoordinatorNotification,
    Reminder,
    ScheduledMilestone,
    ScheduledVisit,
)
from trials.models import ReminderRule
from trials.protocol_file import DEFAULT_REMINDERS

logger = logging.getLogger(__name__)


class TransientDeliveryError(Exception):
    """The provider may accept it later (timeout, 5xx, rate limit): retry with backoff."""


class PermanentDeliveryError(Exception):
    """It will never go (invalid number, no address): give up now."""


class Superseded(Exception):
    """An invite for a SEQUENCE the visit has moved past: a newer row sends the newer state."""


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
    from scheduler.invites import attendee_of

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


# ----------------------------------------------------------------------------------------
# Sweep and send


def _seconds(name: str, default: int) -> dt.timedelta:
    return dt.timedelta(seconds=getattr(settings, name, default))


def reminders_sweep(*, now: dt.datetime | None = None, batch: int = 1000) -> list[int]:
    """Hand due reminders to workers; returns the ids enqueued. Safe to run concurrently."""
    from scheduler.tasks import send_reminder

    now = now or timezone.now()
    with transaction.atomic():
        # A worker killed mid-send leaves its row in "sending"; after the timeout it goes
        # back to the queue (the provider call may have happened: at-least-once there).
        stuck = Reminder.objects.filter(
            status=Reminder.Status.SENDING,
            claimed_at__lt=now - _seconds("REMINDER_SENDING_TIMEOUT_SECONDS", 300),
        )
        # A row whose every attempt died with its worker stops being retried.
        stuck.filter(attempts__gte=getattr(settings, "REMINDER_MAX_ATTEMPTS", 5)).update(
            status=Reminder.Status.DEAD,
            last_error="the worker stopped while sending, on every attempt",
        )
        stuck.update(status=Reminder.Status.PENDING, enqueued_at=None)
        requeue_before = now - _seconds("REMINDER_REQUEUE_AFTER_SECONDS", 120)
        due = list(
            Reminder.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED],
                next_attempt_at__lte=now,
            )
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=requeue_before))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:batch]
        )
        if due:
            Reminder.objects.filter(pk__in=due).update(enqueued_at=now)
            transaction.on_commit(lambda: [send_reminder.delay(pk) for pk in due])
    return due


def _claim(reminder_id: int, now: dt.datetime) -> bool:
    # healthchecks' pattern: the UPDATE is the lock; only one process can win it.
    won = Reminder.objects.filter(
        pk=reminder_id,
        status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED],
        next_attempt_at__lte=now,
    ).update(status=Reminder.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    return won == 1


def backoff(attempt: int) -> dt.timedelta:
    """1, 2, 4, 8 … minutes after failed attempt n, capped at an hour."""
    base = getattr(settings, "REMINDER_BACKOFF_BASE_SECONDS", 60)
    return dt.timedelta(seconds=min(base * 2 ** (attempt - 1), 3600))


def reminder_send(reminder_id: int) -> str:
    """Claim a reminder and deliver it; returns what happened (for logs and tests)."""
    from scheduler.delivery import deliver

    now = timezone.now()
    if not _claim(reminder_id, now):
        return "not claimed"
    reminder = (
        Reminder.objects.select_related(
            "participant__site",
            "visit__visit_definition",
            "visit__participant__site",
            "milestone__rule",
        )
        .prefetch_related("visit__procedures__procedure")
        .get(pk=reminder_id)
    )
    # Outcomes are written only while this claim still holds: a worker slower than the
    # sending timeout must not overwrite what the worker that re-claimed the row recorded.
    ours = Reminder.objects.filter(pk=reminder_id, status=Reminder.Status.SENDING, claimed_at=now)
    try:
        provider_id = deliver(reminder)
    except Superseded:
        ours.update(status=Reminder.Status.CANCELLED, last_error="superseded by a newer change")
        return "superseded"
    except PermanentDeliveryError as exc:
        ours.update(status=Reminder.Status.DEAD, last_error=str(exc)[:2000])
        return "dead"
    except Exception as exc:  # noqa: BLE001 - anything unexpected is retried, then dead
        # TransientDeliveryError, and anything a provider library raises that we did not
        # foresee: retrying with backoff and then giving up beats a row stuck in "sending".
        final = reminder.attempts >= getattr(settings, "REMINDER_MAX_ATTEMPTS", 5)
        error = str(exc) if isinstance(exc, TransientDeliveryError) else type(exc).__name__
        ours.update(
            status=Reminder.Status.DEAD if final else Reminder.Status.FAILED,
            last_error=error[:2000],
            next_attempt_at=now + backoff(reminder.attempts),
            enqueued_at=None,
        )
        logger.warning(
            "reminder %s attempt %s failed: %s", reminder_id, reminder.attempts, type(exc).__name__
        )
        return "dead" if final else "failed"
    ours.update(
        status=Reminder.Status.SENT,
        sent_at=timezone.now(),
        provider_message_id=provider_id,
        last_error="",
    )
    logger.info("reminder %s sent by %s", reminder_id, reminder.channel)
    return "sent"


@transaction.atomic
def reminders_retry(*, reminders: Iterable[Reminder]) -> int:
    """A coordinator's retry of failed or dead reminders: due again now, attempts reset."""
    return Reminder.objects.filter(
        pk__in=[r.pk for r in reminders],
        status__in=[Reminder.Status.FAILED, Reminder.Status.DEAD],
    ).update(
        status=Reminder.Status.PENDING,
        attempts=0,
        next_attempt_at=timezone.now(),
        enqueued_at=None,
        last_error="",
    )


@transaction.atomic
def notifications_mark_read(*, notifications: Iterable[CoordinatorNotification]) -> int:
    """Mark in-app reminders as read; returns how many were unread."""
    return CoordinatorNotification.objects.filter(
        pk__in=[n.pk for n in notifications], read_at__isnull=True
    ).update(read_at=timezone.now())
