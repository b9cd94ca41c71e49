from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from scheduler.ical import Method
from scheduler.invites import invite_message
from scheduler.models import ScheduledVisit, WorkerHeartbeat

logger = logging.getLogger(__name__)


@shared_task(name="scheduler.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Record that beat and a worker are both alive (beat sends it every minute)."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})


@shared_task(name="scheduler.send_visit_invite", ignore_result=True)
def send_visit_invite(visit_id: int, sequence: int) -> None:
    """Email a visit's iMIP invite (REQUEST) or cancellation (CANCEL) for `sequence`.

    Skips when a newer change has raised the visit's SEQUENCE: that change's own task sends.
    Logs ids only, never addresses or visit content.
    """
    visit = (
        ScheduledVisit.objects.select_related("participant__site", "visit_definition")
        .prefetch_related("procedures__procedure")
        .filter(pk=visit_id)
        .first()
    )
    if visit is None or visit.ical_sequence != sequence:
        logger.info("invite for visit %s sequence %s superseded", visit_id, sequence)
        return
    method: Method = "CANCEL" if visit.status == ScheduledVisit.Status.CANCELLED else "REQUEST"
    message = invite_message(visit, method=method)
    if message is None:
        logger.info("visit %s: no address to invite", visit_id)
        return
    message.send()
    logger.info("visit %s: %s sequence %s sent", visit_id, method, sequence)


@shared_task(name="scheduler.reminders_sweep", ignore_result=True)
def sweep_reminders() -> None:
    """Beat, every minute: hand due reminders to workers."""
    from scheduler.reminders import reminders_sweep

    enqueued = reminders_sweep()
    if enqueued:
        logger.info("sweep enqueued %d reminder(s)", len(enqueued))


@shared_task(
    name="scheduler.send_reminder", ignore_result=True, acks_late=True, reject_on_worker_lost=True
)
def send_reminder(reminder_id: int) -> None:
    """Claim one reminder row and deliver it (see scheduler.reminders.reminder_send)."""
    from scheduler.reminders import reminder_send

    reminder_send(reminder_id)
