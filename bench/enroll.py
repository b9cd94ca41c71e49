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

On Postgres, a second pair for the first --floor enrollments of each size up to 10,000: the
enrollment recorded in a transaction rolled back afterwards (`bench.rowchanges.Recorder`),
against every row it wrote (the calendar, its audit history, the reminder outbox, the
participant) written again with plain SQL from the same state. The first baseline is the
issue's: the calendar rows alone. This one is the least any enrollment that keeps the audit
trail and the outbox can cost. Neither side commits, but each ends by checking the foreign
keys a commit would check, so each costs what it would committed (less the last flush of the
log) and the every-row side can be read against the issue's baseline too.

Last, cohorts (--cohorts, 1,000 by default and 10,000 with --full; --cohort-runs each) of
participants registered in screening, enrolled in one call of `participants_enroll`, against
the engine's rows of the whole cohort written with one `COPY` a table in one transaction (the
issue's target: at most 2x). Like the participants above they have no contact details, so no
welcome or invites are planned. On Postgres the first cohort of each size up to 1,000 is also
set against every row it writes, as the single enrollments above are, and that every-row
floor against the issue's baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    clone_participants,
    on_postgres,
    progress,
    quoted,
    report,
    throwaway_postgres,
)
from bench.rowchanges import Recorder  # noqa: E402

FULL_SIZE = 100_000
TEMPLATES = 10  # enrolled participants the clones between sizes copy (Postgres)
# The every-row pair reads whole tables (the recorder's fingerprints) three times a sample:
# seconds at 10,000 participants, minutes at 100,000, so it stops there.
FLOOR_UP_TO = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200, help="enrollments per median")
    parser.add_argument("--sizes", default="100,1000", help="participants, comma-separated")
    parser.add_argument("--full", action="store_true", help="also 10,000 and 100,000 (long)")
    parser.add_argument(
        "--floor", type=int, default=20, help="enrollments per size against every row (Postgres)"
    )
    parser.add_argument(
        "--cohorts", default="1000", help="cohorts enrolled at once, comma-separated sizes"
    )
    parser.add_argument("--cohort-runs", type=int, default=3, help="cohorts per median")
    args = parser.parse_args()
    sizes = sorted(
        {int(size) for size in args.sizes.split(",")}
        | ({10_000, FULL_SIZE} if args.full else set())
    )
    assert sizes and sizes[0] > 0, "--sizes must be positive"
    args.cohort_sizes = sorted(
        {int(size) for size in args.cohorts.split(",") if size} | ({10_000} if args.full else set())
    )

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
    from django.db import connection, transaction

    from config.celery import app
    from participants.services import participant_register
    from scheduler.engine import ParticipantFacts, plan
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
    recorded_ms: dict[int, list[float]] = {size: [] for size in sizes}
    every_row_ms: dict[int, list[float]] = {size: [] for size in sizes}
    written: dict[int, str] = {}  # what one recorded enrollment wrote, by size
    recorder = Recorder(Path(tempfile.mkdtemp(prefix="bench-enroll-rows-")))
    prefix = f"B{int(time.time())}"
    postgres = connection.vendor == "postgresql"
    templates: list[Any] = []  # the first participants enrolled, cloned to fill (Postgres)
    number = 0  # participants in the database
    for size in sizes:
        measured_from = max(size - args.participants, 0)
        if postgres and templates and number < measured_from:
            # What lies between two sizes is cloned in SQL (about 10,000 a second) rather than
            # enrolled one by one (about ten a second): the figures are the enrollments
            # measured at each size, the clones only make the database that size.
            clone_participants(
                templates,
                range(number, measured_from),
                site=lambda n: site,
                study_id=lambda n: f"{prefix}-{n:06d}",
                label="enroll.py",
            )
            with connection.cursor() as wrapper:
                wrapper.cursor.execute("ANALYZE")
            number = measured_from
        for n in progress(range(number, size), f"enroll.py: up to {size:,} participants"):
            participant = participant_register(
                trial=version.trial,
                site=site,
                study_id=f"{prefix}-{n:06d}",
                birth_date=dt.date(1980, 1, 1),
                anchors={"day1": day1},
                weight_kg=Decimal(70),
            )
            if (
                postgres
                and size <= FLOOR_UP_TO
                and n >= measured_from
                and len(recorded_ms[size]) < args.floor
            ):
                seconds, changes = recorder.record(
                    "enroll",
                    functools.partial(
                        participant_enroll, participant=participant, on=dt.date(2026, 2, 1)
                    ),
                )
                written[size] = changes.summary()
                recorded_ms[size].append(seconds * 1000)
                every_row_ms[size].append(recorder.replay("enroll", changes) * 1000)
            started = time.perf_counter()
            visits = participant_enroll(participant=participant, on=dt.date(2026, 2, 1))
            elapsed_ms = (time.perf_counter() - started) * 1000
            if len(templates) < TEMPLATES:
                templates.append(participant)
            if n < measured_from:
                continue
            enroll_ms[size].append(elapsed_ms)
            baseline_ms[size].append(baseline(participant, postgres))
        number = size

    database = django.db.connection.vendor
    print(f"database: {database}; protocol: jasmine-myositis ({len(visits)} visits/participant)")
    print(f"engine:   {engine_us:8.1f} µs per calendar (mean of {runs} runs)")
    report(script="enroll", scenario="plan one calendar (engine)", value=engine_us, unit="µs")
    for size in sizes:
        enroll = statistics.median(enroll_ms[size])
        plain = statistics.median(baseline_ms[size])
        samples = len(enroll_ms[size])
        print(f"at {size:,} participants in the database:")
        print(f"  enroll:   {enroll:8.2f} ms per participant (median of the last {samples})")
        print(f"  baseline: {plain:8.2f} ms per participant, {BASELINE[database]}")
        print(f"  ratio:    {enroll / plain:8.2f} x baseline")
        report(
            script="enroll",
            scenario="enroll one participant",
            size=size,
            value=enroll,
            unit="ms",
            baseline=plain,
            runs=samples,
        )
        if recorded_ms[size]:
            recorded = statistics.median(recorded_ms[size])
            every_row = statistics.median(every_row_ms[size])
            every_row_pair(
                "enroll one participant",
                size,
                recorded,
                every_row,
                written[size],
                unit="ms",
                runs=len(recorded_ms[size]),
            )
    cohorts(version, site, args.cohort_sizes, args.cohort_runs, prefix, postgres, recorder)


