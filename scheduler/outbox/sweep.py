"""The outbox's moving parts: the periodic sweep, and claiming and sending one row.

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
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from scheduler.models import CoordinatorNotification, Reminder
from scheduler.outbox.channels import deliver
from scheduler.outbox.dispatch import send_after_commit, send_task_for
from scheduler.outbox.errors import (
    NotNeeded,
    PermanentDeliveryError,
    Superseded,
    TransientDeliveryError,
)

logger = logging.getLogger(__name__)


def _seconds(name: str, default: int) -> dt.timedelta:
    return dt.timedelta(seconds=getattr(settings, name, default))


def reminders_sweep(*, now: dt.datetime | None = None, batch: int = 1000) -> list[int]:
    """Hand due reminders to workers; returns the ids enqueued. Safe to run concurrently."""
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
            .values_list("pk", "channel")[:batch]
        )
        if due:
            Reminder.objects.filter(pk__in=[pk for pk, _channel in due]).update(enqueued_at=now)
            by_task: dict[str, list[int]] = {}
            for pk, channel in due:
                by_task.setdefault(send_task_for(channel), []).append(pk)
            for task_name, ids in by_task.items():
                send_after_commit(task_name, ids)
    return [pk for pk, _channel in due]


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
    now = timezone.now()
    if not _claim(reminder_id, now):
        return "not claimed"
    reminder = (
        Reminder.objects.select_related(
            "participant__site",
            "participant__trial",
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
    except NotNeeded as exc:
        ours.update(status=Reminder.Status.CANCELLED, last_error=str(exc)[:2000])
        return "not needed"
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


RETRY_REASON = "retried by hand"


@transaction.atomic
def reminders_retry(
    *, reminders: Iterable[Reminder], by: Any = None, reason: str = RETRY_REASON
) -> int:
    """A person's retry of failed or dead reminders: due again now, attempts reset; returns
    how many were re-queued. Each re-queued row is saved on its own, attributed to `by` (the
    user; None only for the system itself) with `reason`, so the audit trail shows who sent
    it again and why. Rows in any other state are left as they are."""
    rows = list(
        Reminder.objects.select_for_update()
        .filter(
            pk__in=[r.pk for r in reminders],
            status__in=[Reminder.Status.FAILED, Reminder.Status.DEAD],
        )
        .order_by("pk")
    )
    now = timezone.now()
    for row in rows:
        row.status = Reminder.Status.PENDING
        row.attempts = 0
        row.next_attempt_at = now
        row.enqueued_at = None
        row.last_error = ""
        row._history_user = by  # type: ignore[attr-defined]
        row._change_reason = reason  # type: ignore[attr-defined]
        row.save(
            update_fields=["status", "attempts", "next_attempt_at", "enqueued_at", "last_error"]
        )
    return len(rows)


@transaction.atomic
def notifications_mark_read(*, notifications: Iterable[CoordinatorNotification]) -> int:
    """Mark in-app reminders as read; returns how many were unread."""
    return CoordinatorNotification.objects.filter(
        pk__in=[n.pk for n in notifications], read_at__isnull=True
    ).update(read_at=timezone.now())
