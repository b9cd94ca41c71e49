from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from scheduler.models import WorkerHeartbeat


@shared_task(name="scheduler.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Record that beat and a worker are both alive (beat sends it every minute)."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})
