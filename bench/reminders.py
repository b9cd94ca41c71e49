"""Reminder outbox speed: the sweep over a large outbox, and sends per second through workers.

    .venv/bin/python bench/reminders.py [--rows 1000000] [--due 1000] [--sends 2000] [--runs 5]
        [--only sweep|sends]

On Postgres (DATABASE_URL) it works in a throw-away database created next to DATABASE_URL's
and dropped at the end; otherwise in SQLite under a temporary VAR_DIR. Prints:
(a) sweep: an outbox of --rows rows (mostly sent or cancelled, some pending in the future) of
    which --due are due, written with COPY (Postgres) or bulk_create (SQLite); the time of one
    sweep that hands the due rows out (publishing included: Redis when REDIS_URL is set, else
    the in-memory transport, one message per batch of REMINDER_BATCH_SIZE rows), of an idle
    sweep (nothing due), and the baseline: the raw SQL that takes the same due rows through the
    same partial index (one UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING),
    then publishing the same messages. Target: the sweep at most 2x the baseline.
(b) end to end (needs Postgres and REDIS_URL): --sends reminders (spread over the visits of
    many participants, so nothing is rendered from a cache of one visit) sent by two real
    `celery worker` processes (solo pool each, in-memory email backend: the provider is the
    outside world) through Redis, batched as the sweep publishes them, in sends per second;
    against the baseline of --sends no-op tasks pushed the same way (one message each, acked
    late, through the same two workers and queue), measured in the same run; and the same
    reminders unbatched (REMINDER_BATCH_SIZE=1) for comparison. Targets: at least 2,000
    sends/s, and at least half the no-op tasks' rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
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

from celery import shared_task  # noqa: E402

from bench.harness import progress, report, throwaway_postgres  # noqa: E402

SWEEP_RATIO_TARGET = 2.0
SENDS_TARGET = 2000.0  # sends/s with batching on two workers
SENDS_SHARE = 0.5  # of the no-op tasks' rate
PARTICIPANTS = 20  # whose visits the end-to-end reminders are spread over


@shared_task(name="bench.noop", ignore_result=True, acks_late=True)
def noop() -> None:
    """The end-to-end baseline: a task that does nothing, acknowledged once it has run (the
    workers import it with `--include bench.reminders`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--only",
        choices=("sweep", "sends"),
        help="run one scenario: (a) the sweep, or (b) the sends end to end (default: both)",
    )
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

    from config.celery import app
    from participants.services import participant_register
    from scheduler.models import Reminder, ScheduledVisit
    from scheduler.outbox.dispatch import SEND_BATCH_TASK, batch_size
    from scheduler.outbox.sweep import reminders_sweep
    from scheduler.services import participant_enroll
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
    if args.only == "sends":
        if not (postgres and redis_url):
            print("(b) end to end: skipped (needs DATABASE_URL on Postgres and REDIS_URL)")
            return
        end_to_end(args, queue, participant, timezone.now())
        return

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
    requeue_after = dt.timedelta(seconds=settings.REMINDER_REQUEUE_AFTER_SECONDS)
    size = batch_size()
    batch_task = app.tasks[SEND_BATCH_TASK]

    def raw_sql_sweep() -> list[int]:
        """The baseline: the due rows through the same partial index, marked as handed out,
        then the same messages published."""
        moment = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE scheduler_reminder SET enqueued_at = %s WHERE id IN ("  # noqa: S608 - fixed text
                "SELECT id FROM scheduler_reminder WHERE status IN ('pending', 'failed') "
                "AND next_attempt_at <= %s AND (enqueued_at IS NULL OR enqueued_at < %s) "
                f"ORDER BY next_attempt_at LIMIT %s{' FOR UPDATE SKIP LOCKED' if postgres else ''}"
                ") RETURNING id",
                [
                    connection.ops.adapt_datetimefield_value(moment),
                    connection.ops.adapt_datetimefield_value(moment),
                    connection.ops.adapt_datetimefield_value(moment - requeue_after),
                    args.due,
                ],
            )
            ids = [row[0] for row in cursor.fetchall()]
        for start in range(0, len(ids), size):
            batch_task.apply_async((ids[start : start + size],), queue=queue)
        return ids

    sweep_ms, idle_ms, raw_ms = [], [], []
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
        Reminder.objects.filter(pk__in=due_ids).update(enqueued_at=None)
        purge()
        started = time.perf_counter()
        assert len(raw_sql_sweep()) == args.due
        raw_ms.append((time.perf_counter() - started) * 1000)
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

    sweep, idle, raw = (statistics.median(x) for x in (sweep_ms, idle_ms, raw_ms))
    broker = "Redis" if redis_url else "the in-memory transport"
    messages = -(-args.due // size)
    print(
        f"database: {connection.vendor}; migrate {migrate_s:.1f} s; outbox {args.rows:,} rows "
        f"({args.due:,} due, {later:,} pending later, {sent:,} sent, {cancelled:,} cancelled) "
        f"written in {insert_s:.1f} s ({args.rows / insert_s:,.0f} rows/s){plan}"
    )
    print(
        f"(a) sweep handing out {args.due:,} due: {sweep:8.1f} ms "
        f"(median of {args.runs}; {messages} message(s) published to {broker} included)"
    )
    print(f"    idle sweep (nothing due):     {idle:8.1f} ms")
    print(
        f"    baseline, the raw SQL through the same index and the same {messages} message(s): "
        f"{raw:8.1f} ms; ratio {sweep / raw:5.2f} x baseline (target at most "
        f"{SWEEP_RATIO_TARGET:g}x)"
    )
    report(
        script="reminders",
        scenario=f"sweep handing out {args.due:,} due",
        size=args.rows,
        value=sweep,
        unit="ms",
        baseline=raw,
        target=round(raw * SWEEP_RATIO_TARGET, 3),
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
    if args.only == "sweep":
        return
    if not (postgres and redis_url):
        print("(b) end to end: skipped (needs DATABASE_URL on Postgres and REDIS_URL)")
        return
    end_to_end(args, queue, participant, now)


def end_to_end(args: argparse.Namespace, queue: str, first: Any, now: dt.datetime) -> None:
    import redis
    from django.conf import settings
    from django.utils import timezone

    from config.celery import app
    from participants.services import participant_register
    from scheduler.models import Reminder, ScheduledVisit
    from scheduler.outbox.dispatch import batch_size
    from scheduler.outbox.sweep import reminders_sweep
    from scheduler.services import participant_enroll

    # The rows (a) handed out are out of the way.
    Reminder.objects.filter(status="pending", next_attempt_at__lte=now).update(status="cancelled")
    # Participants of the same trial and site, so a batch of reminders names many visits (a
    # 09:00 batch is many participants' reminders, not one visit's).
    participants = [first]
    for number in range(2, PARTICIPANTS + 1):
        participant = participant_register(
            trial=first.trial,
            site=first.site,
            study_id=f"B-{number:04d}",
            birth_date=dt.date(1980, 1, 1),
            anchors={"day1": dt.date(2026, 3, 2)},
            weight_kg=Decimal(70),
            email=f"participant{number}@example.org",
        )
        participant_enroll(participant=participant, on=dt.date(2026, 2, 1))
        participants.append(participant)
    Reminder.objects.filter(participant__in=participants, status="pending").update(
        status="cancelled"
    )
    # Booked a month ahead: a reminder before a visit goes only for a booked visit that has
    # not begun (scheduler.outbox.channels checks the calendar as it is). Written directly:
    # only the sends are measured here.
    ahead = timezone.now() + dt.timedelta(days=30)
    ScheduledVisit.objects.filter(participant__in=participants).update(
        status="booked", booked_start=ahead, booked_date=ahead.date()
    )
    visits = list(
        ScheduledVisit.objects.filter(participant__in=participants).select_related("participant")
    )

    def due_rows(prefix: str, count: int) -> list[int]:
        moment = timezone.now() - dt.timedelta(seconds=1)
        created = Reminder.objects.bulk_create(
            (
                Reminder(
                    participant=visits[number % len(visits)].participant,
                    visit=visits[number % len(visits)],
                    target_key=f"visit:{visits[number % len(visits)].pk}",
                    rule_code=f"{prefix}{number}",
                    event="before_visit",
                    channel="email",
                    audience="participant",
                    due_at=moment,
                    next_attempt_at=moment,
                )
                for number in range(count)
            ),
            batch_size=5000,
        )
        return [row.pk for row in created]

    var_dir = Path(os.environ["VAR_DIR"])
    env = {
        **os.environ,  # DATABASE_URL: the throw-away database
        "CONN_MAX_AGE": "60",
        "EMAIL_URL": "memorymail://",  # rendered and kept in memory: no files pile up
        # The worker refuses to start without a key; this one signs nothing that outlives it.
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        "REMINDER_OUTCOME_JOURNAL_DIR": str(var_dir / "journal"),
    }
    workers = []
    for name in ("w1", "w2"):
        log = var_dir / f"{name}.log"
        workers.append(
            (
                subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
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
                        f"{name}-{queue}@%h",
                        "--include",
                        "bench.reminders",
                        "--loglevel",
                        "WARNING",
                        "--without-mingle",
                        "--without-gossip",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        )
    broker = redis.Redis.from_url(settings.REDIS_URL)

    def wait(done: Any, what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            failed = ""
            for worker, log in workers:
                if worker.poll() is not None:
                    failed = f"a worker exited:\n{log.read_text(errors='replace')[-3000:]}"
            if time.monotonic() > deadline:
                failed = f"timed out waiting for {what}"
            assert not failed, failed
            time.sleep(0.005)

    def all_sent(ids: list[int]) -> Any:
        # A cheap look by id range: the poller shares the machine with the workers.
        rows = Reminder.objects.filter(pk__range=(min(ids), max(ids)), status="sent")
        return lambda: rows.count() == len(ids)

    def queue_drained() -> bool:
        # Every message taken from the queue and acknowledged (the no-ops ack once run).
        if broker.llen(queue):
            return False
        return not any(json.loads(unacked)[2] == queue for unacked in broker.hvals("unacked"))

    def sends_per_second(prefix: str, count: int) -> float:
        measured = due_rows(prefix, count)
        started = time.perf_counter()
        handed_out = reminders_sweep(batch=count)
        wait(all_sent(measured), "the sends")
        elapsed = time.perf_counter() - started
        assert sorted(handed_out) == sorted(measured)
        attempts = set(Reminder.objects.filter(pk__in=measured).values_list("attempts", flat=True))
        assert attempts == {1}, attempts
        return count / elapsed

    def noops_per_second(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            app.send_task("bench.noop", queue=queue)
        wait(queue_drained, "the no-op tasks")
        return count / (time.perf_counter() - started)

    runs = max(1, min(args.runs, 3))
    single = max(1, min(args.sends, 500))
    sends, noops, unbatched = [], [], []
    try:
        # Warm up: both workers up, connected, and each has sent a batch or two.
        warm = due_rows("warm", 4 * batch_size())
        reminders_sweep(batch=len(warm))
        wait(all_sent(warm), "the warm-up sends", timeout=120)
        noops_per_second(200)
        for run in progress(range(runs), "reminders.py: end to end", total=runs):
            noops.append(noops_per_second(args.sends))
            sends.append(sends_per_second(f"e2e{run}-", args.sends))
        with override_batch_size(1):
            unbatched.append(sends_per_second("single-", single))
    finally:
        for worker, _log in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker, _log in workers:
            worker.wait(timeout=60)
        broker.close()

    rate, noop_rate, single_rate = (statistics.median(x) for x in (sends, noops, unbatched))
    print(
        f"(b) end to end, two workers (solo pool each) through Redis, batches of "
        f"{batch_size()}: {args.sends:,} reminders over {len(visits)} visits, "
        f"{rate:7.0f} sends/s (median of {runs}; sweep, claim, render, send, record)"
    )
    print(
        f"    baseline, {args.sends:,} no-op tasks pushed one a message through the same "
        f"workers and queue: {noop_rate:7.0f} tasks/s; ratio {noop_rate / rate:5.2f} x "
        f"(target at most {1 / SENDS_SHARE:g}x, and at least {SENDS_TARGET:,.0f} sends/s)"
    )
    print(f"    unbatched (one row a message), {single} reminders: {single_rate:7.0f} sends/s")
    for scenario, target in (
        ("reminders sent, batched, two workers", SENDS_TARGET),
        ("reminders sent, batched, two workers, against no-op tasks", noop_rate * SENDS_SHARE),
    ):
        report(
            script="reminders",
            scenario=scenario,
            size=args.sends,
            value=rate,
            unit="sends/s",
            baseline=noop_rate,
            target=round(target, 1),
            runs=runs,
        )
    report(
        script="reminders",
        scenario="reminders sent, one row a message, two workers",
        size=single,
        value=single_rate,
        unit="sends/s",
        baseline=noop_rate,
        runs=1,
    )


class override_batch_size:  # noqa: N801 - used as a context manager, reads like one
    """REMINDER_BATCH_SIZE for this process's publishes (the sweep's) for a while."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __enter__(self) -> None:
        from django.conf import settings

        self.previous = getattr(settings, "REMINDER_BATCH_SIZE", None)
        settings.REMINDER_BATCH_SIZE = self.size

    def __exit__(self, *exc: object) -> None:
        from django.conf import settings

        settings.REMINDER_BATCH_SIZE = self.previous


if __name__ == "__main__":
    main()
