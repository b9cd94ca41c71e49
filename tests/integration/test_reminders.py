"""Reminders by Celery workers that never lose one and never send one twice.

Acceptance tests against real Postgres, real Redis and real `celery worker` subprocesses: a
burst of due reminders over two workers, a worker killed with SIGKILL mid-batch, Redis
flushed with messages queued, and an SMS provider failing for a while. The sweep runs in the
test process (as beat would run it), the sends in the workers.

Each test counts twice: by outbox row (status, attempts) and by what left the building (the
messages the workers' file email backend wrote, or the requests the fake Twilio received).
"""

from __future__ import annotations

import datetime as dt
import email
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from scheduler.calendars.events import UID_DOMAIN
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.sms import TwilioSmsBackend
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll
from tests.factories import booked_ahead, participant_for

ROOT = Path(__file__).resolve().parents[2]
# Django's file email backend ends every message with a line of 79 dashes.
MESSAGE_SEPARATOR = b"\n" + b"-" * 79 + b"\n"
SENT_LOG_LINE = re.compile(r"\] reminder (\d+) sent by ")
Status = Reminder.Status


# ----------------------------------------------------------------------------------------
# Workers, queue, outbox rows, captured mail


class Workers:
    """`celery worker` subprocesses on one queue, each in its own process group."""

    def __init__(self, queue: str, var_dir: Path, broker: redis.Redis) -> None:
        self.queue = queue
        self.var_dir = var_dir
        self.broker = broker
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def start(self, name: str, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        database = connection.settings_dict
        password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
        log = self.var_dir / f"{name}.log"
        self.logs[name] = log
        worker_env = {
            **os.environ,
            # The test database, which the test process created and sees.
            "DATABASE_URL": (
                f"postgres://{database['USER']}{password}@{database['HOST']}:"
                f"{database['PORT']}/{database['NAME']}"
            ),
            "CONN_MAX_AGE": "60",  # as deployed (docker-compose)
            # The test process's development key (it decrypts the webhook secrets the test
            # stored): a worker refuses it outside DEBUG.
            "DEBUG": "true",
            # Every message as a file under <VAR_DIR>/mail, readable from this process.
            "VAR_DIR": str(self.var_dir),
            "EMAIL_URL": "filemail://",
            **(env or {}),
        }
        with (self.var_dir / f"{name}.out").open("wb") as output:
            worker = subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "--app",
                    "config",
                    "worker",
                    # One process per worker, so SIGKILL of its group kills the one that
                    # is sending, and two workers are two processes with concurrency 1.
                    "--pool",
                    "solo",
                    "--queues",
                    self.queue,
                    "--hostname",
                    f"{name}-{self.queue}@%h",
                    "--loglevel",
                    "INFO",
                    "--logfile",
                    str(log),
                    "--without-mingle",
                    "--without-gossip",
                ],
                cwd=ROOT,
                env=worker_env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(worker)
        return worker

    def wait_ready(self, *names: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            while " ready." not in _read(self.logs[name]):
                self.assert_alive()
                assert time.monotonic() < deadline, f"worker {name} not ready:\n{self.tail()}"
                time.sleep(0.1)

    def discard_queued(self) -> None:
        """Drop what setup queued before any worker ran (enrollment's welcome and first
        invites)."""
        assert self.running == []
        self.broker.delete(self.queue)

    def assert_alive(self) -> None:
        for worker in self.running:
            assert worker.poll() is None, f"a worker exited ({worker.returncode}):\n{self.tail()}"

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        self.running.remove(worker)

    def stop_all(self) -> None:
        for worker in self.running:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.running:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
        self.running.clear()

    def sent_by(self, name: str) -> list[int]:
        """Reminder ids this worker logged as sent (scheduler.outbox.sweep logs each send)."""
        return [int(pk) for pk in SENT_LOG_LINE.findall(_read(self.logs[name]))]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(_read(path).splitlines()[-lines:])
            for path in sorted(self.var_dir.glob("*.out")) + sorted(self.var_dir.glob("*.log"))
        )


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def forget_queues(broker: redis.Redis, queues: Collection[str]) -> None:
    """Leave a shared Redis clean: duplicate messages the claim turned away may remain, and a
    killed worker's unacknowledged message would come back to its queue in an hour."""
    for queue in queues:
        broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    for tag, unacked in broker.hgetall("unacked").items():
        if json.loads(unacked)[2] in queues:  # kombu's [message, exchange, routing key]
            broker.hdel("unacked", tag)
            broker.zrem("unacked_index", tag)


