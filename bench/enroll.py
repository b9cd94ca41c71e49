"""Enrollment and planning speed, with a baseline measured in the same run.

    .venv/bin/python bench/enroll.py [--participants 200] [--sizes 100,1000] [--full]

Runs against a throw-away SQLite database under a temporary VAR_DIR (or, when DATABASE_URL is on
Postgres, a throw-away database created beside it and dropped at the end). Enrolls participants
one by one until the database holds each of --sizes (--full adds 10,000 and 100,000) and
prints, for each size, the median over the last --participants enrollments before it:
- enroll: milliseconds to enroll one participant (eligibility, plan, bulk insert);
- baseline: milliseconds to bulk-insert the same rows with no planning at all;
and the ratio enroll / baseline, i.e. what the service adds over writing the rows; and once:
- engine: microseconds to plan one calendar (pure Python, no database).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import on_postgres, progress, report, throwaway_postgres  # noqa: E402

FULL_SIZE = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200, help="enrollments per median")
    parser.add_argument("--sizes", default="100,1000", help="participants, comma-separated")
    parser.add_argument("--full", action="store_true", help="also 10,000 and 100,000 (long)")
    args = parser.parse_args()
    sizes = sorted(
        {int(size) for size in args.sizes.split(",")}
        | ({10_000, FULL_SIZE} if args.full else set())
    )
    assert sizes and sizes[0] > 0, "--sizes must be positive"

    os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-"))
    drop_database = None
    if on_postgres():
        os.environ["DATABASE_URL"], drop_database = throwaway_postgres(
            os.environ["DATABASE_URL"], "enroll"
        )
    try:
        run(args, sizes)
    finally:
        from django.db import connections

        connections.close_all()
        if drop_database is not None:
            drop_database()


def run(args: argparse.Namespace, sizes: list[int]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from config.celery import app
    from participants.services import participant_register
    from scheduler.engine import ParticipantFacts, plan
    from scheduler.models import ScheduledProcedure, ScheduledVisit
    from scheduler.selectors import protocol_snapshot
    from scheduler.services import participant_enroll
    from trials.models import ProtocolVersion, Site, TrialSite
    from trials.services import protocol_import

    # Invites are queued on commit; an in-memory broker keeps the figures about the database.
    app.conf.broker_url = "memory://"
    call_command("migrate", verbosity=0)
    text = (ROOT / "seeds/protocols/002_jasmine_myositis.yaml").read_text(encoding="utf-8")
    with transaction.atomic():
        version = ProtocolVersion.objects.filter(trial__code="jasmine-myositis").first()
        version = version or protocol_import(text=text, source="bench")
    site, _ = Site.objects.get_or_create(
        code="bench", defaults={"name": "Bench", "timezone": "Europe/Berlin", "country": "DE"}
    )
    TrialSite.objects.get_or_create(trial=version.trial, site=site)
    snapshot = protocol_snapshot(version=version)
    day1 = dt.date(2026, 3, 2)

    # Engine alone.
    facts = ParticipantFacts(anchors={"day1": day1})
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        plan(snapshot, facts)
    engine_us = (time.perf_counter() - started) / runs * 1e6

    enroll_ms: dict[int, list[float]] = {size: [] for size in sizes}
    baseline_ms: dict[int, list[float]] = {size: [] for size in sizes}
    prefix = f"B{int(time.time())}"
    for number in progress(range(sizes[-1]), f"enroll.py: {sizes[-1]:,} participants"):
        # The size whose median this enrollment counts towards, if it is one of its last ones.
        size = next((s for s in sizes if s - args.participants <= number < s), None)
        participant = participant_register(
            trial=version.trial,
            site=site,
            study_id=f"{prefix}-{number:05d}",
            birth_date=dt.date(1980, 1, 1),
            anchors={"day1": day1},
            weight_kg=Decimal(70),
        )
        started = time.perf_counter()
        visits = participant_enroll(participant=participant, on=dt.date(2026, 2, 1))
        if size is None:
            continue
        enroll_ms[size].append((time.perf_counter() - started) * 1000)

        # Baseline: the same rows written again, without any checks or planning.
        rows = [
            ScheduledVisit(
                participant=participant,
                visit_definition=v.visit_definition,
                occurrence=v.occurrence + 1000,
                protocol_version=version,
                target_date=v.target_date,
                window_start=v.window_start,
                window_end=v.window_end,
            )
            for v in visits
        ]
        procedures = list(ScheduledProcedure.objects.filter(visit__in=visits))
        started = time.perf_counter()
        with transaction.atomic():
            copies = ScheduledVisit.objects.bulk_create(rows)
            by_id = {v.id: c for v, c in zip(visits, copies, strict=True)}
            ScheduledProcedure.objects.bulk_create(
                ScheduledProcedure(visit=by_id[p.visit_id], procedure_id=p.procedure_id)
                for p in procedures
            )
        baseline_ms[size].append((time.perf_counter() - started) * 1000)

    database = django.db.connection.vendor
    print(f"database: {database}; protocol: jasmine-myositis ({len(visits)} visits/participant)")
    print(f"engine:   {engine_us:8.1f} µs per calendar (mean of {runs} runs)")
    report(script="enroll", scenario="plan one calendar (engine)", value=engine_us, unit="µs")
    for size in sizes:
        enroll = statistics.median(enroll_ms[size])
        baseline = statistics.median(baseline_ms[size])
        samples = len(enroll_ms[size])
        print(f"at {size:,} participants in the database:")
        print(f"  enroll:   {enroll:8.2f} ms per participant (median of the last {samples})")
        print(f"  baseline: {baseline:8.2f} ms per participant, bulk insert of the same rows")
        print(f"  ratio:    {enroll / baseline:8.2f} x baseline")
        report(
            script="enroll",
            scenario="enroll one participant",
            size=size,
            value=enroll,
            unit="ms",
            baseline=baseline,
            runs=samples,
        )


if __name__ == "__main__":
    main()
