"""A backlog of one kind of outbox row never delays another (issue 13, item 4).

Real Postgres, real Redis and real `celery worker` subprocesses: one worker on the invites
queue, one on the reminders queue. Ten thousand invites fall due a minute before one
reminder; one sweep (in the test process, as beat would run it) hands all of them out, the
invites first, as they fell due. On one shared queue the reminder would wait behind every
invite; on its own it is sent while the invite backlog is still there.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings
from django.utils import timezone

from scheduler.calendars.imip import INVITE_EVENT
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.sweep import reminders_sweep
from tests.integration.test_reminders import (
    Workers,
    _enrolled_visit,
    captured_message_ids,
    forget_queues,
    message_id,
)

Status = Reminder.Status
INVITES = 10_000


@pytest.fixture
def queues(tmp_path: Path, broker: redis.Redis) -> Iterator[dict[str, Workers]]:
    """Workers for the invites and the reminders queue, on queue names of this test's own
    (so no developer's worker takes ids from the test database), deleted afterwards."""
    suffix = uuid.uuid4().hex[:12]
    names = {kind: f"test-{kind}s-{suffix}" for kind in ("invite", "reminder", "webhook")}
    started = {kind: Workers(names[kind], tmp_path, broker) for kind in ("invite", "reminder")}
    try:
        with override_settings(OUTBOX_QUEUES=names):
            yield started
    finally:
        for workers in started.values():
            workers.stop_all()
        forget_queues(broker, list(names.values()))


def _rows(visit: ScheduledVisit, count: int, *, event: str, due_at: dt.datetime) -> list[int]:
    rows = Reminder.objects.bulk_create(
        (
            Reminder(
                participant=visit.participant,
                visit=visit,
                target_key=f"visit:{visit.pk}",
                rule_code=f"{event}-{number:05d}",
                event=event,
                channel="email",
                audience="participant",
                due_at=due_at,
                next_attempt_at=due_at,
                ical_sequence=visit.ical_sequence if event == INVITE_EVENT else None,
            )
            for number in range(count)
        ),
        batch_size=2000,
    )
    return [row.pk for row in rows]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_queues_ten_thousand_invites_do_not_delay_a_due_reminder_beyond_one_sweep(
    import_seed: Callable[[str], Any], queues: dict[str, Workers]
) -> None:
    visit = _enrolled_visit(import_seed("000"))
    now = timezone.now()
    invite_ids = _rows(visit, INVITES, event=INVITE_EVENT, due_at=now - dt.timedelta(minutes=2))
    [reminder_id] = _rows(visit, 1, event="before_visit", due_at=now - dt.timedelta(minutes=1))
    invites, reminders = queues["invite"], queues["reminder"]
    invites.start("inviter")
    reminders.start("reminder")
    invites.wait_ready("inviter")
    reminders.wait_ready("reminder")

    handed_out = reminders_sweep(now=now, batch=INVITES)

    # One sweep hands out every row, in the order they fell due: the reminder last, behind
    # all ten thousand invites it would have waited for on a shared queue.
    assert handed_out == [*invite_ids, reminder_id]
    # A limit for a hung test, not a speed target: what matters is what still waits when the
    # reminder has gone (under `make test` the other xdist worker shares the cores).
    deadline = time.monotonic() + 120
    while not Reminder.objects.filter(pk=reminder_id, status=Status.SENT).exists():
        invites.assert_alive()
        reminders.assert_alive()
        assert time.monotonic() < deadline, f"reminder not sent:\n{reminders.tail()}"
        time.sleep(0.05)
    still_pending = Reminder.objects.filter(pk__in=invite_ids, status=Status.PENDING).count()
    queued = invites.broker.llen(invites.queue)

    # The reminder went while the backlog was still waiting, in the database and in Redis
    # (in messages of 100 rows each): the invites worker had taken a few batches of it while
    # the sweep published. On one shared queue the reminder waits behind all of them.
    assert still_pending > 9_000, still_pending
    assert queued > 90, queued
    assert reminders.sent_by("reminder") == [reminder_id]
    assert captured_message_ids(reminders.var_dir / "mail").count(message_id(reminder_id)) == 1
    # The reminders worker took no invite; the invites worker took no reminder.
    assert reminder_id not in invites.sent_by("inviter")
    assert reminders.broker.llen(reminders.queue) == 0
