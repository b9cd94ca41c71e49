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

A batch (`reminders_send_batch`) writes its outcomes in one statement at its end
(`outcomes_record`); until then each one is appended, the moment it is known, to the batch's
own journal file (`BatchJournal`, locked while the batch runs). A worker killed mid-batch
leaves that file, and the next task or worker start on the volume records what it holds, so a
message the provider accepted is recorded rather than sent again. The append is not fsynced
(a killed process's writes survive it; a lost machine may lose the last lines, and those rows
are then handled like any row whose worker died). When the database refuses the batch's
statement, each outcome is held exactly as a single one is: one fsynced file each, retried.

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

import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import InterfaceError, InternalError, OperationalError, connection, connections
from django.db.models import F

from scheduler.models import Reminder
from scheduler.unavailable import read_only_server

logger = logging.getLogger(__name__)
Status = Reminder.Status
# Database errors that may pass (a restart, a lost connection, a failover's old primary that
# takes no writes), as opposed to a bug in the query: `_away` says which of them do.
DATABASE_ERRORS = (OperationalError, InterfaceError, InternalError)


def _away(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError)) or read_only_server(exc)


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
    # The row was claimed and left without an attempt at the provider (its batch stopped
    # first): the claim's count in `attempts` is given back, so a row held up by our side
    # never dies of it.
    untried: bool = False

    def to_json(self) -> str:
        # Not dataclasses.asdict, which deep-copies every field: this runs once per send.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("claimed_at", "sent_at", "next_attempt_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)  # a line of an older release has no "untried": False
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
    fields = _unsent_fields(
        outcome.status, outcome.last_error, outcome.next_attempt_at, outcome.untried
    )
    return rows.filter(
        status__in=[Status.SENDING, Status.UNKNOWN], claimed_at=outcome.claimed_at
    ).update(**fields)


def outcomes_apply(outcomes: Sequence[Outcome]) -> int:
    """Write a batch's outcomes: every "sent" one in one statement (each row its own sent_at
    and provider id), and the others alike together, under the same rules as
    `outcome_apply`. Returns how many rows took one."""
    sent = [outcome for outcome in outcomes if outcome.status == Status.SENT]
    applied = _sent_apply(sent) if sent else 0
    # The others alike (the same status, error and retry time for the same claim: a batch of
    # invites superseded by an amendment, say) in one statement each.
    alike: dict[tuple[Any, ...], list[int]] = {}
    for outcome in outcomes:
        if outcome.status != Status.SENT:
            key = (
                outcome.status,
                outcome.last_error,
                outcome.next_attempt_at,
                outcome.claimed_at,
                outcome.untried,
            )
            alike.setdefault(key, []).append(outcome.reminder_id)
    for (status, last_error, next_attempt_at, claimed_at, untried), ids in alike.items():
        applied += Reminder.objects.filter(
            pk__in=ids, status__in=[Status.SENDING, Status.UNKNOWN], claimed_at=claimed_at
        ).update(**_unsent_fields(status, last_error, next_attempt_at, untried))
    return applied


def _unsent_fields(
    status: str, last_error: str, next_attempt_at: dt.datetime | None, untried: bool
) -> dict[str, Any]:
    """What an outcome other than "sent" writes on its row."""
    fields: dict[str, Any] = {"status": status, "last_error": last_error}
    if next_attempt_at is not None:
        fields.update(next_attempt_at=next_attempt_at, enqueued_at=None)
    if untried:
        fields["attempts"] = F("attempts") - 1
    return fields


