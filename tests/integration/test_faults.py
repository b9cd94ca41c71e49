"""Exactly once under faults: real Postgres, real Redis, real `celery worker` subprocesses.

The faults are made in this process, never to the machine's shared services:
- the database "restarts" while the outcome is written: the worker reaches Postgres through a
  TCP proxy of this test, cut (every connection dropped, new ones refused) the moment the fake
  mail server has accepted the message, and restored a few seconds later;
- the worker is SIGKILLed after the provider accepted: the fake mail server kills its process
  group once it has answered 250 to the message (the worker then waits for the answer to
  QUIT); the fake Twilio kills it after creating the message, before answering;
- Redis is away during a booking: this process publishes through a TCP proxy of this test,
  which is down while the coordinator books.

What "exactly once" means here, counted at the receiving end: an email reaches the mail
server at most once per Message-ID (after a worker died mid-send it may arrive again, as the
very same message, which the receiver de-duplicates); an SMS reaches Twilio at most once (a
row whose worker died mid-send is parked as "unknown" for a person, never re-sent).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from scheduler import unavailable
from scheduler.access import site_today
from scheduler.api.credentials import site_system_credentials_create
from scheduler.calendars.events import UID_DOMAIN
from scheduler.calendars.feeds import feed_create, feed_path
from scheduler.display import site_time
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll
from tests.factories import booked_ahead, member, participant_for
from tests.integration.test_reminders import (
    Workers,
    captured_message_ids,
    workers_on_a_queue_of_their_own,
)

Status = Reminder.Status


# ----------------------------------------------------------------------------------------
# A TCP proxy this test can cut and restore


class TcpProxy:
    """127.0.0.1:<port> → upstream. `cut()` drops every connection and refuses new ones (the
    port closed, as a restarting server's is); `restore()` listens on the same port again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            if listener is not None:
                listener.close()
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    server.close()
                    return
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# ----------------------------------------------------------------------------------------
# A mail server that accepts, then lets the test act before the client hears the end


class FakeSmtp:
    """An SMTP server on 127.0.0.1 that accepts every message (250 after DATA) and records it.
    `on_accepted` runs once, when the first message has been received whole and recorded,
    before the server answers 250: the provider has the message, and the client is blocked
    before it knows (a worker sends a batch's emails over one connection, so QUIT comes only
    at the end of its batch)."""

    def __init__(self, on_accepted: Callable[[], None]) -> None:
        self.messages: list[bytes] = []
        self.accepted = threading.Event()
        fake = self

        class Session(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())
                self.wfile.flush()

            def handle(self) -> None:
                self.reply("220 fake-smtp ready")
                while line := self.rfile.readline():
                    verb = line.decode(errors="replace").strip().split(" ")[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 fake-smtp")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        body = []
                        while (data := self.rfile.readline()) not in (b".\r\n", b""):
                            body.append(data[1:] if data.startswith(b"..") else data)
                        fake.messages.append(b"".join(body))
                        if not fake.accepted.is_set():
                            fake.accepted.set()
                            on_accepted()
                        self.reply("250 2.0.0 accepted")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # MAIL, RCPT, RSET, NOOP
                        self.reply("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
        self.server.daemon_threads = True
        self.url = f"smtp://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def message_ids(self) -> list[str]:
        return [str(email.message_from_bytes(m)["Message-ID"]) for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class KillingTwilio:
    """Twilio's Messages API on 127.0.0.1: creates the message (records it), then runs
    `after_accepting` (the test kills the worker) before it answers."""

    def __init__(self, after_accepting: Callable[[], None]) -> None:
        self.created: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                sid = f"SM{uuid.uuid4().hex}"
                fake.created.append({"to": form["To"][0], "sid": sid})
                after_accepting()
                payload = f'{{"sid": "{sid}", "status": "queued"}}'.encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def workers(tmp_path: Path, broker: redis.Redis) -> Iterator[Workers]:
    with workers_on_a_queue_of_their_own("faults", tmp_path, broker) as started:
        yield started


def database_url(*, port: int | None = None) -> str:
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    return (
        f"postgres://{database['USER']}{password}@{database['HOST']}:"
        f"{port or database['PORT']}/{database['NAME']}"
    )


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "REMINDER_OUTCOME_JOURNAL_DIR": str(tmp_path / "journal"),
        "REMINDER_OUTCOME_RETRY_SECONDS": "120",
        **extra,
    }


def enrolled_visit(version: Any, **fields: Any) -> ScheduledVisit:
    """A participant enrolled today (the real today: workers run on the real clock) whose
    Day 1 is three weeks away; their first visit, with an empty outbox."""
    today = timezone.now().date()
    participant = participant_for(
        version,
        anchors={"day1": today + dt.timedelta(days=21)},
        birth_date=dt.date(1980, 1, 1),
        email="participant@example.org",
        **fields,
    )
    participant_enroll(participant=participant, on=today)
    Reminder.objects.filter(participant=participant).delete()
    visit = ScheduledVisit.objects.filter(participant=participant).order_by("target_date").first()
    assert visit is not None
    return visit


def reminder_row(visit: ScheduledVisit, channel: str) -> Reminder:
    """A participant reminder due a minute ago about `visit`, booked in three weeks for it (a
    reminder of a visit not booked is not sent)."""
    booked_ahead([visit], days=21)
    due = timezone.now() - dt.timedelta(minutes=1)
    return Reminder.objects.create(
        participant=visit.participant,
        visit=visit,
        target_key=f"visit:{visit.pk}",
        rule_code=f"{channel}-fault",
        event="before_visit",
        channel=channel,
        audience="participant",
        due_at=due,
        next_attempt_at=due,
    )


def wait_for(condition: Callable[[], bool], workers: Workers, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{workers.tail()}"
        time.sleep(0.1)


def row_state(reminder: Reminder) -> tuple[str, int, str]:
    reminder.refresh_from_db()
    return (reminder.status, reminder.attempts, reminder.provider_message_id)


# ----------------------------------------------------------------------------------------
# (a) The database goes away between the provider's acceptance and recording the outcome


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_faults_database_away_after_acceptance_the_email_goes_once_and_is_recorded_later(
    import_seed: Callable[[str], Any], workers: Workers, tmp_path: Path
) -> None:
    visit = enrolled_visit(import_seed("000"))
    workers.discard_queued()
    reminder = reminder_row(visit, "email")
    database = connection.settings_dict
    proxy = TcpProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    smtp = FakeSmtp(on_accepted=proxy.cut)
    journal = tmp_path / "journal"
    try:
        worker = workers.start(
            "w1",
            env=worker_env(
                tmp_path, DATABASE_URL=database_url(port=proxy.port), EMAIL_URL=smtp.url
            ),
        )
        workers.wait_ready("w1")
        assert reminders_sweep() == [reminder.pk]

        wait_for(smtp.accepted.is_set, workers, within=60, what="the mail server got nothing")
        # The database is away: the worker holds the outcome, on disk, and keeps trying.
        wait_for(
            lambda: len(list(journal.glob("reminder-*.json"))) == 1,
            workers,
            within=30,
            what="the held outcome never reached the journal",
        )
        time.sleep(3)
        held = row_state(reminder)
        # Beat's sweep meanwhile finds nothing to send (the claim's lease still holds).
        assert reminders_sweep() == []
        assert worker.poll() is None
        proxy.restore()

        wait_for(
            lambda: row_state(reminder)[0] == Status.SENT,
            workers,
            within=60,
            what="the outcome was never recorded",
        )
        for _ in range(3):
            assert reminders_sweep() == []
            time.sleep(0.5)
    finally:
        proxy.close()
        smtp.close()

    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    assert held == (Status.SENDING, 1, "")
    assert smtp.message_ids() == [message_id]
    assert row_state(reminder) == (Status.SENT, 1, message_id)
    assert list(journal.glob("reminder-*.json")) == []
    log = (workers.var_dir / "w1.log").read_text()
    assert f"reminder {reminder.pk} outcome sent held: the database is away" in log
    assert f"reminder {reminder.pk} sent by email" in log


# ----------------------------------------------------------------------------------------
# (b) The worker is killed after the provider accepted


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_faults_worker_killed_after_smtp_accepted_resends_the_same_message_id_only(
    import_seed: Callable[[str], Any], workers: Workers, tmp_path: Path
) -> None:
    visit = enrolled_visit(import_seed("000"))
    workers.discard_queued()
    reminder = reminder_row(visit, "email")
    killed = threading.Event()
    first: list[subprocess.Popen[bytes]] = []

    def kill_the_sender() -> None:
        if not killed.is_set():
            os.killpg(first[0].pid, signal.SIGKILL)
            killed.set()

    smtp = FakeSmtp(on_accepted=kill_the_sender)
    env = worker_env(tmp_path, EMAIL_URL=smtp.url)
    try:
        first.append(workers.start("first", env=env))
        workers.wait_ready("first")
        assert reminders_sweep() == [reminder.pk]
        assert killed.wait(60), workers.tail()
        first[0].wait(timeout=30)
        workers.running.remove(first[0])
        assert row_state(reminder) == (Status.SENDING, 1, "")

        workers.start("second", env=env)
        workers.wait_ready("second")
        with override_settings(REMINDER_SENDING_TIMEOUT_SECONDS=2):
            time.sleep(2.5)
            assert reminders_sweep() == [reminder.pk]  # lease expired: email goes again
            wait_for(
                lambda: row_state(reminder)[0] == Status.SENT,
                workers,
                within=60,
                what="the re-send was never recorded",
            )
            for _ in range(3):
                assert reminders_sweep() == []
                time.sleep(0.5)
    finally:
        smtp.close()

    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    # Twice on the wire, once per Message-ID: the second copy is the same message, which the
    # receiver de-duplicates. Counted by Message-ID: 0 duplicates.
    assert smtp.message_ids() == [message_id, message_id]
    assert len(set(smtp.message_ids())) == 1
    assert row_state(reminder) == (Status.SENT, 2, message_id)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_faults_worker_killed_after_twilio_accepted_parks_the_sms_as_unknown_none_resent(
    import_seed: Callable[[str], Any], workers: Workers, tmp_path: Path
) -> None:
    visit = enrolled_visit(import_seed("000"), phone="+12025550123", reminder_channels=["sms"])
    workers.discard_queued()
    reminder = reminder_row(visit, "sms")
    first: list[subprocess.Popen[bytes]] = []

    def kill_the_sender() -> None:
        os.killpg(first[0].pid, signal.SIGKILL)

    twilio = KillingTwilio(after_accepting=kill_the_sender)
    env = worker_env(
        tmp_path,
        SMS_BACKEND="tests.integration.test_reminders.LocalTwilioSmsBackend",
        FAKE_TWILIO_URL=twilio.url,
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="test-token",
        TWILIO_FROM_NUMBER="+12025550199",
    )
    try:
        first.append(workers.start("first", env=env))
        workers.wait_ready("first")
        assert reminders_sweep() == [reminder.pk]
        first[0].wait(timeout=60)
        workers.running.remove(first[0])
        assert row_state(reminder) == (Status.SENDING, 1, "")

        workers.start("second", env=env)
        workers.wait_ready("second")
        with override_settings(
            REMINDER_SENDING_TIMEOUT_SECONDS=2, REMINDER_REQUEUE_AFTER_SECONDS=1
        ):
            time.sleep(2.5)
            for _ in range(5):
                assert reminders_sweep() == []
                time.sleep(0.5)
    finally:
        twilio.close()

    reminder.refresh_from_db()
    assert (reminder.status, reminder.attempts, reminder.sent_at) == (Status.UNKNOWN, 1, None)
    assert [created["to"] for created in twilio.created] == ["+12025550123"]  # none re-sent


# ----------------------------------------------------------------------------------------
# (c) Redis is away while a coordinator books


def publish_through(url: str) -> None:
    """Make this process's Celery publish to `url` (its producer pool is per broker URL)."""
    from config.celery import app

    app.conf.broker_url = url
    app.amqp._producer_pool = None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_faults_redis_away_during_a_booking_saves_it_shows_success_and_the_sweep_invites_once(
    import_seed: Callable[[str], Any],
    workers: Workers,
    tmp_path: Path,
    client: Any,
    django_user_model: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = import_seed("000")
    visit = enrolled_visit(version)
    workers.discard_queued()
    coordinator = django_user_model.objects.create_user("coordinator-faults", is_staff=True)
    member(coordinator, trial=version.trial, site=visit.participant.site)
    client.force_login(coordinator)
    broker_url = settings.CELERY_BROKER_URL
    redis_address = redis.connection.parse_url(broker_url)
    proxy = TcpProxy((redis_address.get("host", "127.0.0.1"), int(redis_address.get("port", 6379))))
    proxied_url = broker_url.replace(f":{redis_address.get('port', 6379)}/", f":{proxy.port}/", 1)
    publish_through(proxied_url)
    try:
        workers.start("w1", env=worker_env(tmp_path))
        workers.wait_ready("w1")
        day = max(visit.window_start, site_today(visit.participant.site) + dt.timedelta(days=1))
        assert day <= visit.window_end
        proxy.cut()  # Redis "stops"

        started = time.monotonic()
        booked = client.post(
            reverse("admin:scheduler_scheduledvisit_book", args=[visit.pk]),
            {
                "local_date": day.isoformat(),
                "local_time": "10:00",
                "version": str(visit.version),
                "reason": "",
                "_confirm": "1",
            },
        )
        took = time.monotonic() - started
        page = client.get(booked["Location"])
        visit.refresh_from_db()
        invite = Reminder.objects.get(visit=visit, event="invite")
        waiting = (invite.status, invite.enqueued_at)

        proxy.restore()  # Redis is back
        deadline = time.monotonic() + 60
        while row_state(invite)[0] != Status.SENT:
            assert time.monotonic() < deadline, workers.tail()
            reminders_sweep()
            time.sleep(0.5)
        for _ in range(3):
            assert reminders_sweep() == []
            time.sleep(0.5)
    finally:
        publish_through(broker_url)
        proxy.close()

    assert booked.status_code == 302
    assert page.status_code == 200
    [said] = [str(m) for m in page.context["messages"]]
    assert said.startswith(
        f"{visit.code} booked for {site_time(visit.booked_start, visit.participant.site)}; "
    )
    assert visit.booked_date == day
    assert [r.getMessage() for r in caplog.records if r.name == "scheduler.outbox.dispatch"] == [
        f"broker unavailable (OperationalError): 1 outbox row(s) left for the sweep, "
        f"first id {invite.pk}"
    ]
    assert waiting == (Status.PENDING, None)  # left for the sweep
    assert took < 10
    message_id = f"<reminder-{invite.pk}@{UID_DOMAIN}>"
    assert captured_message_ids(workers.var_dir / "mail") == [message_id]
    assert row_state(invite) == (Status.SENT, 1, message_id)


# ----------------------------------------------------------------------------------------
# (d) The database is away while people, site systems and calendar apps call


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_faults_database_away_pages_the_api_and_feeds_answer_503_with_retry_after(
    import_seed: Callable[[str], Any], django_user_model: Any
) -> None:
    version = import_seed("000")
    visit = enrolled_visit(version)
    participant = visit.participant
    coordinator = django_user_model.objects.create_user("coordinator-db-away", is_staff=True)
    member(coordinator, trial=version.trial, site=participant.site)
    person = Client(raise_request_exception=False)
    person.force_login(coordinator)
    application, secret = site_system_credentials_create(
        name="db-away-ehr", trial=version.trial, sites=[participant.site]
    )
    issued = APIClient().post(
        "/api/v1/oauth/token/",
        {"grant_type": "client_credentials", "scope": "read write"},
        HTTP_AUTHORIZATION="Basic "
        + base64.b64encode(f"{application.client_id}:{secret}".encode()).decode(),
    )
    system = APIClient(raise_request_exception=False)
    system.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.json()['access_token']}")
    feed, feed_token = feed_create(participant=participant)
    calendar_app = Client(raise_request_exception=False)
    page_url = reverse("admin:participants_participant_change", args=[participant.pk])
    api_url = f"/api/v1/participants/{participant.pk}/calendar/"
    booking_url = reverse("admin:scheduler_scheduledvisit_book", args=[visit.pk])
    day = max(visit.window_start, site_today(participant.site) + dt.timedelta(days=1))

    database = connection.settings_dict
    address = (database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432))
    proxy = TcpProxy(address)
    connection.close()
    database["HOST"], database["PORT"] = "127.0.0.1", str(proxy.port)
    try:
        before = [
            person.get(page_url).status_code,
            system.get(api_url).status_code,
            calendar_app.get(feed_path(feed=feed, token=feed_token)).status_code,
        ]
        proxy.cut()  # Postgres "restarts"
        page = person.get(page_url)
        booking = person.post(
            booking_url,
            {"local_date": day.isoformat(), "local_time": "10:00", "_confirm": "1",
             "version": str(visit.version), "reason": ""},
        )  # fmt: skip
        api = system.get(api_url)
        feed_response = calendar_app.get(feed_path(feed=feed, token=feed_token))
        health = Client().get("/healthz")
    finally:
        connection.close()
        database["HOST"], database["PORT"] = str(address[0]), str(address[1])
        proxy.close()
    # The database is back (the same server, reached directly): the next requests are served.
    after = [
        person.get(page_url).status_code,
        system.get(api_url).status_code,
        calendar_app.get(feed_path(feed=feed, token=feed_token)).status_code,
    ]

    assert before == after == [200, 200, 200]
    for response in (page, booking, api, feed_response):
        assert (response.status_code, response["Retry-After"]) == (503, "30")
    for response in (page, booking):
        text = response.content.decode()
        assert "<title>Temporarily unavailable</title>" in text
        assert f"<p>{unavailable.PAGE_TEXT}</p>" in text
    assert api["Content-Type"] == "application/problem+json"
    assert api.json() == {
        "type": "/api/v1/problems/unavailable",
        "title": "Temporarily unavailable",
        "status": 503,
        "detail": unavailable.API_DETAIL,
        "errors": [],
    }
    assert health.status_code == 503
    visit.refresh_from_db()
    assert (visit.status, visit.booked_date) == (ScheduledVisit.Status.PLANNED, None)
