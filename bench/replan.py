"""Re-planning at scale on Postgres: a protocol amendment and a reschedule cascade, each against
the same row changes written with plain SQL in the same run.

    DATABASE_URL=postgres://… .venv/bin/python bench/replan.py [--sizes 1000,10000] [--full]
        [--sites 20] [--runs 3] [--cascades 5] [--profile]

Needs Postgres: a throw-away database beside DATABASE_URL's, migrated, dropped at the end. One
JASMINE trial (seeds/protocols/002_jasmine_myositis.yaml, version 1.0) at --sites sites; 52
participants enrolled through the services, Day 1 a week apart over the past year, what lies
behind today recorded done and their reminders synced; the others cloned from them round robin
in SQL batches (participants, anchors, visits, procedures, milestones, pending reminders), so
every one is enrolled with visits behind (done) and ahead (planned). The trial grows to each of
--sizes participants (--full adds 100,000) and, at each size:

- amendment: version 1.1 (the follow-up 35 days after the last weekly visit instead of 28)
  approved at every site today, through `site_move_to_version` (what the admin's and the API's
  amendment pages call), site by site: every active participant's open visits from today on
  move to 1.1, with their procedures, milestones, audit history and outbox rows. Seconds for the
  whole trial, median of at most --runs runs: no further run once --budget seconds are spent
  (so one run at 10,000 participants);
- reschedule cascade: a booked last weekly visit (the anchor of the follow-up visit) moved a day
  later through `visit_reschedule` (the booking service), which moves the follow-up visit and
  its window; milliseconds, median over --cascades participants.

Each run happens in a transaction that is rolled back, so every run starts from the same
database. The baseline of each run is what that run changed, row for row: before the service
runs, every table's rows are fingerprinted; afterwards the rows it inserted, updated and
deleted (calendar, audit history, outbox, everything) are dumped; the baseline, in a fresh
transaction from the same state, writes exactly those rows with plain SQL (COPY for inserts,
COPY into a temporary table then one UPDATE … FROM and one DELETE … USING per table), and the
script checks that it produced the very same changes. --profile prints the amendment's
profile (cProfile, top functions) at the first size. BENCH_SQL=1 prints, after each run, the
seconds spent in each kind of statement, and the baseline's seconds per table.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    clone_participants,
    on_postgres,
    progress,
    report,
    throwaway_postgres,
)
from bench.rowchanges import Changes, Recorder  # noqa: E402

FULL_SIZE = 100_000
TEMPLATES = 52  # participants enrolled through the services, Day 1 a week apart
PROTOCOL = ROOT / "seeds/protocols/002_jasmine_myositis.yaml"
# The amendment: the follow-up visit counted 35 days after the last weekly visit, not 28.
AMENDED_FROM = ('  label: "1.0"', "    offset_days: 28\n")
AMENDED_TO = ('  label: "1.1"', "    offset_days: 35\n")


# ----------------------------------------------------------------------------------------
# The trial


@dataclass
class Trial:
    v1: Any
    v2: Any
    sites: list[Any]
    user: Any
    templates: list[Any]
    today: dt.date
    participants: int = 0
    recorder: Recorder = field(
        default_factory=lambda: Recorder(Path(tempfile.mkdtemp(prefix="bench-replan-rows-")))
    )


def setup(sites: int, templates: int) -> Trial:
    """The trial, its sites and `templates` participants enrolled through the services, Day 1
    a week apart (and a weekday later) over the past year; what lies behind today recorded
    done on its day (in SQL: the services refuse past dates), their reminders synced."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from participants.services import participant_register
    from scheduler.models import ScheduledProcedure, ScheduledVisit
    from scheduler.outbox.plan import reminders_sync
    from scheduler.services import participant_enroll
    from trials.models import Site, TrialSite
    from trials.services import protocol_import

    text = PROTOCOL.read_text(encoding="utf-8")
    amended = text
    for old, new in zip(AMENDED_FROM, AMENDED_TO, strict=True):
        assert amended.count(old) == 1, f"{PROTOCOL.name} no longer has {old!r} once"
        amended = amended.replace(old, new)
    with transaction.atomic():
        v1 = protocol_import(text=text, source=PROTOCOL.name)
        v2 = protocol_import(text=amended, source="jasmine-1.1.yaml")
        zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
        site_rows = [
            Site.objects.create(
                code=f"site-{n:03d}",
                name=f"Site {n}",
                timezone=zones[n % len(zones)],
                country="DE",
            )
            for n in range(sites)
        ]
        for site in site_rows:
            TrialSite.objects.create(trial=v1.trial, site=site, protocol_version=v1)
        user = get_user_model().objects.create_user("bench-amender", is_staff=True)
    today = timezone.now().date()
    people = []
    for k in progress(range(templates), "replan.py: enrolling the template participants"):
        day1 = today - dt.timedelta(days=364 - 7 * (k % 52) - k % 7)
        person = participant_register(
            trial=v1.trial,
            site=site_rows[k % sites],
            study_id=f"R{k:06d}",
            birth_date=dt.date(1980, 1, 1),
            anchors={"day1": day1},
            weight_kg=Decimal(70),
        )
        participant_enroll(participant=person, on=day1 - dt.timedelta(days=30), by=user)
        people.append(person)
    with transaction.atomic():
        past = ScheduledVisit.objects.filter(
            participant__in=people, target_date__lt=today, status="planned"
        )
        ScheduledProcedure.objects.filter(visit__in=past).update(status="done")
        past.update(status="done", actual_date=F("target_date"), deviation_days=0)
        for person in people:
            reminders_sync(person)
    return Trial(v1, v2, site_rows, user, people, today, len(people))