def _sent_apply(sent: list[Outcome]) -> int:
    # UPDATE … FROM VALUES, written out: the ORM's equivalent (two CASE expressions with a
    # WHEN per row) costs more to compile than the statement costs to run. Postgres and
    # SQLite (3.33 and later) both take this form.
    table = connection.ops.quote_name(Reminder._meta.db_table)
    stamp = "CAST(%s AS timestamp with time zone)" if connection.vendor == "postgresql" else "%s"
    values = ", ".join([f"(%s, {stamp}, %s)"] * len(sent))
    params: list[Any] = []
    for outcome in sent:
        params += [
            outcome.reminder_id,
            connection.ops.adapt_datetimefield_value(outcome.sent_at),
            outcome.provider_message_id,
        ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH accepted (id, sent_at, provider_message_id) AS (VALUES {values}) "  # noqa: S608  # nosec B608  # names and placeholders only
            f"UPDATE {table} SET status = %s, last_error = '', sent_at = accepted.sent_at, "
            "provider_message_id = accepted.provider_message_id "
            f"FROM accepted WHERE {table}.id = accepted.id AND {table}.status <> %s",
            [*params, Status.SENT, Status.SENT],
        )
        return int(cursor.rowcount)


# ----------------------------------------------------------------------------------------
# The journal


def journal_dir() -> Path:
    return Path(settings.REMINDER_OUTCOME_JOURNAL_DIR)


def _journal_path(outcome: Outcome) -> Path:
    stamp = outcome.claimed_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return journal_dir() / f"reminder-{outcome.reminder_id}-{stamp}.json"


def journal_write(outcome: Outcome) -> Path:
    """Keep `outcome` on disk until the row has it; durable when this returns. Raises OSError
    (a full or failing disk) with nothing left behind."""
    folder = journal_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = _journal_path(outcome)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with partial.open("w", encoding="utf-8") as file:
            file.write(outcome.to_json())
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        with suppress(OSError):
            partial.unlink()
        raise
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


class BatchJournal:
    """One batch's outcomes, appended one line each as they become known, in a file of the
    batch's own (`batch-*.jsonl`), locked (flock) for as long as the batch runs so that a
    replay never takes a running batch's outcomes; the kernel drops the lock when the process
    dies, and the file is then the next replay's. Removed once the batch's outcomes are
    recorded. Opened on the first outcome, so a batch that claimed nothing writes nothing.

    `add` raises OSError when the disk refuses (full, failing); the batch then knows its
    outcomes are held in memory only (sweep._send_claimed). What reached the file before
    stays there for a replay should the worker die; `close` never raises for the disk."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._file: Any = None

    def add(self, outcome: Outcome) -> None:
        if self._file is None:
            folder = journal_dir()
            folder.mkdir(parents=True, exist_ok=True)
            name = f"batch-{os.getpid()}-{uuid.uuid4().hex}"
            # Locked under a name no replay looks at, then renamed: never seen unlocked.
            partial = folder / f"{name}.tmp"
            file = partial.open("a", encoding="utf-8")
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
                partial.replace(folder / f"{name}.jsonl")
            except OSError:
                file.close()
                with suppress(OSError):
                    partial.unlink()
                raise
            self._file, self.path = file, folder / f"{name}.jsonl"
        self._file.write(outcome.to_json() + "\n")
        self._file.flush()  # in the kernel: survives this process being killed

    def close(self, *, keep: bool = False) -> None:
        """Remove the file: the batch's outcomes are recorded (or held in files of their
        own); or, with `keep`, leave it, unlocked, for the next replay (the batch could not
        record them)."""
        if self._file is None:
            return
        assert self.path is not None
        if not keep:
            with suppress(FileNotFoundError):
                self.path.unlink()
        # Flushing a line the disk refused fails again here; the lines before it are in the
        # kernel already, and the lock goes with the descriptor either way.
        with suppress(OSError):
            self._file.close()
        self._file = None


def _batch_outcomes(path: Path) -> tuple[Any, list[Outcome]] | None:
    """(the open, locked file, its outcomes), or None while its batch still runs."""
    try:
        file = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    outcomes = []
    for line in file.read().splitlines():
        try:
            outcomes.append(Outcome.from_json(line))
        except (ValueError, TypeError, KeyError):
            # A line cut short: its row is handled as one whose worker died (the lease).
            logger.warning("outbox journal file %s has an unreadable line; skipped", path.name)
    return file, outcomes


def _batches_replay() -> int:
    folder = journal_dir()
    if not folder.is_dir():
        return 0
    settled = 0
    for path in sorted(folder.glob("batch-*.jsonl")):
        found = _batch_outcomes(path)
        if found is None:
            continue
        file, outcomes = found
        try:
            outcomes_apply(outcomes)
        except DATABASE_ERRORS as exc:
            if not _away(exc):
                raise
            file.close()
            _close_connections()
            logger.warning("outbox journal replay waits for the database: %s", type(exc).__name__)
            break
        with suppress(FileNotFoundError):
            path.unlink()
        file.close()
        settled += len(outcomes)
        for outcome in outcomes:
            logger.info(
                "reminder %s outcome %s recorded from the journal",
                outcome.reminder_id,
                outcome.status,
            )
    return settled


def outcomes_replay() -> int:
    """Record every outcome the journal holds; returns how many files were settled. A file
    that cannot be applied now (the database still away) stays for the next replay. A batch's
    file counts one for each outcome it held."""
    settled = _batches_replay()
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
        except DATABASE_ERRORS as exc:
            if not _away(exc):
                raise
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
    for each in connections.all(initialized_only=True):
        if not each.in_atomic_block:
            with suppress(Exception):
                each.close()


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
    return _recorded(
        [outcome],
        lambda: outcome_apply(outcome),
        what=f"reminder {outcome.reminder_id} outcome {outcome.status}",
        sleep=sleep,
        clock=clock,
    )


def outcomes_record(
    outcomes: Sequence[Outcome],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Record a batch's outcomes in one statement (`outcomes_apply`), holding them through a
    database outage exactly as `outcome_record` holds one: each in a fsynced file of its own,
    retried with backoff for REMINDER_OUTCOME_RETRY_SECONDS; True once the rows have them,
    False if the journal keeps them for `outcomes_replay`."""
    if not outcomes:
        return True
    return _recorded(
        outcomes,
        lambda: outcomes_apply(outcomes),
        what=f"{len(outcomes)} outcome(s) of a batch",
        sleep=sleep,
        clock=clock,
    )


