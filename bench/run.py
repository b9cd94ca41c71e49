"""Run every bench script, print one table, write bench/results.json and PNG plots.

    .venv/bin/python bench/run.py [--full] [--only enroll,slots] [--smallest]
    .venv/bin/python bench/run.py --markdown    # the last results as a Markdown table

`make bench` runs this with DATABASE_URL and REDIS_URL set (to the machine's Postgres and Redis
unless they are already set). Each script runs in its own process; its own printout goes to
bench/out/<script>.txt and its rows (bench/harness.py) into bench/results.json. A scenario
measured at several sizes gets a plot, bench/out/<script>.png (<script>-<unit>.png when the
script's scenarios differ in units): its cost and its baseline against the size. --full adds
the long sizes (enroll.py at 10,000 and 100,000 participants, feeds.py at 2,000, replan.py at
10,000 and 100,000).
--smallest runs each script at a small size, to check the harness itself in a minute or two.
Exits non-zero if a script failed or a figure missed its target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import ROWS_ENV, ensure_postgres_database, settle_postgres  # noqa: E402

BENCH = ROOT / "bench"
OUT = BENCH / "out"
RESULTS = BENCH / "results.json"

# script -> (default arguments, --smallest arguments, needs Postgres)
SCRIPTS: dict[str, tuple[list[str], list[str], bool]] = {
    "enroll": (
        [],
        ["--sizes", "20,60", "--participants", "20", "--cohorts", "50", "--cohort-runs", "1"],
        False,
    ),
    "engine": ([], ["--runs", "200", "--samples", "3", "--peer-runs", "20"], False),
    "feeds": (
        ["--site-participants", "500", "--runs", "10"],
        ["--site-participants", "20", "--runs", "5"],
        False,
    ),
    "reminders": ([], ["--rows", "20000", "--due", "200", "--sends", "200", "--runs", "3"], False),
    "slots": ([], ["--runs", "3", "--bookings", "200"], False),
    "api": (
        [],
        ["--site-participants", "20", "--requests", "20", "--seconds", "3", "--rounds", "2"],
        False,
    ),
    "protocol_files": ([], ["--repeat", "1"], False),
    "workspace": ([], ["--participants", "200", "--sites", "2", "--runs", "3"], True),
    # An amendment re-plans every participant one by one (about 0.25 s each here): 100 and
    # 1,000 by default, 1,000 and 10,000 (and 100,000) with --full.
    "replan": (
        ["--sizes", "100,1000", "--runs", "1", "--cascades", "3"],
        ["--sizes", "30,60", "--sites", "4", "--runs", "1", "--cascades", "2"],
        True,
    ),
}
# With --full: these scripts' arguments instead of the defaults (their long sizes).
FULL_ARGUMENTS = {
    "enroll": ["--full"],
    "feeds": ["--site-participants", "2000"],
    "replan": ["--sizes", "1000,10000", "--full"],
}


def where(url: str) -> str:
    """A database or broker URL without its credentials, for the results file."""
    if not url:
        return ""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def run_script(name: str, arguments: list[str], console: Console) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"{name}.txt"
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", encoding="utf-8") as rows_file:
        started = time.perf_counter()
        with log.open("w", encoding="utf-8") as output:
            # stderr is left to the terminal: the scripts' progress bars are drawn there.
            done = subprocess.run(  # noqa: S603 - our own scripts, fixed arguments
                [sys.executable, str(BENCH / f"{name}.py"), *arguments],
                cwd=ROOT,
                env={**os.environ, ROWS_ENV: rows_file.name},
                stdout=output,
                check=False,
            )
        seconds = time.perf_counter() - started
        rows = [json.loads(line) for line in rows_file.read().splitlines() if line]
    state = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    console.print(f"{name}.py: {state} in {seconds:.0f} s, {len(rows)} rows; output in {log}")
    if done.returncode != 0:
        console.print(log.read_text(encoding="utf-8")[-2000:])
    return {
        "script": name,
        "arguments": arguments,
        "seconds": round(seconds, 1),
        "returncode": done.returncode,
        "output": str(log.relative_to(ROOT)),
        "rows": rows,
    }


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[dict[str, Any]]) -> Table:
    view = Table(title="make bench: medians, each against its baseline measured in the same run")
    for column in ("script", "scenario", "size", "median", "baseline", "ratio", "target", ""):
        right = column in ("size", "median", "baseline", "ratio", "target")
        view.add_column(column, justify="right" if right else "left")
    for row in rows:
        rate = row["unit"].endswith("/s")
        view.add_row(
            row["script"],
            row["scenario"],
            "" if row["size"] is None else f"{row['size']:,}",
            number(row["value"], row["unit"]),
            number(row["baseline"], row["unit"]),
            "" if row["ratio"] is None else f"{row['ratio']:.2f}×",
            "" if row["target"] is None else f"{'≥' if rate else '≤'} {number(row['target'])}",
            {True: "[green]pass", False: "[red]FAIL", None: ""}[row["passed"]],
        )
    return view


def plots(rows: list[dict[str, Any]]) -> list[Path]:
    """One PNG per script (and unit, if its scenarios differ in units) with a scenario measured
    at two sizes or more: bench/out/<script>.png, or <script>-<unit>.png."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    series: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        if row["size"] is not None:
            series[row["script"], row["unit"]][row["scenario"]].append(row)
    units: dict[str, int] = defaultdict(int)
    for script, _unit in series:
        units[script] += 1
    written = []
    for (script, unit), scenarios in series.items():
        scenarios = {name: points for name, points in scenarios.items() if len(points) > 1}
        if not scenarios:
            continue
        figure, axes = pyplot.subplots(figsize=(7, 4.5))
        for scenario, points in scenarios.items():
            points.sort(key=lambda row: row["size"])
            sizes = [row["size"] for row in points]
            (line,) = axes.plot(sizes, [row["value"] for row in points], "o-", label=scenario)
            if all(row["baseline"] is not None for row in points):
                axes.plot(
                    sizes,
                    [row["baseline"] for row in points],
                    "s--",
                    color=line.get_color(),
                    label=f"{scenario}: baseline",
                )
            for row in points:
                if row["ratio"] is not None:
                    axes.annotate(
                        f"{row['ratio']:.1f}×",
                        (row["size"], row["value"]),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                    )
        axes.set_xscale("log")
        ticks = sorted({row["size"] for points in scenarios.values() for row in points})
        axes.set_xticks(ticks, [f"{size:,}" for size in ticks])
        axes.minorticks_off()
        axes.set_xlabel("size")
        axes.set_ylabel(points[0]["unit"])
        title = f"bench/{script}.py: median cost against size (ratio to baseline)"
        if max(ticks) >= 100 * min(ticks):
            # Log-log: cost that grows linearly with size is a straight line of slope one, and
            # a cost a participant stays flat, whatever the sizes.
            axes.set_yscale("log")
            title += ", log-log"
        else:
            axes.set_ylim(bottom=0)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        slug = unit.replace("/", "-").replace("µ", "u")
        path = OUT / (f"{script}.png" if units[script] == 1 else f"{script}-{slug}.png")
        figure.savefig(path, dpi=110)
        pyplot.close(figure)
        written.append(path)
    return written


