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


def throwaway_postgres(url: str, label: str) -> tuple[str, Callable[[], None]]:
    """Create an empty database beside `url`'s; return its URL and a function that drops it.

    Its name starts with `url`'s database name, so a bench run stays within its own names.
    """
    import environ
    import psycopg
    from psycopg.conninfo import make_conninfo

    config = environ.Env.db_url_config(url)
    name = f"{config['NAME'] or 'bench'}_{label}_{uuid.uuid4().hex[:8]}"
    server = make_conninfo(
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        dbname="postgres",
    )
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
    from psycopg.conninfo import make_conninfo

    config = environ.Env.db_url_config(url)
    server = make_conninfo(
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        dbname="postgres",
    )
    with psycopg.connect(server, autocommit=True) as maintenance:
        found = maintenance.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone()
        if not found:
            maintenance.execute(f'CREATE DATABASE "{config["NAME"]}"')


def on_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
