from __future__ import annotations

import gc
import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.utils import timezone

from scheduler.models import WorkerHeartbeat
from scheduler.outbox.outcomes import outcomes_replay
from scheduler.outbox.sweep import reminder_send, reminders_send_batch, reminders_sweep

logger = logging.getLogger(__name__)


@worker_ready.connect
def replay_held_outcomes(**kwargs: Any) -> None:
    """A worker starting on the journal's volume first records the outcomes a worker before
    it held but could not record (see scheduler.outbox.outcomes)."""
    settled = outcomes_replay()
    if settled:
        logger.info("recorded %d held outcome(s) from the journal", settled)


@worker_ready.connect
@worker_process_init.connect
def freeze_startup_objects(**kwargs: Any) -> None:
    """Once a worker (or a prefork pool's child) has started: what it loaded to get there
    (Django, Celery, the app's modules: some 200,000 objects) lives as long as it does, so it
    is moved out of the garbage collector's sight. A full collection otherwise walks it all
    every few batches: a fifth of a reminder send's CPU (bench/reminders.py)."""
    gc.collect()
    gc.freeze()


@shared_task(name="scheduler.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Record that beat and a worker are both alive (beat sends it every minute)."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})


@shared_task(name="scheduler.reminders_sweep", ignore_result=True)
def sweep_reminders() -> None:
    """Beat, every minute: record held outcomes, then hand due reminders to workers."""
    outcomes_replay()
    enqueued = reminders_sweep()
    if enqueued:
        logger.info("sweep enqueued %d reminder(s)", len(enqueued))


@shared_task(
    name="scheduler.send_reminder", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def send_reminder(reminder_id: int) -> None:
    """Claim one reminder row and deliver it (see scheduler.outbox.sweep.reminder_send), after
    recording any outcome this worker's journal still holds. Kept for messages published one
    row each (before batching, or by hand); the outbox now publishes `send_reminders`."""
    outcomes_replay()
    reminder_send(reminder_id)


@shared_task(
    name="scheduler.send_reminders", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def send_reminders(reminder_ids: list[int]) -> None:
    """Claim a batch of reminder rows and deliver them (see
    scheduler.outbox.sweep.reminders_send_batch), after recording any outcome this worker's
    journal still holds. What the sweep and the planner publish, up to REMINDER_BATCH_SIZE
    rows a message."""
    outcomes_replay()
    reminders_send_batch(reminder_ids)


@shared_task(
    name="scheduler.send_webhook", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def send_webhook(reminder_id: int) -> None:
    """The same claim and delivery for a webhook row, on the `webhooks` queue."""
    outcomes_replay()
    reminder_send(reminder_id)