def markdown(results: dict[str, Any]) -> str:
    """The rows as a Markdown table (for the README), with when and where they were measured."""
    lines = [
        f"Measured {results['started_at']} on {results['cpus']} cores, {results['database']}"
        f"{', FULL' if results['full'] else ''}{', SMALLEST' if results['smallest'] else ''}.",
        "",
        "| script | scenario | size | median | baseline (same run) | ratio | target | |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for row in results["rows"]:
        rate = row["unit"].endswith("/s")
        target = "" if row["target"] is None else f"{'≥' if rate else '≤'} {number(row['target'])}"
        lines.append(
            "| "
            + " | ".join(
                [
                    row["script"],
                    row["scenario"],
                    "" if row["size"] is None else f"{row['size']:,}",
                    number(row["value"], row["unit"]),
                    number(row["baseline"], row["unit"]),
                    "" if row["ratio"] is None else f"{row['ratio']:.2f}×",
                    target,
                    {True: "pass", False: "**missed**", None: ""}[row["passed"]],
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the long sizes too (hours)")
    parser.add_argument("--only", default="", help="comma-separated script names")
    parser.add_argument("--smallest", action="store_true", help="each script at a small size")
    parser.add_argument(
        "--markdown", action="store_true", help="print bench/results.json as Markdown, run nothing"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(RESULTS.read_text(encoding="utf-8"))), end="")
        return
    names = [name for name in args.only.split(",") if name] or list(SCRIPTS)
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown scripts: {', '.join(unknown)} (known: {', '.join(SCRIPTS)})")

    console = Console()
    if not console.is_terminal:
        console.width = 150  # a log file: no terminal to fit, and wrapped cells are hard to read
    database = os.environ.get("DATABASE_URL", "")
    postgres = database.startswith(("postgres://", "postgresql://"))
    if postgres:
        ensure_postgres_database(database)  # feeds.py migrates and uses it as it is
    started = dt.datetime.now(dt.UTC)
    scripts = []
    for position, name in enumerate(names, start=1):
        default, smallest, needs_postgres = SCRIPTS[name]
        if needs_postgres and not postgres:
            console.print(f"{name}.py: skipped, it needs DATABASE_URL=postgres://…")
            continue
        arguments = smallest if args.smallest else default
        if args.full and name in FULL_ARGUMENTS:
            arguments = [*default, *FULL_ARGUMENTS[name]]
        console.print(f"[bold]({position}/{len(names)}) {name}.py {' '.join(arguments)}")
        if postgres:
            unsettled = settle_postgres(database)
            if unsettled:
                console.print(unsettled)
        scripts.append(run_script(name, arguments, console))

    rows = [row for script in scripts for row in script["rows"]]
    pictures = plots(rows)
    results = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": where(database) or "sqlite (a temporary file)",
        "redis": where(os.environ.get("REDIS_URL", "")),
        "cpus": os.cpu_count(),
        "full": args.full,
        "smallest": args.smallest,
        "scripts": [{key: s[key] for key in s if key != "rows"} for s in scripts],
        "rows": rows,
        "plots": [str(path.relative_to(ROOT)) for path in pictures],
    }
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    console.print(table(rows))
    console.print(f"written: {RESULTS.relative_to(ROOT)}", *results["plots"])
    failed = [s["script"] for s in scripts if s["returncode"] != 0]
    missed = [f"{r['script']}: {r['scenario']}" for r in rows if r["passed"] is False]
    if failed or missed:
        sys.exit(
            f"failed: {', '.join(failed) or 'none'}; targets missed: {'; '.join(missed) or 'none'}"
        )


if __name__ == "__main__":
    main()