def every_row_pair(
    what: str,
    size: int,
    recorded: float,
    every_row: float,
    written: str,
    *,
    unit: str,
    runs: int = 1,
) -> None:
    """Print and report an enrollment recorded (rolled back, its foreign keys checked as a
    commit would) against every row it wrote, written again with plain SQL."""
    print(f"  recorded: {recorded:8.2f} {unit}, foreign keys checked, rolled back")
    print(f"  every row written again with COPY: {every_row:8.2f} {unit} ({written})")
    print(f"  ratio:    {recorded / every_row:8.2f} x every row")
    report(
        script="enroll",
        scenario=f"{what}, against every row it writes",
        size=size,
        value=recorded,
        unit=unit,
        baseline=every_row,
        runs=runs,
    )


COHORT_SCENARIO = "enroll a cohort at once (participants_enroll)"
# The every-row pair of a cohort fingerprints whole tables three times: seconds up to here.
COHORT_FLOOR_UP_TO = 1_000


def cohorts(
    version: Any,
    site: Any,
    sizes: list[int],
    runs: int,
    prefix: str,
    postgres: bool,
    recorder: Recorder,
) -> None:
    """Each of `sizes` participants, registered in screening, enrolled in one call of
    `participants_enroll` (the calendars, their history, reminders and webhooks written in
    bulk), against the engine's rows of all of them written with one `COPY` a table: the
    issue's "planning 10,000 participants" against its baseline. The median of `runs`
    cohorts, each new participants.

    On Postgres, for cohorts of up to COHORT_FLOOR_UP_TO, the first cohort is also enrolled
    once in a transaction rolled back and set against every row it wrote (calendar, audit
    history, outbox, participants) written again with plain SQL: the least an enrollment
    that keeps the audit trail and the outbox can cost. Neither of that pair commits; both
    check the foreign keys a commit would (`bench.rowchanges.check_deferred`)."""
    from django.db import connection

    from participants.models import Participant, ParticipantAnchor
    from scheduler.services import Enrollment, participants_enroll

    day1 = dt.date(2026, 3, 2)
    for size in sizes:
        enroll_s: list[float] = []
        copy_s: list[float] = []
        floor: tuple[float, float, str] | None = None
        for run in progress(range(runs), f"enroll.py: cohorts of {size:,}"):
            people = Participant.objects.bulk_create(
                Participant(
                    trial=version.trial,
                    site=site,
                    study_id=f"{prefix}-C{size}-{run}-{n:06d}",
                    protocol_version=version,
                    birth_date=dt.date(1980, 1, 1),
                    weight_kg=Decimal(70),
                    timezone=site.timezone,
                )
                for n in range(size)
            )
            ParticipantAnchor.objects.bulk_create(
                ParticipantAnchor(participant=person, code="day1", date=day1) for person in people
            )
            if postgres:
                # As autovacuum would have by now (this machine's Postgres runs without it):
                # without statistics, reading back the calendars a cohort writes scans every
                # table whole, more with each cohort (with 24,000 participants stored, a
                # cohort of 1,000 took 8.1 s without and 6.0 s with them).
                with connection.cursor() as wrapper:
                    wrapper.cursor.execute("ANALYZE")
            enrollments = [Enrollment(person, dt.date(2026, 2, 1)) for person in people]
            if postgres and run == 0 and size <= COHORT_FLOOR_UP_TO:
                recorded, changes = recorder.record(
                    "cohort", functools.partial(participants_enroll, enrollments=enrollments)
                )
                floor = (recorded, recorder.replay("cohort", changes), changes.summary())
            started = time.perf_counter()
            participants_enroll(enrollments=enrollments)
            enroll_s.append(time.perf_counter() - started)
            copy_s.append(rows_copied(people, postgres) / 1000)
        enroll, plain = statistics.median(enroll_s), statistics.median(copy_s)
        print(f"a cohort of {size:,} enrolled at once:")
        print(f"  enroll:   {enroll:8.2f} s (median of {runs})")
        print(f"  baseline: {plain:8.2f} s, the engine's rows of all of them with COPY")
        print(f"  ratio:    {enroll / plain:8.2f} x baseline")
        report(
            script="enroll",
            scenario=COHORT_SCENARIO,
            size=size,
            value=enroll,
            unit="s",
            baseline=plain,
            target=2 * plain,
            runs=runs,
        )
        if floor is not None:
            recorded, every_row, changed = floor
            every_row_pair("enroll a cohort at once", size, recorded, every_row, changed, unit="s")
            print(f"  every row against the baseline: {every_row / plain:8.2f} x")
            report(
                script="enroll",
                scenario="every row a cohort's enrollment writes, against the calendar rows alone",
                size=size,
                value=every_row,
                unit="s",
                baseline=plain,
            )


