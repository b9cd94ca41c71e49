"""Each kind of outbox row goes to a queue of its own (issue 13, item 4).

What reaches the broker is recorded at the task's `apply_async` (the broker is the outside
world here; tests/integration/test_queues.py runs the same routing over real Redis and
workers). Which rows, which task and which queue are the outbox's own decisions, unmocked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import current_app
from django.conf import settings
from django.utils import timezone

from scheduler.calendars.imip import INVITE_EVENT
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.dispatch import SEND_TASK, queue_for, send_after_commit
from scheduler.outbox.plan import WELCOME_EVENT
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll
from tests.factories import participant_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_queue_for_sends_each_kind_to_its_queue() -> None:
    routes = {
        (channel, event): queue_for(channel=channel, event=event)
        for channel, event in [
            ("email", INVITE_EVENT),
            ("email", "before_visit"),
            ("sms", "before_visit"),
            ("in_app", "window_opens"),
            ("email", WELCOME_EVENT),
            ("webhook", "visit.booked"),
            ("webhook", INVITE_EVENT),
        ]
    }

    assert settings.OUTBOX_QUEUES == {
        "invite": "invites",
        "reminder": "reminders",
        "webhook": "webhooks",
    }
    assert routes == {
        ("email", INVITE_EVENT): "invites",
        ("email", "before_visit"): "reminders",
        ("sms", "before_visit"): "reminders",
        ("in_app", "window_opens"): "reminders",
        ("email", WELCOME_EVENT): "reminders",
        ("webhook", "visit.booked"): "webhooks",
        ("webhook", INVITE_EVENT): "webhooks",
    }


def test_every_outbox_queue_has_a_worker_in_compose_and_on_the_laptop() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    consumed_in_compose = {
        name: command[command.index("--queues") + 1].split(",")
        for name, service in compose["services"].items()
        if (command := service.get("command") or [])[3:4] == ["worker"]
    }
    procfile = (ROOT / "Procfile.dev").read_text(encoding="utf-8")
    laptop = procfile.split("--queues ", 1)[1].split(" ", 1)[0].split(",")

    assert consumed_in_compose == {
        "worker": ["control", "celery", "reminders"],
        "invite-worker": ["invites"],
        "webhook-worker": ["webhooks"],
    }
    assert laptop == ["control", "celery", "reminders", "invites", "webhooks"]


Published = tuple[str, Any, "str | None"]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Published]]:
    """(task, its argument: a row id, or the list of a batch's ids, queue) of every publish,
    in order."""
    sent: list[Published] = []
    for name in ("scheduler.send_reminder", "scheduler.send_reminders", "scheduler.send_webhook"):
        task = current_app.tasks[name]

        def record(args: tuple[Any], queue: str | None = None, *, _name: str = name) -> None:
            sent.append((_name, args[0], queue))

        monkeypatch.setattr(task, "apply_async", record)
    yield sent


@pytest.fixture
def visit(import_seed: Any) -> ScheduledVisit:
    participant = participant_for(
        import_seed("000"), anchors={"day1": dt.date(2026, 2, 2)}, email="p@example.org"
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    Reminder.objects.filter(participant=participant).delete()
    first = ScheduledVisit.objects.filter(participant=participant).order_by("target_date").first()
    assert first is not None
    return first


def _row(visit: ScheduledVisit, code: str, *, event: str, channel: str, due_at: dt.datetime) -> int:
    return Reminder.objects.create(
        participant=visit.participant,
        visit=visit,
        target_key=f"visit:{visit.pk}",
        rule_code=code,
        event=event,
        channel=channel,
        audience="participant",
        due_at=due_at,
        next_attempt_at=due_at,
    ).pk


def test_sweep_publishes_each_kind_to_its_queue_in_the_order_due(
    visit: ScheduledVisit,
    published: list[Published],
    django_capture_on_commit_callbacks: Any,
) -> None:
    now = timezone.now()
    minute = dt.timedelta(minutes=1)
    invite_1 = _row(visit, "I1", event=INVITE_EVENT, channel="email", due_at=now - 4 * minute)
    reminder = _row(visit, "R1", event="before_visit", channel="sms", due_at=now - 3 * minute)
    invite_2 = _row(visit, "I2", event=INVITE_EVENT, channel="email", due_at=now - 2 * minute)
    hook = _row(visit, "W1", event="visit.booked", channel="webhook", due_at=now - minute)
    _row(visit, "LATER", event="before_visit", channel="email", due_at=now + minute)

    with django_capture_on_commit_callbacks(execute=True):
        handed_out = reminders_sweep(now=now)

    assert handed_out == [invite_1, reminder, invite_2, hook]
    # One message per batch of a queue, the batch in the order its rows fell due; webhooks
    # one row a message (a slow receiver holds up one row, not a batch).
    assert published == [
        ("scheduler.send_reminders", [invite_1, invite_2], "invites"),
        ("scheduler.send_reminders", [reminder], "reminders"),
        ("scheduler.send_webhook", hook, "webhooks"),
    ]


def test_sweep_batch_is_per_kind_so_invites_never_crowd_out_a_due_reminder(
    visit: ScheduledVisit,
    published: list[Published],
    django_capture_on_commit_callbacks: Any,
) -> None:
    now = timezone.now()
    earlier = now - dt.timedelta(minutes=5)
    invites = [
        _row(visit, f"I{n}", event=INVITE_EVENT, channel="email", due_at=earlier) for n in range(3)
    ]
    reminder = _row(visit, "R1", event="before_visit", channel="email", due_at=now)

    with django_capture_on_commit_callbacks(execute=True):
        handed_out = reminders_sweep(now=now, batch=2)

    assert handed_out == [invites[0], invites[1], reminder]
    assert [(ids, queue) for _task, ids, queue in published] == [
        ([invites[0], invites[1]], "invites"),
        ([reminder], "reminders"),
    ]
    assert list(Reminder.objects.filter(enqueued_at__isnull=True).values_list("pk", flat=True)) == [
        invites[2]
    ]


def test_send_after_commit_without_a_queue_reads_each_rows_kind(
    visit: ScheduledVisit,
    published: list[Published],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # How the planner publishes invites due at once (scheduler/outbox/plan.py): by task only.
    now = timezone.now()
    invite = _row(visit, "I1", event=INVITE_EVENT, channel="email", due_at=now)
    welcome = _row(visit, "WELCOME", event=WELCOME_EVENT, channel="email", due_at=now)

    with django_capture_on_commit_callbacks(execute=True):
        send_after_commit(SEND_TASK, [invite, welcome])

    assert published == [
        ("scheduler.send_reminders", [invite], "invites"),
        ("scheduler.send_reminders", [welcome], "reminders"),
    ]


def test_a_sweep_publishes_batches_of_at_most_reminder_batch_size_ids_per_queue(
    visit: ScheduledVisit,
    published: list[Published],
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    settings.REMINDER_BATCH_SIZE = 2
    now = timezone.now()
    second = dt.timedelta(seconds=1)
    reminders = [
        _row(visit, f"R{n}", event="before_visit", channel="email", due_at=now - (10 - n) * second)
        for n in range(5)
    ]
    invite = _row(visit, "I1", event=INVITE_EVENT, channel="email", due_at=now)

    with django_capture_on_commit_callbacks(execute=True):
        reminders_sweep(now=now)

    assert published == [
        ("scheduler.send_reminders", reminders[0:2], "reminders"),
        ("scheduler.send_reminders", reminders[2:4], "reminders"),
        ("scheduler.send_reminders", reminders[4:5], "reminders"),
        ("scheduler.send_reminders", [invite], "invites"),
    ]
