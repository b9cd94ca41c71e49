"""Recording what a delivery did, even when the database is away at that moment.

Once a provider has accepted a message, the worker holds that fact until the row says so: a
second send must never follow from the database being down when the outcome was written.

- `outcome_record` writes the outcome on the row. If the database refuses (connection lost,
  server restarting), the outcome is first written to a journal (one small file per outcome,
  fsynced, renamed into place), then retried with backoff for
  `REMINDER_OUTCOME_RETRY_SECONDS`; once the row has it, the file is removed.
- `outcomes_replay` applies whatever the journal still holds: a worker killed while holding
  an outcome, or one that gave up waiting, leaves the file, and the next task or worker start
  on the same volume records it (tasks.py calls it).

Why a local file rather than Redis: Redis is only the transport here and may be down, flushed
or restarted at the same moment (a host failure takes both); a file needs nothing but the
worker's own disk, and writing it cannot fail for the reason the database write did. The
journal holds ids, statuses, instants, provider ids and scrubbed errors: no contact details.

Applying an outcome is idempotent. "sent" is the truth about the world, so it is recorded
whatever the row became meanwhile (re-queued after its lease expired, parked as "unknown",
even re-queued by a person), except a row another attempt already recorded as sent. Any other
outcome (failed, dead, cancelled: the provider did not take it) only applies while the row is
still this attempt's claim, or parked as unknown by that same claim.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

from scheduler.models import Reminder

logger = logging.getLogger(__name__)
Status = Reminder.Status
# Database errors that pass (a restart, a lost connection), as opposed to a bug in the query.
DATABASE_AWAY = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Outcome:
    """What one attempt (the claim taken at `claimed_at`) did with reminder `reminder_id`."""

    reminder_id: int
    claimed_at: dt.datetime
    status: str
    last_error: str = ""
    provider_message_id: str = ""
    sent_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        for key in ("claimed_at", "sent_at", "next_attempt_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        for key in ("claimed_at", "sent_at", "next_attempt_at"):
            if data[key] is not None:
                data[key] = dt.datetime.fromisoformat(data[key])
        return cls(**data)


def outcome_apply(outcome: Outcome) -> int:
    """Write `outcome` on its row; returns how many rows took it (0: it no longer applies)."""
    rows = Reminder.objects.filter(pk=outcome.reminder_id)
    if outcome.status == Status.SENT:
        return rows.exclude(status=Status.SENT).update(
            status=Status.SENT,
            sent_at=outcome.sent_at,
            provider_message_id=outcome.provider_message_id,
            last_error="",
        )
    fields: dict[str, Any] = {"status": outcome.status, "last_error": outcome.last_error}
    if outcome.next_attempt_at is not None:
        fields.update(next_attempt_at=outcome.next_attempt_at, enqueued_at=None)
    return rows.filter(
        status__in=[Status.SENDING, Status.UNKNOWN], claimed_at=outcome.claimed_at
    ).update(**fields)


# ----------------------------------------------------------------------------------------
# The journal


def journal_dir() -> Path:
    return Path(settings.REMINDER_OUTCOME_JOURNAL_DIR)


def _journal_path(outcome: Outcome) -> Path:
    stamp = outcome.claimed_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return journal_dir() / f"reminder-{outcome.reminder_id}-{stamp}.json"


def journal_write(outcome: Outcome) -> Path:
    """Keep `outcome` on disk until the row has it; durable when this returns."""
    folder = journal_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = _journal_path(outcome)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as file:
        file.write(outcome.to_json())
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
    # The rename is durable only once the folder is.
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return path


def journal_pending() -> list[Path]:
    folder = journal_dir()
    if not folder.is_dir():
        return []
    return sorted(folder.glob("reminder-*.json"))


def outcomes_replay() -> int:
    """Record every outcome the journal holds; returns how many files were settled. A file
    that cannot be applied now (the database still away) stays for the next replay."""
    settled = 0
    for path in journal_pending():
        try:
            outcome = Outcome.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # another process of this worker settled it meanwhile
        except (ValueError, TypeError, KeyError):
            logger.error("outbox journal file %s is unreadable; left for a person", path.name)
            continue
        try:
            outcome_apply(outcome)
        except DATABASE_AWAY as exc:
            _close_connections()
            logger.warning("outbox journal replay waits for the database: %s", type(exc).__name__)
            break
        with suppress(FileNotFoundError):
            path.unlink()
        settled += 1
        logger.info(
            "reminder %s outcome %s recorded from the journal", outcome.reminder_id, outcome.status
        )
    return settled


# ----------------------------------------------------------------------------------------
# Recording, held through an outage


def _close_connections() -> None:
    # A connection the server dropped is unusable; Django opens a new one on the next query.
    # (Never inside a transaction: that one is lost anyway, and its owner rolls it back.)
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            with suppress(Exception):
                connection.close()


def retry_delay(attempt: int) -> float:
    """0.5, 1, 2, 4 … seconds before retry n, capped at 30."""
    return float(min(0.5 * 2 ** (attempt - 1), 30.0))


def outcome_record(
    outcome: Outcome,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Record `outcome`, holding it through a database outage; True once the row has it
    (or no longer needs it), False if the database stayed away for the whole retry period,
    in which case the journal keeps it for `outcomes_replay`."""
    try:
        outcome_apply(outcome)
        return True
    except DATABASE_AWAY as exc:
        first_error = type(exc).__name__
    journal = journal_write(outcome)
    logger.warning(
        "reminder %s outcome %s held: the database is away (%s)",
        outcome.reminder_id,
        outcome.status,
        first_error,
    )
    deadline = clock() + settings.REMINDER_OUTCOME_RETRY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        _close_connections()
        if clock() >= deadline:
            logger.error(
                "reminder %s outcome %s still held after %s s; the journal keeps it",
                outcome.reminder_id,
                outcome.status,
                settings.REMINDER_OUTCOME_RETRY_SECONDS,
            )
            return False
        sleep(retry_delay(attempt))
        try:
            outcome_apply(outcome)
        except DATABASE_AWAY:
            continue
        with suppress(FileNotFoundError):
            journal.unlink()
        logger.info(
            "reminder %s outcome %s recorded after %d retries",
            outcome.reminder_id,
            outcome.status,
            attempt,
        )
        return True