def fill(trial: Trial, upto: int) -> None:
    """Clone the templates, round robin, until the trial has `upto` participants (each at a
    site of its own, `bench.harness.clone_participants`)."""
    from django.db import connection

    sites = trial.sites
    clone_participants(
        trial.templates,
        range(trial.participants, upto),
        site=lambda n: sites[n % len(sites)],
        study_id=lambda n: f"R{n:06d}",
        label="replan.py",
    )
    trial.participants = max(trial.participants, upto)
    with connection.cursor() as wrapper:
        wrapper.cursor.execute("ANALYZE")


# ----------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    seconds: float
    queries: int
    changes: Changes


@contextmanager
def counting() -> Iterator[list[int]]:
    from django.db import connection

    count = [0]
    # BENCH_SQL=1: seconds per kind of statement (its first words), printed after the run.
    timed: dict[str, list[float]] | None = {} if os.environ.get("BENCH_SQL") else None

    def counter(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        count[0] += 1
        if timed is None:
            return execute(sql, params, many, context)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timed.setdefault(" ".join(sql.split())[:110], []).append(time.perf_counter() - started)

    with connection.execute_wrapper(counter):
        yield count
    if timed:
        total = sum(sum(times) for times in timed.values())
        print(f"  statements: {count[0]}, {total:.2f} s in the database; the costliest:")
        for sql, times in sorted(timed.items(), key=lambda item: -sum(item[1]))[:25]:
            print(f"  {sum(times):7.3f} s {len(times):5d}x  {sql}")


def service_run(trial: Trial, scenario: str, work: Callable[[], Any], profile: bool = False) -> Run:
    """`work` recorded (`bench.rowchanges.Recorder.record`), its queries counted."""
    profiler = cProfile.Profile() if profile else None

    def observed() -> None:
        if profiler:
            profiler.enable()
        try:
            work()
        finally:
            if profiler:
                profiler.disable()

    with counting() as queries:
        seconds, changes = trial.recorder.record(scenario, observed)
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        if os.environ.get("BENCH_PSTATS"):  # the whole profile, for pstats or snakeviz
            stats.dump_stats(os.environ["BENCH_PSTATS"])
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(
            r"/(scheduler|participants|trials|simple_history)/|bulk_update|bulk_create", 30
        )
        print(f"profile of {scenario} (cProfile: by own time, then ours by cumulative time):")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip()))
    return Run(seconds, queries[0], changes)


def amendment(trial: Trial) -> Callable[[], Any]:
    from scheduler.services import site_move_to_version

    def work() -> None:
        for site in trial.sites:
            site_move_to_version(
                site=site,
                version=trial.v2,
                approved_on=trial.today,
                on=trial.today,
                by=trial.user,
                reason="Amendment 1.1: follow-up at 5 weeks",
            )

    return work


def cascade_visits(trial: Trial, count: int) -> list[Any]:
    """`count` participants' last weekly visits, booked (committed) on their target day, each
    at least a week ahead so that a day later stays bookable and within its window."""
    from django.db import transaction

    from scheduler.models import ScheduledVisit
    from scheduler.services import visit_book

    visits = list(
        ScheduledVisit.objects.filter(
            participant__trial=trial.v1.trial,
            visit_definition__code="TRT",
            occurrence=52,
            target_date__gte=trial.today + dt.timedelta(days=7),
        )
        .select_related("participant__site")
        .order_by("participant__study_id")[:count]
    )
    assert len(visits) == count, f"only {len(visits)} participants to reschedule"
    with transaction.atomic():
        booked = []
        for visit in visits:
            if visit.status != "booked":
                visit_book(
                    visit=visit,
                    local_date=visit.target_date,
                    local_time=dt.time(10, 0),
                    by=trial.user,
                )
            booked.append(ScheduledVisit.objects.get(pk=visit.pk))
    return booked