BASELINE = {
    "postgresql": "the engine's rows (visits, procedures, milestones) written with COPY",
    "sqlite": "the engine's rows (visits, procedures, milestones) bulk-inserted",
}
# Copies of a participant's rows would collide with them on (participant, visit, occurrence)
# and (participant, rule, sequence): the baseline writes them this far along.
SHIFT = 100_000


def baseline(participant: Any, postgres: bool) -> float:
    """Milliseconds to write the rows the engine planned for `participant` (its visits, their
    procedures, its milestones) with the fastest plain means: psycopg 3 `COPY` on Postgres, ids
    drawn from the sequences in one query each; a bulk insert on SQLite. In its own
    transaction, committed, like the enrollment it is compared with."""
    return rows_copied([participant], postgres)


def rows_copied(participants: list[Any], postgres: bool) -> float:
    """`baseline` for the rows of all `participants` at once, in one transaction."""
    from django.db import connection, transaction

    from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit

    def fields(model: Any) -> list[str]:
        return [f.column for f in model._meta.concrete_fields if not f.primary_key]

    visit_columns = fields(ScheduledVisit)
    visit_rows = list(
        ScheduledVisit.objects.filter(participant__in=participants)
        .order_by("id")
        .values_list("id", *visit_columns)
    )
    procedure_columns = fields(ScheduledProcedure)
    procedure_rows = list(
        ScheduledProcedure.objects.filter(visit__participant__in=participants).values_list(
            *procedure_columns
        )
    )
    milestone_columns = fields(ScheduledMilestone)
    milestone_rows = list(
        ScheduledMilestone.objects.filter(participant__in=participants).values_list(
            *milestone_columns
        )
    )
    occurrence = visit_columns.index("occurrence")
    uid = visit_columns.index("ical_uid")
    sequence = milestone_columns.index("sequence")
    milestone_uid = milestone_columns.index("ical_uid")
    visit_of = procedure_columns.index("visit_id")

    def shifted(row: tuple[Any, ...], at: int, uid_at: int) -> list[Any]:
        values = list(row)
        values[at] += SHIFT
        values[uid_at] = uuid.uuid4()
        return values

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as wrapper:
        if postgres:
            cursor = wrapper.cursor
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [ScheduledVisit._meta.db_table, len(visit_rows)],
            )
            new_ids = {
                row[0]: new for row, (new,) in zip(visit_rows, cursor.fetchall(), strict=True)
            }
            copies = [
                (
                    ScheduledVisit,
                    ["id", *visit_columns],
                    ([new_ids[row[0]], *shifted(row[1:], occurrence, uid)] for row in visit_rows),
                ),
                (
                    ScheduledProcedure,
                    procedure_columns,
                    (
                        [*row[:visit_of], new_ids[row[visit_of]], *row[visit_of + 1 :]]
                        for row in procedure_rows
                    ),
                ),
                (
                    ScheduledMilestone,
                    milestone_columns,
                    (shifted(row, sequence, milestone_uid) for row in milestone_rows),
                ),
            ]
            for model, columns, rows in copies:
                names = ", ".join(quoted(c) for c in columns)
                with cursor.copy(
                    f"COPY {quoted(model._meta.db_table)} ({names}) FROM STDIN"
                ) as copy:
                    for values in rows:
                        copy.write_row(values)
        else:
            made = ScheduledVisit.objects.bulk_create(
                ScheduledVisit(
                    **dict(zip(visit_columns, shifted(row[1:], occurrence, uid), strict=True))
                )
                for row in visit_rows
            )
            new_ids = {row[0]: copy.pk for row, copy in zip(visit_rows, made, strict=True)}
            ScheduledProcedure.objects.bulk_create(
                ScheduledProcedure(
                    **{
                        **dict(zip(procedure_columns, row, strict=True)),
                        "visit_id": new_ids[row[visit_of]],
                    }
                )
                for row in procedure_rows
            )
            ScheduledMilestone.objects.bulk_create(
                ScheduledMilestone(
                    **dict(
                        zip(milestone_columns, shifted(row, sequence, milestone_uid), strict=True)
                    )
                )
                for row in milestone_rows
            )
    return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    main()