@contextmanager
def workers_on_a_queue_of_their_own(
    prefix: str, tmp_path: Path, broker: redis.Redis
) -> Iterator[Workers]:
    """Workers on a queue of their own, which this process's publishes (invites and
    reminders included, whose kinds have queues of their own) also go to; deleted after."""
    from config.celery import app

    queue = f"test-{prefix}-{uuid.uuid4().hex[:12]}"
    previous = app.conf.task_default_queue, settings.OUTBOX_QUEUES
    app.conf.task_default_queue = queue
    settings.OUTBOX_QUEUES = {**settings.OUTBOX_QUEUES, "invite": queue, "reminder": queue}
    started = Workers(queue, tmp_path, broker)
    try:
        yield started
    finally:
        started.stop_all()
        app.conf.task_default_queue, settings.OUTBOX_QUEUES = previous
        forget_queues(broker, [queue])


@pytest.fixture
def workers(tmp_path: Path, broker: redis.Redis) -> Iterator[Workers]:
    with workers_on_a_queue_of_their_own("reminders", tmp_path, broker) as started:
        yield started


@pytest.fixture
def visit(import_seed: Callable[[str], Any], workers: Workers) -> ScheduledVisit:
    enrolled = _enrolled_visit(import_seed("000"))
    workers.discard_queued()
    return enrolled


def _enrolled_visit(version: Any, **fields: Any) -> ScheduledVisit:
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 2, 2)},
        birth_date=dt.date(1980, 1, 1),
        email=fields.pop("email", "participant@example.org"),
        **fields,
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    # Enrollment queues the welcome and the first invites, and plans later invites and the
    # reminders in the outbox; these tests count exactly the rows they create, so they start
    # from an empty outbox.
    Reminder.objects.filter(participant=participant).delete()
    visit = ScheduledVisit.objects.filter(participant=participant).order_by("target_date").first()
    assert visit is not None
    # Booked a month from now (the workers' clock is the real one): a reminder of a visit
    # not booked, or begun, is not sent.
    booked_ahead([visit])
    visit.refresh_from_db()
    return visit


def outbox_rows(
    visit: ScheduledVisit, count: int, *, due_at: dt.datetime, channel: str = "email"
) -> list[int]:
    """`count` pending reminders of one visit, due at `due_at` (distinct rule codes)."""
    rows = Reminder.objects.bulk_create(
        Reminder(
            participant=visit.participant,
            visit=visit,
            target_key=f"visit:{visit.pk}",
            rule_code=f"{channel}-{due_at:%H%M%S}-{number:04d}",
            event="before_visit",
            channel=channel,
            audience="participant",
            due_at=due_at,
            next_attempt_at=due_at,
        )
        for number in range(count)
    )
    return [row.pk for row in rows]


def captured_message_ids(mail_dir: Path) -> list[str]:
    """The Message-ID of every message the workers wrote, one entry per message.

    A file can hold several messages (the backend names files by second and object id, and
    appends), so messages are counted by their separators, not by files.
    """
    message_ids = []
    for path in sorted(mail_dir.glob("*.log")):
        for chunk in path.read_bytes().split(MESSAGE_SEPARATOR):
            if chunk.strip():
                message_ids.append(str(email.message_from_bytes(chunk)["Message-ID"]))
    return message_ids


def message_id(reminder_id: int) -> str:
    return f"<reminder-{reminder_id}@{UID_DOMAIN}>"


# How long a test waits for the workers to send everything: a limit for a hung test, not a
# speed target (bench/reminders.py measures speed). A thousand sends take about 13 s on a quiet
# 2-core machine; under `make test` the other xdist worker shares the cores.
SWEEP_PATIENCE = 300