def reschedule(trial: Trial, visit: Any) -> Callable[[], Any]:
    from scheduler.services import visit_reschedule

    def work() -> None:
        moved = visit_reschedule(
            visit=visit,
            local_date=visit.booked_date + dt.timedelta(days=1),
            local_time=dt.time(10, 0),
            by=trial.user,
            reason="the participant asked for the next day",
        )
        assert [(c.visit_code, c.kind) for c in moved.calendar.visits] == [("FU", "moved")], (
            moved.calendar
        )

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="participants, comma-separated")
    parser.add_argument("--full", action="store_true", help="also 100,000 (long)")
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="amendment runs per size, at most")
    parser.add_argument(
        "--budget", type=float, default=300, help="no further amendment run past these seconds"
    )
    parser.add_argument("--cascades", type=int, default=5, help="reschedules per size (0: none)")
    parser.add_argument("--profile", action="store_true", help="profile at the first size")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")} | ({FULL_SIZE} if args.full else set()))
    assert sizes and sizes[0] > 1, "--sizes must be above 1"
    if not on_postgres():
        sys.exit("bench/replan.py needs DATABASE_URL=postgres://… (the scale is the point)")

    os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-replan-"))
    os.environ["DATABASE_URL"], drop_database = throwaway_postgres(
        os.environ["DATABASE_URL"], "replan"
    )
    try:
        run(args, sizes)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database()


def run(args: argparse.Namespace, sizes: list[int]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from config.celery import app

    app.conf.broker_url = "memory://"  # what the services queue stays in the outbox tables
    call_command("migrate", verbosity=0)
    trial = setup(args.sites, min(TEMPLATES, sizes[0]))
    print(
        f"JASMINE at {args.sites} sites; amendment 1.0 -> 1.1 (follow-up at 5 weeks) on "
        f"{trial.today}; medians; each run rolled back"
    )
    for number, size in enumerate(sizes):
        started = time.perf_counter()
        fill(trial, size)
        from scheduler.models import ScheduledVisit

        visits = ScheduledVisit.objects.count()
        filled = time.perf_counter() - started
        print(f"\n{size:,} participants, {visits:,} visits (filled in {filled:.0f} s)")

        # The amendment: --runs runs, fewer when one run already takes --budget seconds.
        service: list[float] = []
        plain: list[float] = []
        queries = 0
        for attempt in range(args.runs):
            if attempt and sum(service) + sum(plain) > args.budget:
                break
            print(f"  amendment run {attempt + 1} …", file=sys.stderr)
            done = service_run(
                trial,
                "amendment",
                amendment(trial),
                profile=args.profile and number == 0 and attempt == 0,
            )
            service.append(done.seconds)
            print(f"    run {attempt + 1}: {done.seconds:.2f} s", file=sys.stderr)
            queries = done.queries
            plain.append(trial.recorder.replay("amendment", done.changes))
        runs = len(service)
        value, baseline = statistics.median(service), statistics.median(plain)
        print(
            f"  amendment: {value:8.2f} s ({value / size * 1000:.1f} ms and "
            f"{queries / size:.0f} queries per participant); plain SQL {baseline:.2f} s; "
            f"{value / baseline:.1f}x; median of {runs}"
        )
        print(f"    rows changed: {done.changes.summary()}")
        report(
            script="replan",
            scenario="amendment: the whole trial moved to 1.1",
            size=size,
            value=value,
            unit="s",
            baseline=baseline,
            runs=runs,
        )

        # The reschedule cascade (--cascades 0: the amendment only; each cascade's check reads
        # every table, minutes at 100,000 participants).
        if args.cascades <= 0:
            continue
        cascade_ms, cascade_plain, cascade_queries = [], [], 0
        for visit in progress(
            cascade_visits(trial, args.cascades), f"replan.py: reschedules at {size:,}"
        ):
            done = service_run(trial, "cascade", reschedule(trial, visit))
            cascade_ms.append(done.seconds * 1000)
            cascade_queries = done.queries
            cascade_plain.append(trial.recorder.replay("cascade", done.changes) * 1000)
        value, baseline = statistics.median(cascade_ms), statistics.median(cascade_plain)
        print(
            f"  reschedule cascade: {value:8.2f} ms ({cascade_queries} queries); plain SQL "
            f"{baseline:.2f} ms; {value / baseline:.1f}x; median of {len(cascade_ms)}"
        )
        print(f"    rows changed: {done.changes.summary()}")
        report(
            script="replan",
            scenario="reschedule cascade: last weekly visit, follow-up moves",
            size=size,
            value=value,
            unit="ms",
            baseline=baseline,
            runs=len(cascade_ms),
        )


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    main()
