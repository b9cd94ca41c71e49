"""Reminder outbox speed: the sweep over a large outbox, and sends per second through a worker.

    .venv/bin/python bench/reminders.py [--rows 1000000] [--due 1000] [--sends 2000] [--runs 5]

On Postgres (DATABASE_URL) it works in a throw-away database created next to DATABASE_URL's
and dropped at the end; otherwise in SQLite under a temporary VAR_DIR. Prints:
(a) sweep: an outbox of --rows rows (mostly sent or cancelled, some pending in the future) of
    which --due are due, written with COPY (Postgres) or bulk_create (SQLite); the time of one
    sweep that hands the due rows out (publishing included: Redis when REDIS_URL is set, else
    the in-memory transport), of an idle sweep (nothing due), and the baseline: publishing the
    same messages without the sweep.
(b) end to end (needs Postgres and REDIS_URL): --sends reminders sent by one real
    `celery worker` (solo pool, in-memory email backend) through Redis, in sends per second,
    against the baseline of the same number of no-op tasks (celery.accumulate) through the same
    worker and queue, measured in the same run, and the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NULL = "\\N"  # COPY's text format
sys.path.insert(0, str(ROOT))

from bench.harness import progress, report, throwaway_postgres  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    assert args.rows >= args.due, "--rows must be at least --due"

    own_var_dir = "VAR_DIR" not in os.environ
    var_dir = os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    drop_database = None
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        os.environ["DATABASE_URL"], drop_database = throwaway_postgres(
            os.environ["DATABASE_URL"], "reminders"
        )
    try:
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if drop_database is not None:
            drop_database()
        if own_var_dir:
            shutil.rmtree(var_dir, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.conf import settings

    from config.celery import app

    app.conf.task_always_eager = False
    redis_url = settings.REDIS_URL
    if not redis_url:
        app.conf.broker_url = "memory://"  # the sweep's messages go nowhere but are published
    # Every message of this run (the enrolment's invites too) goes to a queue of its own, never
    # to a developer's `celery` queue, and is deleted at the end.
    queue = f"bench-reminders-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    # The sweep routes by kind (settings.OUTBOX_QUEUES): every kind to this queue too.
    settings.OUTBOX_QUEUES = dict.fromkeys(settings.OUTBOX_QUEUES, queue)
    settings.OUTBOX_QUEUES = {**settings.OUTBOX_QUEUES, "invite": queue, "reminder": queue}

    def purge() -> None:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)

    try:
        outbox_and_sends(args, queue, purge)
    finally:
        purge()
        if redis_url:
            import redis

            with redis.Redis.from_url(redis_url) as client:
                client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def outbox_and_sends(args: argparse.Namespace, queue: str, purge: Any) -> None:
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from participants.services import participant_register
    from scheduler.models import Reminder, ScheduledVisit
    from scheduler.outbox.sweep import reminders_sweep
    from scheduler.services import participant_enroll
    from scheduler.tasks import send_reminder
    from trials.models import Site, TrialSite
    from trials.services import protocol_import

    redis_url = settings.REDIS_URL
    postgres = connection.vendor == "postgresql"

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    migrate_s = time.perf_counter() - started
    text = (ROOT / "seeds/protocols/000_niams_vascular.yaml").read_text(encoding="utf-8")
    version = protocol_import(text=text, source="bench")
    site = Site.objects.create(
        code="bench", name="Bench", timezone="Europe/Berlin", country="DE", address="Bench 1"
    )
    TrialSite.objects.create(trial=version.trial, site=site)
    participant = participant_register(
        trial=version.trial,
        site=site,
        study_id="B-0001",
        birth_date=dt.date(1980, 1, 1),
        anchors={"day1": dt.date(2026, 3, 2)},
        weight_kg=Decimal(70),
        email="participant@example.org",
    )
    participant_enroll(participant=participant, on=dt.date(2026, 2, 1))
    # Enrolling queues the participant's own reminders (a welcome message due now, visits'
    # reminders already past on a clock after March 2026): out of the way of the counted rows.
    Reminder.objects.filter(participant=participant).update(status="cancelled")
    visit = ScheduledVisit.objects.filter(participant=participant).order_by("target_date")[0]

    # ------------------------------------------------------------------------------------
    # (a) The outbox: --due due rows, ~10% pending later, the rest history (sent/cancelled).
    now = timezone.now()
    history = args.rows - args.due
    later = history // 10
    sent = (history - later) * 9 // 10
    cancelled = history - later - sent

    def rows() -> Any:
        """(status, due_at, next_attempt_at, sent_at) for every row, the due ones first."""
        past = now - dt.timedelta(minutes=5)
        for _ in range(args.due):
            yield "pending", past, past, None
        for number in range(later):
            moment = now + dt.timedelta(hours=1, seconds=number)
            yield "pending", moment, moment, None
        for number in range(sent + cancelled):
            moment = now - dt.timedelta(days=1, seconds=number)
            yield (
                ("sent", moment, moment, moment)
                if number < sent
                else (
                    "cancelled",
                    moment,
                    moment,
                    None,
                )
            )

    started = time.perf_counter()
    if postgres:
        columns = (
            "participant_id, visit_id, target_key, rule_code, event, channel, audience, due_at, "
            "status, next_attempt_at, attempts, sent_at, last_error, provider_message_id, "
            "created_at"
        )
        fixed = f"{participant.pk}\t{visit.pk}\tvisit:{visit.pk}"
        stamp = now.isoformat()
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY scheduler_reminder ({columns}) FROM STDIN") as copy,
        ):
            chunk = io.StringIO()
            written = progress(rows(), f"reminders.py: {args.rows:,} rows", total=args.rows)
            for number, (status, due_at, next_at, sent_at) in enumerate(written):
                attempts, sent_text, provider_id = (
                    (1, sent_at.isoformat(), f"<reminder-b{number}>") if sent_at else (0, NULL, "")
                )
                chunk.write(
                    f"{fixed}\tb{number}\tbefore_visit\temail\tparticipant\t"
                    f"{due_at.isoformat()}\t{status}\t{next_at.isoformat()}\t"
                    f"{attempts}\t{sent_text}\t\t{provider_id}\t{stamp}\n"
                )
                if number % 50_000 == 49_999:
                    copy.write(chunk.getvalue())
                    chunk = io.StringIO()
            copy.write(chunk.getvalue())
    else:
        batch: list[Reminder] = []
        with transaction.atomic():
            written = progress(rows(), f"reminders.py: {args.rows:,} rows", total=args.rows)
            for number, (status, due_at, next_at, sent_at) in enumerate(written):
                batch.append(
                    Reminder(
                        participant=participant,
                        visit=visit,
                        target_key=f"visit:{visit.pk}",
                        rule_code=f"b{number}",
                        event="before_visit",
                        channel="email",
                        audience="participant",
                        due_at=due_at,
                        status=status,
                        next_attempt_at=next_at,
                        attempts=1 if sent_at else 0,
                        sent_at=sent_at,
                    )
                )
                if len(batch) == 20_000:
                    Reminder.objects.bulk_create(batch)
                    batch = []
            Reminder.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_reminder" if postgres else "ANALYZE")
    insert_s = time.perf_counter() - started
    due_ids = list(
        Reminder.objects.filter(status="pending", next_attempt_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    assert len(due_ids) == args.due

    purge()  # the enrolment's invites: nobody consumes this queue during (a)
    sweep_ms, idle_ms, publish_ms = [], [], []
    for _ in range(args.runs):
        Reminder.objects.filter(pk__in=due_ids).update(enqueued_at=None)
        purge()
        started = time.perf_counter()
        handed_out = reminders_sweep()
        sweep_ms.append((time.perf_counter() - started) * 1000)
        assert len(handed_out) == args.due, len(handed_out)
        started = time.perf_counter()
        assert reminders_sweep() == []
        idle_ms.append((time.perf_counter() - started) * 1000)
        purge()
        started = time.perf_counter()
        for pk in due_ids:
            send_reminder.delay(pk)
        publish_ms.append((time.perf_counter() - started) * 1000)
    purge()
    plan = ""
    if postgres:
        due_query = Reminder.objects.filter(
            status__in=["pending", "failed"], next_attempt_at__lte=now
        ).order_by("next_attempt_at")[: args.due]
        plan = (
            "; due rows found by reminder_due_idx"
            if "reminder_due_idx" in due_query.explain()
            else "; NOT using reminder_due_idx"
        )

    sweep, idle, publish = (statistics.median(x) for x in (sweep_ms, idle_ms, publish_ms))
    broker = "Redis" if redis_url else "the in-memory transport"
    print(
        f"database: {connection.vendor}; migrate {migrate_s:.1f} s; outbox {args.rows:,} rows "
        f"({args.due:,} due, {later:,} pending later, {sent:,} sent, {cancelled:,} cancelled) "
        f"written in {insert_s:.1f} s ({args.rows / insert_s:,.0f} rows/s){plan}"
    )
    print(
        f"(a) sweep handing out {args.due:,} due: {sweep:8.1f} ms "
        f"(median of {args.runs}; publishing to {broker} included)"
    )
    print(f"    idle sweep (nothing due):     {idle:8.1f} ms")
    print(
        f"    baseline, publishing {args.due:,} messages alone: {publish:8.1f} ms; "
        f"ratio {sweep / publish:5.2f} x baseline"
    )
    report(
        script="reminders",
        scenario=f"sweep handing out {args.due:,} due",
        size=args.rows,
        value=sweep,
        unit="ms",
        baseline=publish,
        runs=args.runs,
    )
    report(
        script="reminders",
        scenario="idle sweep (nothing due)",
        size=args.rows,
        value=idle,
        unit="ms",
        runs=args.runs,
    )

    # ------------------------------------------------------------------------------------
    # (b) End to end through Redis and one real worker.
    if not (postgres and redis_url):
        print("(b) end to end: skipped (needs DATABASE_URL on Postgres and REDIS_URL)")
        return
    end_to_end(args, queue, visit, now)


def end_to_end(args: argparse.Namespace, queue: str, visit: Any, now: dt.datetime) -> None:
    from django.utils import timezone

    from config.celery import app
    from scheduler.models import Reminder, WorkerHeartbeat
    from scheduler.outbox.sweep import reminders_sweep
    from scheduler.tasks import heartbeat

    # The rows (a) handed out are out of the way; warm-up rows, then the measured ones.
    Reminder.objects.filter(status="pending", next_attempt_at__lte=now).update(status="cancelled")

    def due_rows(prefix: str, count: int) -> list[int]:
        moment = timezone.now() - dt.timedelta(seconds=1)
        created = Reminder.objects.bulk_create(
            Reminder(
                participant=visit.participant,
                visit=visit,
                target_key=f"visit:{visit.pk}",
                rule_code=f"{prefix}{number}",
                event="before_visit",
                channel="email",
                audience="participant",
                due_at=moment,
                next_attempt_at=moment,
            )
            for number in range(count)
        )
        return [row.pk for row in created]

    worker_log = Path(os.environ["VAR_DIR"]) / "worker.log"
    worker = subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
        [
            sys.executable,
            "-m",
            "celery",
            "--app",
            "config",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queue,
            "--hostname",
            f"{queue}@%h",
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env={
            **os.environ,  # DATABASE_URL: the throw-away database
            "CONN_MAX_AGE": "60",
            "EMAIL_URL": "memorymail://",  # rendered and kept in memory: no files pile up
            # The worker refuses to start without a key; this one signs nothing that outlives it.
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        },
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def wait(done: Any, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            failed = "the worker exited" if worker.poll() is not None else ""
            if time.monotonic() > deadline:
                failed = f"timed out waiting for {what}"
            assert not failed, f"{failed}:\n{worker_log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.02)

    def marker_after(moment: dt.datetime) -> bool:
        return WorkerHeartbeat.objects.filter(name="worker", beat_at__gt=moment).exists()

    def all_sent(ids: list[int]) -> Any:
        # A cheap look by id range every 20 ms: the poller shares the machine with the worker.
        rows = Reminder.objects.filter(pk__range=(min(ids), max(ids)), status="sent")
        return lambda: rows.count() == len(ids)

    try:
        # Warm up: the worker is up, connected, and has sent a few reminders.
        moment = timezone.now()
        heartbeat.apply_async(queue=queue)
        wait(lambda: marker_after(moment), "the worker to start", timeout=60)
        warm = due_rows("warm", 20)
        reminders_sweep()
        wait(all_sent(warm), "the warm-up sends")

        # Baseline: the same number of no-op tasks, then a marker task behind them (one
        # process, one queue, prefetch 1: the marker runs after every no-op).
        moment = timezone.now()
        started = time.perf_counter()
        for _ in range(args.sends):
            app.send_task("celery.accumulate", args=(1,), queue=queue)
        heartbeat.apply_async(queue=queue)
        wait(lambda: marker_after(moment), "the no-op tasks")
        noop_s = time.perf_counter() - started

        measured = due_rows("e2e", args.sends)
        started = time.perf_counter()
        handed_out = reminders_sweep(batch=args.sends)
        wait(all_sent(measured), "the sends")
        sends_s = time.perf_counter() - started
        assert sorted(handed_out) == sorted(measured)
        attempts = set(Reminder.objects.filter(pk__in=measured).values_list("attempts", flat=True))
        assert attempts == {1}, attempts
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    print(
        f"(b) end to end, one worker (solo pool) through Redis: {args.sends:,} reminders in "
        f"{sends_s:.2f} s = {args.sends / sends_s:7.0f} sends/s (sweep, claim, render, send, mark)"
    )
    print(
        f"    baseline, {args.sends:,} no-op tasks through the same worker and queue: "
        f"{noop_s:.2f} s = {args.sends / noop_s:7.0f} tasks/s; ratio {sends_s / noop_s:5.2f} x"
    )
    report(
        script="reminders",
        scenario="reminders sent through one worker",
        size=args.sends,
        value=args.sends / sends_s,
        unit="sends/s",
        baseline=args.sends / noop_s,
        runs=1,
    )


if __name__ == "__main__":
    main()
