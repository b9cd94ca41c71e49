"""What every bench script shares: its rows for `make bench`, progress bars, a throw-away database.

A script keeps printing its own lines and also calls `report(...)` for each figure. When it runs
under bench/run.py, BENCH_ROWS names a JSON-lines file and each row is appended to it; run on its
own, a script's rows go nowhere. A row is one scenario at one size:

- value: the median cost (unit "ms", "s", "µs") or rate (unit ending in "/s");
- baseline: the same-run baseline, in the same unit;
- ratio: how many times the baseline's cost the scenario costs (value / baseline for a cost,
  baseline / value for a rate), so above 1 always means slower than the baseline;
- target: the most a cost may be (or the least a rate may be); passed says whether it held.

Progress bars (rich) go to stderr, so a script's stdout stays its figures.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import uuid
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ROWS_ENV = "BENCH_ROWS"
T = TypeVar("T")
_stderr = Console(stderr=True)


def is_rate(unit: str) -> bool:
    return unit.endswith("/s")


def row(
    *,
    script: str,
    scenario: str,
    value: float,
    unit: str,
    baseline: float | None = None,
    size: int | None = None,
    target: float | None = None,
    runs: int | None = None,
) -> dict[str, Any]:
    """One row as it is written to bench/results.json."""
    ratio = None
    if baseline:
        ratio = baseline / value if is_rate(unit) else value / baseline
    passed = None
    if target is not None:
        passed = value >= target if is_rate(unit) else value <= target
    return {
        "script": script,
        "scenario": scenario,
        "size": size,
        "value": round(value, 4),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 4),
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "passed": passed,
        "runs": runs,
    }


def report(**fields: Any) -> dict[str, Any]:
    """Record one row (see `row` for the fields) for bench/run.py, if it is listening."""
    result = row(**fields)
    path = os.environ.get(ROWS_ENV)
    if path:
        with Path(path).open("a", encoding="utf-8") as rows:
            rows.write(json.dumps(result, ensure_ascii=False) + "\n")
    return result


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """`items`, with a progress bar on stderr while they are consumed."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=_stderr,
        transient=True,
    )
    step = max(1, (total or 0) // 500)  # a redraw per item would slow a million-row loop
    with bar:
        task = bar.add_task(description, total=total)
        pending = 0
        for item in items:
            yield item
            pending += 1
            if pending == step:
                bar.advance(task, pending)
                pending = 0
        bar.advance(task, pending)


def streamed_size(response: Any) -> int:
    """The response's length, read chunk by chunk as a server sends it (nothing kept)."""
    if not response.streaming:
        return len(response.content)
    return sum(len(chunk) for chunk in response.streaming_content)


def peak_kib(run: Callable[[], int]) -> tuple[float, int]:
    """Peak Python memory traced (tracemalloc) while `run` serves a response and counts its
    bytes; and the bytes. tracemalloc slows Python down several times: never time it."""
    tracemalloc.start()
    try:
        size = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 1024, size


def maintenance_conninfo(url: str, **options: Any) -> str:
    """Where to reach the server of `url`'s database for creating, dropping or checkpointing:
    its host, port and credentials, and the `postgres` database."""
    import environ
    from psycopg.conninfo import make_conninfo

    config = environ.Env.db_url_config(url)
    return str(
        make_conninfo(
            host=config["HOST"] or None,
            port=config["PORT"] or None,
            user=config["USER"] or None,
            password=config["PASSWORD"] or None,
            dbname="postgres",
            **options,
        )
    )


def throwaway_postgres(url: str, label: str) -> tuple[str, Callable[[], None]]:
    """Create an empty database beside `url`'s; return its URL and a function that drops it.

    Its name starts with `url`'s database name, so a bench run stays within its own names.
    """
    import environ
    import psycopg

    config = environ.Env.db_url_config(url)
    name = f"{config['NAME'] or 'bench'}_{label}_{uuid.uuid4().hex[:8]}"
    server = maintenance_conninfo(url)
    with psycopg.connect(server, autocommit=True) as maintenance:
        maintenance.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as maintenance:
            maintenance.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlsplit(url)._replace(path=f"/{name}").geturl(), drop


def ensure_postgres_database(url: str) -> None:
    """Create `url`'s database if the server does not have it yet (scripts that migrate it)."""
    import environ
    import psycopg

    config = environ.Env.db_url_config(url)
    with psycopg.connect(maintenance_conninfo(url), autocommit=True) as maintenance:
        found = maintenance.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone()
        if not found:
            maintenance.execute(f'CREATE DATABASE "{config["NAME"]}"')


def settle_postgres(url: str) -> str:
    """Write out what earlier work left in Postgres's buffers (CHECKPOINT) before the next
    script measures, so that one script's writes (the reminder script's million rows) are not
    flushed during the next one's commits. Needs a superuser or pg_checkpoint (Postgres 15);
    returns why it could not, or "" once done."""
    import psycopg

    try:
        with psycopg.connect(
            maintenance_conninfo(url, connect_timeout=10), autocommit=True
        ) as maintenance:
            maintenance.execute("CHECKPOINT")
    except psycopg.Error as error:
        return f"no CHECKPOINT between scripts ({type(error).__name__})"
    return ""


def on_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


# ----------------------------------------------------------------------------------------
# Filling a Postgres database with participants cloned in SQL

CLONE_BATCH = 1000  # participants cloned per transaction


def quoted(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _clone_sql(model: Any, source: str, overrides: dict[str, str]) -> str:
    """INSERT … SELECT of `model`'s rows from the templates' (alias t) into their clones'."""
    columns, expressions = [], []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(quoted(f.column))
        if f.column in overrides:
            expressions.append(overrides[f.column])
        elif f.get_internal_type() == "UUIDField":
            expressions.append("gen_random_uuid()")
        else:
            expressions.append(f"t.{quoted(f.column)}")
    return (
        f"INSERT INTO {quoted(model._meta.db_table)} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(expressions)} {source}"
    )


def clone_participants(
    templates: list[Any],
    numbers: range,
    *,
    site: Callable[[int], Any],
    study_id: Callable[[int], str],
    label: str,
) -> None:
    """Participant `n` of `numbers` a clone of `templates[n % len(templates)]` (Postgres only,
    in SQL, CLONE_BATCH a transaction): enrolled on the template's protocol version, at
    `site(n)` as `study_id(n)`, with the template's anchors, visits, procedures, milestones and
    outbox rows (the same dates and states). What a database of many enrolled participants
    holds, written in seconds rather than the hours enrolling each through the services takes;
    their audit history is not cloned."""
    from django.db import connection, transaction
    from django.utils import timezone

    from participants.models import Participant, ParticipantAnchor
    from scheduler.models import Reminder, ScheduledMilestone, ScheduledProcedure, ScheduledVisit

    visits, milestones = ScheduledVisit._meta.db_table, ScheduledMilestone._meta.db_table
    own = "FROM {table} t JOIN bench_batch b ON t.participant_id = b.tid"
    statements = [
        _clone_sql(model, own.format(table=model._meta.db_table), {"participant_id": "b.pid"})
        for model in (ParticipantAnchor, ScheduledVisit, ScheduledMilestone)
    ]
    statements.append(
        _clone_sql(
            ScheduledProcedure,
            f"""FROM {ScheduledProcedure._meta.db_table} t
            JOIN {visits} tv ON tv.id = t.visit_id
            JOIN bench_batch b ON b.tid = tv.participant_id
            JOIN {visits} nv ON nv.participant_id = b.pid
                AND nv.visit_definition_id = tv.visit_definition_id
                AND nv.occurrence = tv.occurrence""",
            {"visit_id": "nv.id"},
        )
    )
    statements.append(
        _clone_sql(
            Reminder,
            f"""{own.format(table=Reminder._meta.db_table)}
            LEFT JOIN {visits} tv ON tv.id = t.visit_id
            LEFT JOIN {visits} nv ON nv.participant_id = b.pid
                AND nv.visit_definition_id = tv.visit_definition_id
                AND nv.occurrence = tv.occurrence
            LEFT JOIN {milestones} tm ON tm.id = t.milestone_id
            LEFT JOIN {milestones} nm ON nm.participant_id = b.pid AND nm.rule_id = tm.rule_id
                AND nm.sequence = tm.sequence""",
            {
                "participant_id": "b.pid",
                "visit_id": "nv.id",
                "milestone_id": "nm.id",
                "target_key": """CASE WHEN t.visit_id IS NOT NULL THEN 'visit:' || nv.id
                    WHEN t.milestone_id IS NOT NULL THEN 'milestone:' || nm.id
                    WHEN t.target_key LIKE 'participant:%%' THEN 'participant:' || b.pid
                    ELSE t.target_key END""",
            },
        )
    )
    grown = [
        model._meta.db_table
        for model in (
            Participant,
            ParticipantAnchor,
            ScheduledVisit,
            ScheduledMilestone,
            ScheduledProcedure,
            Reminder,
        )
    ]
    analyzed_at = 0  # participants cloned when the statistics were last taken
    starts = range(numbers.start, numbers.stop, CLONE_BATCH)
    for start in progress(starts, f"{label}: cloning participants up to {numbers.stop:,}"):
        batch = range(start, min(start + CLONE_BATCH, numbers.stop))
        now = timezone.now()
        with transaction.atomic(), connection.cursor() as wrapper:
            cursor = wrapper.cursor
            people = Participant.objects.bulk_create(
                Participant(
                    trial_id=template.trial_id,
                    site=site(n),
                    study_id=study_id(n),
                    status=Participant.Status.ENROLLED,
                    protocol_version_id=template.protocol_version_id,
                    birth_date=template.birth_date,
                    weight_kg=template.weight_kg,
                    timezone=site(n).timezone,
                    enrolled_at=now,
                )
                for n in batch
                for template in [templates[n % len(templates)]]
            )
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS bench_batch (pid bigint, tid bigint) "
                "ON COMMIT DELETE ROWS"
            )
            with cursor.copy("COPY bench_batch (pid, tid) FROM STDIN") as copy:
                for n, person in zip(batch, people, strict=True):
                    copy.write_row((person.pk, templates[n % len(templates)].pk))
            cursor.execute("ANALYZE bench_batch")
            for sql in statements:
                cursor.execute(sql)
        # The planner's statistics keep up as the tables grow tenfold and more in one fill
        # (else, planning the joins above for tables it believes empty, a batch took minutes).
        cloned = batch.stop - numbers.start
        if cloned >= 2 * analyzed_at:
            with connection.cursor() as wrapper:
                wrapper.cursor.execute("ANALYZE " + ", ".join(quoted(table) for table in grown))
            analyzed_at = cloned
