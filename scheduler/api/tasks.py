"""The API's periodic housekeeping (Celery beat; the schedule is in config/settings.py, UTC).

It lives with the API rather than in scheduler/tasks.py because the Idempotency-Key records are
the API's own rows, and tasks there may not import a face (import-linter contract).
"""

from __future__ import annotations

import logging

from celery import shared_task

from scheduler.api.idempotency import idempotency_prune

logger = logging.getLogger(__name__)


@shared_task(name="scheduler.api.idempotency_prune", ignore_result=True)
def prune_idempotency_records() -> None:
    """Beat, daily: forget Idempotency-Key records older than IDEMPOTENCY_KEEP_DAYS."""
    deleted = idempotency_prune()
    if deleted:
        logger.info("pruned %d idempotency record(s)", deleted)