def sweep_until_done(
    reminder_ids: list[int], workers: Workers, *, within: float, every: float = 0.5
) -> list[list[int]]:
    """Run the sweep as beat would (faster) until every row is sent or dead; its batches."""
    batches: list[list[int]] = []
    deadline = time.monotonic() + within
    while True:
        open_rows = (
            Reminder.objects.filter(pk__in=reminder_ids)
            .exclude(status__in=[Status.SENT, Status.DEAD])
            .count()
        )
        if open_rows == 0:
            return batches
        workers.assert_alive()
        assert time.monotonic() < deadline, f"{open_rows} reminders still open:\n{workers.tail()}"
        batches.append(reminders_sweep(now=timezone.now()))
        time.sleep(every)


def statuses(reminder_ids: list[int]) -> Counter[tuple[str, int]]:
    """How many rows have each (status, attempts)."""
    return Counter(Reminder.objects.filter(pk__in=reminder_ids).values_list("status", "attempts"))


# ----------------------------------------------------------------------------------------
# 1. A thousand due at once, two workers


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_reminders_thousand_due_at_once_two_workers_send_each_exactly_once(
    visit: ScheduledVisit, workers: Workers
) -> None:
    reminder_ids = outbox_rows(visit, 1000, due_at=timezone.now() - dt.timedelta(minutes=1))
    workers.start("w1")
    workers.start("w2")
    workers.wait_ready("w1", "w2")

    batches = sweep_until_done(reminder_ids, workers, within=SWEEP_PATIENCE)

    assert sorted(batches[0]) == sorted(reminder_ids)  # one sweep handed all of them out
    assert statuses(reminder_ids) == Counter({(Status.SENT, 1): 1000})
    assert (
        Reminder.objects.filter(pk__in=reminder_ids).exclude(provider_message_id="").count() == 1000
    )
    message_ids = captured_message_ids(workers.var_dir / "mail")
    assert len(message_ids) == 1000
    assert set(message_ids) == {message_id(pk) for pk in reminder_ids}
    # Both processes sent, and no reminder was sent by both.
    by_w1, by_w2 = workers.sent_by("w1"), workers.sent_by("w2")
    assert len(by_w1) > 0 and len(by_w2) > 0
    assert sorted(by_w1 + by_w2) == sorted(reminder_ids)


# ----------------------------------------------------------------------------------------
# 2. A worker killed mid-batch


def journalled_as_sent(journal_dir: Path) -> set[int]:
    """Rows a running (or killed) batch has journalled as accepted by the provider."""
    rows = set()
    for path in journal_dir.glob("batch-*.jsonl"):
        for line in _read(path).splitlines():
            outcome = json.loads(line)
            if outcome["status"] == Status.SENT:
                rows.add(outcome["reminder_id"])
    return rows


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_reminders_worker_killed_mid_batch_each_sent_exactly_once_after_restart(
    visit: ScheduledVisit, workers: Workers
) -> None:
    reminder_ids = outbox_rows(visit, 200, due_at=timezone.now() - dt.timedelta(minutes=1))
    mail_dir = workers.var_dir / "mail"
    journal_dir = workers.var_dir / "outbox-journal"  # the default, under the shared VAR_DIR
    first = workers.start("first")
    workers.wait_ready("first")
    assert sorted(reminders_sweep()) == sorted(reminder_ids)  # two batches of 100

    # Kill the worker in the middle of a batch: its rows claimed, some of their messages
    # gone (and journalled, their outcome not yet on the rows), the rest not sent yet.
    # Freeze it, look, and kill it there, or let it run on a moment and look again. (Killed
    # between the provider's acceptance and the journal line, that one row would be sent
    # again as the same message: see reminders_sweep.)
    deadline = time.monotonic() + 60
    while True:
        workers.assert_alive()
        assert time.monotonic() < deadline, f"never caught a batch in flight:\n{workers.tail()}"
        os.killpg(first.pid, signal.SIGSTOP)
        time.sleep(0.03)  # stopped for sure, and any statement it had sent has landed
        in_flight = set(
            Reminder.objects.filter(pk__in=reminder_ids, status=Status.SENDING).values_list(
                "pk", flat=True
            )
        )
        captured = {int(mid.split("-")[1].split("@")[0]) for mid in captured_message_ids(mail_dir)}
        journalled = journalled_as_sent(journal_dir)
        gone_unrecorded = in_flight & captured
        if gone_unrecorded and in_flight - captured and gone_unrecorded <= journalled:
            workers.kill(first)
            break
        os.killpg(first.pid, signal.SIGCONT)
        time.sleep(0.003)
    not_sent = in_flight - captured
    sent_before_restart = Reminder.objects.filter(pk__in=reminder_ids, status=Status.SENT).count()
    assert sent_before_restart + len(gone_unrecorded) + len(not_sent) <= 200

    workers.start("second")
    with override_settings(REMINDER_REQUEUE_AFTER_SECONDS=2, REMINDER_SENDING_TIMEOUT_SECONDS=3):
        batches = sweep_until_done(reminder_ids, workers, within=60)

    # The rows whose messages had gone are recorded from the killed batch's journal (the
    # second worker replays it when it starts), never sent again; the claimed rows whose
    # messages had not gone are taken back after the lease and sent, once, on a second try.
    assert not_sent <= {pk for batch in batches for pk in batch}  # re-claimed by the sweep
    assert statuses(reminder_ids) == Counter(
        {(Status.SENT, 1): 200 - len(not_sent), (Status.SENT, 2): len(not_sent)}
    )
    assert (
        set(Reminder.objects.filter(pk__in=reminder_ids, attempts=2).values_list("pk", flat=True))
        == not_sent
    )
    message_ids = captured_message_ids(mail_dir)
    assert len(message_ids) == 200
    assert set(message_ids) == {message_id(pk) for pk in reminder_ids}
    assert list(journal_dir.glob("batch-*")) == []
    assert "outcome sent recorded from the journal" in _read(workers.logs["second"])