def _recorded(
    outcomes: Sequence[Outcome],
    apply: Callable[[], object],
    *,
    what: str,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> bool:
    """`apply` the outcomes; if the database refuses, keep each in a fsynced file of its own
    and try again with backoff for REMINDER_OUTCOME_RETRY_SECONDS. True once `apply` went
    through (any files removed), False if the journal keeps them for `outcomes_replay`.

    A disk that cannot take every file (full, failing) keeps those it took; the others are
    retried from memory all the same, and are lost only if the database stays away for the
    whole period (or the worker stops first): said as an error, since those rows go out
    again after their lease."""
    try:
        apply()
        return True
    except DATABASE_ERRORS as exc:
        if not _away(exc):
            raise
        first_error = type(exc).__name__
    journals: list[Path] = []
    for outcome in outcomes:
        try:
            journals.append(journal_write(outcome))
        except OSError as disk:
            logger.error(
                "%s: %d of %d cannot be held in the journal (%s): held in memory only while "
                "the database is away",
                what,
                len(outcomes) - len(journals),
                len(outcomes),
                os.strerror(disk.errno) if disk.errno else type(disk).__name__,
            )
            break
    for outcome in outcomes:
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
            lost = len(outcomes) - len(journals)
            logger.error(
                "%s still held after %s s; %s",
                what,
                settings.REMINDER_OUTCOME_RETRY_SECONDS,
                f"{lost} in no file of their own: lost unless their batch's file holds them"
                if lost
                else "the journal keeps it",
            )
            return False
        sleep(retry_delay(attempt))
        try:
            apply()
        except DATABASE_ERRORS as exc:
            if not _away(exc):
                raise
            continue
        for journal in journals:
            with suppress(FileNotFoundError):
                journal.unlink()
        logger.info("%s recorded after %d retries", what, attempt)
        return True
