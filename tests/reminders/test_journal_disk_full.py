"""The worker's journal disk is full (or fails) while it sends.

The journal only protects an outcome the database cannot take at that moment; the outcome
itself is known, in memory. A disk that refuses to write it must not turn a message the
provider accepted into a row left "sending", which the sweep takes back after its lease and
sends again: on every sweep, for as long as the disk stays full.

The disk here is real: a tmpfs of a few pages, filled up, mounted for the test (root only:
CI runs as root; elsewhere the tests skip).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import override_settings

from scheduler.models import Reminder
from scheduler.outbox.outcomes import outcomes_record, outcomes_replay
from scheduler.outbox.sweep import JOURNAL_NOT_TRIED, reminders_send_batch

# The batch tests' participants (a fixture, used here by name) and their due rows.
from tests.reminders.test_batch import (  # noqa: F401
    NOW,
    claimed_and_sent,
    enrolled,
    message_id,
    outcome_statements_refused,
    rows,
    states,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


PAGE = 4096


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """The outcome journal's folder, on a filesystem with no room left (`_free_one_page`
    makes room for one page: one file of the journal)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: these tests must run)")
        pytest.skip(message)
    try:
        folder = disk / "journal"
        folder.mkdir()
        with (disk / "filler").open("wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * PAGE)
            except OSError as full:
                assert full.errno == errno.ENOSPC
        with override_settings(REMINDER_OUTCOME_JOURNAL_DIR=str(folder)):
            yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # noqa: S607


def _free_one_page(journal: Path) -> None:
    filler = journal.parent / "filler"
    os.truncate(filler, filler.stat().st_size - PAGE)


def test_a_full_journal_disk_records_what_was_sent_and_sends_no_more_of_the_batch(
    enrolled: Any,  # noqa: F811
    full_disk: Path,
    mailoutbox: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = rows(enrolled(1, email="p@example.org", phone="+49 30 1234567"), 3)

    with (
        time_machine.travel(NOW, tick=False),
        caplog.at_level(logging.WARNING, "scheduler.outbox"),
    ):
        results = reminders_send_batch(ids)

    # The first message went before its outcome could be journalled; the others waited.
    assert results == {ids[0]: "sent", ids[1]: "failed", ids[2]: "failed"}
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [message_id(ids[0])]
    retry_at = NOW + dt.timedelta(minutes=1)
    assert states(ids) == {
        ids[0]: ("sent", 1, "", message_id(ids[0])),
        # Not tried: the claim is not counted (a full disk must not use up their attempts).
        ids[1]: ("failed", 0, JOURNAL_NOT_TRIED, ""),
        ids[2]: ("failed", 0, JOURNAL_NOT_TRIED, ""),
    }
    assert set(
        Reminder.objects.filter(pk__in=ids[1:]).values_list("next_attempt_at", flat=True)
    ) == {retry_at}
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said == [
        f"outbox journal cannot be written ({os.strerror(errno.ENOSPC)}): "
        f"1 outcome(s) of this batch recorded without it, 2 row(s) left for a later try"
    ]
    assert "p@example.org" not in caplog.text and "1234567" not in caplog.text
    assert list(full_disk.iterdir()) == []  # the batch's file, empty, is gone


@pytest.mark.django_db(transaction=True)
def test_with_the_database_away_and_the_disk_full_outcomes_wait_in_memory(
    enrolled: Any,  # noqa: F811
    full_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = rows(enrolled(1), 2)
    outcomes = claimed_and_sent(ids)
    refused: list[str] = []
    caplog.clear()  # what enrolling said (its invites' batches met the full disk too)
    with (
        connection.execute_wrapper(outcome_statements_refused(refused, times=2)),
        caplog.at_level(logging.WARNING, "scheduler.outbox"),
    ):
        recorded = outcomes_record(outcomes, sleep=lambda _seconds: None)

    assert (recorded, len(refused)) == (True, 2)
    assert states(ids) == {pk: ("sent", 1, "", message_id(pk)) for pk in ids}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"2 outcome(s) of a batch: 2 of 2 cannot be held in the journal "
        f"({os.strerror(errno.ENOSPC)}): held in memory only while the database is away"
    ]
    # Nothing half-written left behind for a replay to trip on.
    assert list(full_disk.iterdir()) == []


@pytest.mark.django_db(transaction=True)
@override_settings(REMINDER_OUTCOME_RETRY_SECONDS=0)  # the worker gives up waiting at once
def test_a_batch_the_database_never_took_keeps_its_journal_for_the_replay(
    enrolled: Any,  # noqa: F811
    full_disk: Path,
    mailoutbox: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Room for the batch's own file, none for a file an outcome: the database stays away
    for the whole retry period. What was sent must stay on disk for the replay."""
    ids = rows(enrolled(1), 3)
    _free_one_page(full_disk)
    mailoutbox.clear()
    caplog.clear()

    away = outcome_statements_refused([])  # for as long as the worker waits

    with time_machine.travel(NOW, tick=False), connection.execute_wrapper(away):
        results = reminders_send_batch(ids)
    left = sorted(path.suffix for path in full_disk.iterdir())
    replayed = outcomes_replay()  # the next task or worker start, the database back

    assert results == dict.fromkeys(ids, "sent")
    assert left == [".jsonl"]  # the batch's file
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"3 outcome(s) of a batch: 3 of 3 cannot be held in the journal "
        f"({os.strerror(errno.ENOSPC)}): held in memory only while the database is away",
        "3 outcome(s) of a batch still held after 0 s; 3 in no file of their own: lost unless "
        "their batch's file holds them",
    ]
    assert replayed == 3
    assert states(ids) == {pk: ("sent", 1, "", message_id(pk)) for pk in ids}
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [message_id(pk) for pk in ids]
    assert list(full_disk.iterdir()) == []