# ----------------------------------------------------------------------------------------
# 3. Redis flushed with messages queued


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_reminders_redis_flushed_with_messages_queued_all_sent_once_after_recovery(
    visit: ScheduledVisit, workers: Workers, broker: redis.Redis
) -> None:
    now = timezone.now()
    due_ids = outbox_rows(visit, 300, due_at=now - dt.timedelta(minutes=1))
    future_ids = outbox_rows(visit, 300, due_at=now + dt.timedelta(seconds=5))
    all_ids = due_ids + future_ids

    assert sorted(reminders_sweep(now=now)) == sorted(due_ids)
    assert broker.llen(workers.queue) == 3  # three batches of 100 rows
    # Everything Redis held is gone: the queued messages and kombu's bindings. (FLUSHDB of
    # the broker's database: all Celery keeps is there, and a developer's shared Redis keeps
    # its other databases.)
    broker.flushdb()
    assert broker.llen(workers.queue) == 0
    assert broker.dbsize() == 0

    workers.start("w1")
    workers.start("w2")
    with override_settings(REMINDER_REQUEUE_AFTER_SECONDS=2, REMINDER_SENDING_TIMEOUT_SECONDS=30):
        batches = sweep_until_done(all_ids, workers, within=SWEEP_PATIENCE)

    assert {pk for batch in batches for pk in batch} == set(all_ids)  # the sweep re-sent them
    assert statuses(all_ids) == Counter({(Status.SENT, 1): 600})
    message_ids = captured_message_ids(workers.var_dir / "mail")
    assert len(message_ids) == 600
    assert set(message_ids) == {message_id(pk) for pk in all_ids}


# ----------------------------------------------------------------------------------------
# 4. The SMS provider fails for a while


