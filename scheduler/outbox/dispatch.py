"""The one helper that hands work to Celery: by task name, and only after the commit.

Enqueuing by name keeps the outbox free of `scheduler.tasks` (tasks import the outbox, not the
other way round). After commit, so a worker never looks for a row that is not there yet or
that a rollback took away (pretix's `TransactionAwareTask`).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import current_app
from django.db import transaction

SEND_TASK = "scheduler.send_reminder"
# Webhooks go to a queue of their own: a slow receiver (seconds per attempt) must never hold up
# participants' reminders and invites behind it.
WEBHOOK_TASK = "scheduler.send_webhook"


def send_task_for(channel: str) -> str:
    """The task that sends an outbox row of this channel."""
    return WEBHOOK_TASK if channel == "webhook" else SEND_TASK


def send_after_commit(task_name: str, ids: Sequence[int]) -> None:
    """Enqueue `task_name(id)` for each id once the current transaction commits."""
    ids = list(ids)
    if not ids:
        return

    def publish() -> None:
        # Looked up in the app's registry (not `send_task`), so eager mode in tests runs it.
        task = current_app.tasks[task_name]
        for pk in ids:
            task.delay(pk)

    transaction.on_commit(publish)
