"""The one helper that hands work to Celery: by task name, and only after the commit.

Enqueuing by name keeps the outbox free of `scheduler.tasks` (tasks import the outbox, not the
other way round). After commit, so a worker never looks for a row that is not there yet or
that a rollback took away (pretix's `TransactionAwareTask`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from scheduler.calendars.imip import INVITE_EVENT
from scheduler.models import Reminder

logger = logging.getLogger(__name__)
# What a publish raises when the broker is away: kombu wraps connection errors in its
# OperationalError after its publish retries; a raw socket or Redis error can escape the
# wrapping (a connection dropped mid-publish).
BROKER_ERRORS = (KombuOperationalError, RedisError, OSError)

SEND_TASK = "scheduler.send_reminder"
# What the outbox publishes for every row but webhooks: one message for up to
# REMINDER_BATCH_SIZE rows of one queue (scheduler.outbox.sweep.reminders_send_batch), so a
# thousand due reminders are ten messages, ten claims and ten outcome writes, not a thousand.
SEND_BATCH_TASK = "scheduler.send_reminders"
# Webhooks go to a queue of their own: a slow receiver (seconds per attempt) must never hold up
# participants' reminders and invites behind it.
WEBHOOK_TASK = "scheduler.send_webhook"


def send_task_for(channel: str) -> str:
    """The task that sends an outbox row of this channel."""
    return WEBHOOK_TASK if channel == "webhook" else SEND_TASK


# Each kind of outbox row has a queue of its own (settings.OUTBOX_QUEUES), so a backlog of one
# kind never delays another: ten thousand invites after a protocol amendment wait behind each
# other, not in front of a reminder due now. Webhooks are a kind whatever their event.
INVITE = "invite"
REMINDER = "reminder"
WEBHOOK = "webhook"
KIND_ROWS: dict[str, Q] = {
    WEBHOOK: Q(channel="webhook"),
    INVITE: Q(event=INVITE_EVENT) & ~Q(channel="webhook"),
    # Everything else a person is sent: reminders, the welcome, coordinators' fallbacks.
    REMINDER: ~Q(channel="webhook") & ~Q(event=INVITE_EVENT),
}


def outbox_kind(*, channel: str, event: str) -> str:
    """Which kind of outbox row this is (the key of its queue in settings.OUTBOX_QUEUES)."""
    if channel == "webhook":
        return WEBHOOK
    return INVITE if event == INVITE_EVENT else REMINDER


def queue_for(*, channel: str, event: str) -> str:
    """The Celery queue an outbox row of this channel and event is published to."""
    queues: dict[str, str] = settings.OUTBOX_QUEUES
    return queues[outbox_kind(channel=channel, event=event)]


def batch_size() -> int:
    return max(1, int(settings.REMINDER_BATCH_SIZE))


def send_after_commit(task_name: str, ids: Sequence[int], *, queue: str | None = None) -> None:
    """Enqueue `task_name` for these ids once the current transaction commits.

    Every after-commit publish goes through here. The change is committed by then and its
    rows are in the outbox, so a broker that is down must not turn it into an error page:
    the publish logs (ids and the error's kind, nothing personal) and leaves the rows to the
    sweep, which enqueues them again once the broker is back.

    Each row goes to its kind's queue (`queue_for`): `queue` when the caller knows it (the
    sweep read the rows' kind with them), else read from the rows as they are published.
    SEND_TASK rows are published in batches, `SEND_BATCH_TASK([id, …])` with up to
    `REMINDER_BATCH_SIZE` ids of one queue a message, in the order given; any other task
    (webhooks: a slow receiver holds up one row, not a batch) one message per id.
    """
    ids = list(ids)
    if not ids:
        return

    def publish() -> None:
        queues = dict.fromkeys(ids, queue) if queue else _queues_of(ids)
        messages: list[tuple[str, tuple[Any, ...], list[int], str | None]] = []
        if task_name == SEND_TASK:
            by_queue: dict[str | None, list[int]] = {}
            for pk in ids:
                by_queue.setdefault(queues.get(pk), []).append(pk)
            size = batch_size()
            for route, of_queue in by_queue.items():
                for start in range(0, len(of_queue), size):
                    chunk = of_queue[start : start + size]
                    messages.append((SEND_BATCH_TASK, (chunk,), chunk, route))
        else:
            messages = [(task_name, (pk,), [pk], queues.get(pk)) for pk in ids]
        published = 0
        try:
            for name, args, _rows, route in messages:
                # Looked up in the app's registry (not `send_task`), so eager mode in tests
                # runs it. A None queue (a row gone, the database away): the task's route,
                # else `celery`.
                current_app.tasks[name].apply_async(args, queue=route)
                published += 1
        except BROKER_ERRORS as exc:
            unpublished = messages[published:]
            _left_for_the_sweep([pk for *_, rows, _ in unpublished for pk in rows], exc)

    transaction.on_commit(publish)


def _queues_of(ids: list[int]) -> dict[int, str]:
    try:
        rows = Reminder.objects.filter(pk__in=ids).values_list("pk", "channel", "event")
        return {pk: queue_for(channel=channel, event=event) for pk, channel, event in rows}
    except DatabaseError as exc:
        logger.warning("could not read the rows' kinds, routed by task: %s", type(exc).__name__)
        return {}


def _left_for_the_sweep(ids: list[int], exc: BaseException) -> None:
    logger.warning(
        "broker unavailable (%s): %d outbox row(s) left for the sweep, first id %s",
        type(exc).__name__,
        len(ids),
        ids[0],
    )
    try:
        # Due for the very next sweep rather than after the re-queue delay.
        Reminder.objects.filter(pk__in=ids).update(enqueued_at=None)
    except DatabaseError as db_exc:
        # The rows still carry their enqueue time: the sweep takes them a little later.
        logger.warning("could not mark them for the sweep: %s", type(db_exc).__name__)