class FakeTwilio:
    """Twilio's Messages API on 127.0.0.1: HTTP 500 for the first `failures` requests, then
    201 with a new message sid. Records every request."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                with fake.lock:
                    failing = len(fake.requests) < fake.failures
                    sid = "" if failing else f"SM{uuid.uuid4().hex}"
                    fake.requests.append(
                        {
                            "at": time.time(),
                            "path": self.path,
                            "to": form["To"][0],
                            "from": form["From"][0],
                            "status": 500 if failing else 201,
                            "sid": sid,
                        }
                    )
                # Twilio's own error body for the Messages API (the legacy format).
                body = (
                    {"code": 20500, "message": "Internal Server Error", "status": 500}
                    if failing
                    else {"sid": sid, "status": "queued", "to": form["To"][0]}
                )
                payload = json.dumps(body).encode()
                self.send_response(500 if failing else 201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTwilio:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class LocalTwilioSmsBackend(TwilioSmsBackend):
    """The production Twilio backend and Twilio's own HTTP client, only sending to the URL in
    FAKE_TWILIO_URL instead of https://api.twilio.com (used by the worker, by SMS_BACKEND)."""

    def __init__(self) -> None:
        from twilio.http.http_client import TwilioHttpClient

        class ToFakeTwilio(TwilioHttpClient):
            def request(self, method: str, url: str, **kwargs: Any) -> Any:
                url = url.replace("https://api.twilio.com", os.environ["FAKE_TWILIO_URL"], 1)
                return super().request(method, url, **kwargs)

        http_client = ToFakeTwilio()
        assert http_client.session is not None
        http_client.session.trust_env = False  # no proxy from the environment for 127.0.0.1
        super().__init__(http_client=http_client)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_reminders_sms_provider_failing_backs_off_sends_none_twice_and_marks_dead(
    import_seed: Callable[[str], Any], workers: Workers
) -> None:
    version = import_seed("000")
    phones = [f"+1202555{number:04d}" for number in range(8)]
    reminder_ids = [
        outbox_rows(
            _enrolled_visit(version, phone=phone, reminder_channels=["email", "sms"]),
            1,
            due_at=timezone.now() - dt.timedelta(minutes=1),
            channel="sms",
        )[0]
        for phone in phones
    ]
    workers.discard_queued()
    account_sid = "AC" + "0" * 32
    # 8 reminders, 3 attempts each, one worker (so requests come one at a time): attempts 1
    # and 2 all fail (16 requests), then 4 more failures make 4 reminders dead on their last
    # attempt while the provider recovers for the other 4.
    with FakeTwilio(failures=20) as twilio:
        workers.start(
            "w1",
            env={
                "SMS_BACKEND": f"{__name__}.LocalTwilioSmsBackend",
                "FAKE_TWILIO_URL": twilio.url,
                "TWILIO_ACCOUNT_SID": account_sid,
                "TWILIO_AUTH_TOKEN": "test-token",
                "TWILIO_FROM_NUMBER": "+12025550199",
                "REMINDER_BACKOFF_BASE_SECONDS": "1",
                "REMINDER_MAX_ATTEMPTS": "3",
            },
        )
        workers.wait_ready("w1")
        sweep_until_done(reminder_ids, workers, within=60, every=0.2)
        requests = list(twilio.requests)

    assert statuses(reminder_ids) == Counter({(Status.SENT, 3): 4, (Status.DEAD, 3): 4})
    assert {r["path"] for r in requests} == {f"/2010-04-01/Accounts/{account_sid}/Messages.json"}
    assert {r["from"] for r in requests} == {"+12025550199"}
    assert Counter(r["status"] for r in requests) == Counter({500: 20, 201: 4})
    # Every reminder was tried exactly three times, in order. That each try waited for its
    # backoff is checked without a clock: a claim requires next_attempt_at <= now, and the
    # dead rows keep the backoff their last failure set (base 1 s x 2^2 = 4 s after the claim).
    # The arithmetic itself is tested exactly, with a frozen clock, in tests/reminders.
    for phone in phones:
        tries = [r["at"] for r in requests if r["to"] == phone]
        assert len(tries) == 3, phone
        assert tries == sorted(tries), phone
    dead_rows = Reminder.objects.filter(pk__in=reminder_ids, status=Status.DEAD)
    assert {
        row.next_attempt_at - row.claimed_at for row in dead_rows if row.claimed_at is not None
    } == {dt.timedelta(seconds=4)}
    assert all(row.claimed_at is not None for row in dead_rows)
    # Accepted once each, and the row knows the provider's id.
    accepted = {r["to"]: r["sid"] for r in requests if r["status"] == 201}
    sent = dict(
        Reminder.objects.filter(pk__in=reminder_ids, status=Status.SENT).values_list(
            "participant__phone", "provider_message_id"
        )
    )
    assert sent == accepted
    dead = list(
        Reminder.objects.filter(pk__in=reminder_ids, status=Status.DEAD).values_list(
            "participant__phone", "last_error", "sent_at", "provider_message_id"
        )
    )
    assert len(dead) == 4
    for phone, last_error, sent_at, provider_message_id in dead:
        assert phone not in accepted
        assert (last_error, sent_at, provider_message_id) == (
            "Twilio 500: Unable to create record: Internal Server Error",
            None,
            "",
        )
