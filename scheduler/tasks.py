from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from scheduler.models import WorkerHeartbeat
from scheduler.outbox.sweep import reminder_send, reminders_sweep

logger = logging.getLogger(__name__)


@shared_task(name="scheduler.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Record that beat and a worker are both alive (beat sends it every minute)."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})


@shared_task(name="scheduler.reminders_sweep", ignore_result=True)
def sweep_reminders() -> None:
    """Beat, every minute: hand due reminders to workers."""
    enqueued = reminders_sweep()
    if enqueued:
        logger.info("sweep enqueued %d reminder(s)", len(enqueued))


@shared_task(
    name="scheduler.send_reminder", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def send_reminder(reminder_id: int) -> None:
    """Claim one reminder row and deliver it (see scheduler.outbox.sweep.reminder_send)."""
    reminder_send(reminder_id)


@shared_task(
    name="scheduler.send_webhook", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def send_webhook(reminder_id: int) -> None:
    """The same claim and delivery for a webhook row, on the `webhooks` queue."""
    reminder_send(reminder_id)
