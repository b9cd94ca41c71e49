"""One JASMINE calendar through the pure engine, against a plain loop and two peers.

    .venv/bin/python bench/engine.py [--runs 2000] [--samples 7] [--peer-runs 200]

No database for the engine. The calendar is JASMINE's (seeds/protocols/002_jasmine_myositis.yaml):
screening 21 days before Day 1, 52 weekly treatment visits from Day 1, a follow-up 28 days
after the last of them, each with its window. Each figure is the median of --samples samples,
a sample being the mean over --runs calendars (--peer-runs for django-scheduler):
- engine: `scheduler.engine.plan` on the protocol's snapshot (parsed once), Day 1 given;
- baseline: a plain `timedelta` loop writing the same (visit, occurrence, target, window start,
  window end) rows, its numbers read from the snapshot beforehand;
- peer dateutil: `rrule(WEEKLY, count=52)` for the weekly visits, the two single visits and
  every window by `timedelta`: the same rows;
- peer django-scheduler (its models, in its own process: bench/peer_django_scheduler.py): a
  Calendar with a weekly Rule and three Events, its occurrences listed through `Period`, and
  through its occurrence generation alone (no database reads).
Every peer's dates are checked equal to the engine's before anything is timed.
Targets: the engine at most 3x the plain loop; at least 20x faster than django-scheduler.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import report  # noqa: E402

PROTOCOL = ROOT / "seeds/protocols/002_jasmine_myositis.yaml"
DAY1 = dt.date(2026, 3, 2)
LOOP_TARGET = 3.0  # the engine at most 3x the plain loop
PEER_TARGET = 20.0  # and at least 20x faster than django-scheduler

Row = tuple[str, int, dt.date, dt.date, dt.date]


def median_us(work: Callable[[], object], runs: int, samples: int) -> float:
    """Median over `samples` of the mean microseconds of `runs` calls."""
    means = []
    for _ in range(samples):
        started = time.perf_counter()
        for _ in range(runs):
            work()
        means.append((time.perf_counter() - started) / runs * 1e6)
    return statistics.median(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="calendars per sample")
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--peer-runs", type=int, default=200, help="django-scheduler calendars")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

    from dateutil.rrule import WEEKLY, rrule  # type: ignore[import-untyped]

    from scheduler.engine import ParticipantFacts, plan
    from scheduler.snapshot import snapshot_from_document
    from trials.protocol_file import parse_protocol

    snapshot = snapshot_from_document(
        parse_protocol(PROTOCOL.read_text(encoding="utf-8"), source=PROTOCOL.name)
    )
    facts = ParticipantFacts(anchors={"day1": DAY1})
    specs = {visit.code: visit for visit in snapshot.visits}
    screening, treatment, follow_up = specs["SCR"], specs["TRT"], specs["FU"]
    assert treatment.repeat_every_days is not None
    assert follow_up.anchor.visit == "TRT" and follow_up.anchor.occurrence is None
    # The loops' numbers, read from the protocol once (not per calendar).
    scr_offset = dt.timedelta(days=screening.offset_days)
    scr_before = dt.timedelta(days=screening.window_before)
    scr_after = dt.timedelta(days=screening.window_after)
    trt_offset = dt.timedelta(days=treatment.offset_days)
    every = dt.timedelta(days=treatment.repeat_every_days)
    count = treatment.repeat_count
    trt_before = dt.timedelta(days=treatment.window_before)
    trt_after = dt.timedelta(days=treatment.window_after)
    fu_offset = dt.timedelta(days=follow_up.offset_days)
    fu_before = dt.timedelta(days=follow_up.window_before)
    fu_after = dt.timedelta(days=follow_up.window_after)

    def engine() -> list[Row]:
        calendar = plan(snapshot, facts)
        return [
            (v.visit_code, v.occurrence, v.target, v.window_start, v.window_end)
            for v in calendar.visits
        ]

    def plain_loop() -> list[Row]:
        target = DAY1 + scr_offset
        rows = [("SCR", 1, target, target - scr_before, target + scr_after)]
        first = DAY1 + trt_offset
        for k in range(count):
            target = first + k * every
            rows.append(("TRT", k + 1, target, target - trt_before, target + trt_after))
        target = target + fu_offset
        rows.append(("FU", 1, target, target - fu_before, target + fu_after))
        return rows

    start = dt.datetime.combine(DAY1 + trt_offset, dt.time())

    def dateutil_rrule() -> list[Row]:
        target = DAY1 + scr_offset
        rows = [("SCR", 1, target, target - scr_before, target + scr_after)]
        for k, moment in enumerate(rrule(WEEKLY, dtstart=start, count=count), start=1):
            target = moment.date()
            rows.append(("TRT", k, target, target - trt_before, target + trt_after))
        target = target + fu_offset
        rows.append(("FU", 1, target, target - fu_before, target + fu_after))
        return rows

    expected = engine()
    assert len(expected) == 1 + count + 1, f"{len(expected)} visits planned"
    assert plain_loop() == expected, "the plain loop's rows differ from the engine's"
    assert dateutil_rrule() == expected, "dateutil's rows differ from the engine's"

    # django-scheduler in its own process (its own models and settings).
    durations = {code: spec.duration_minutes for code, spec in specs.items()}
    peer_input = {
        "day1": DAY1.isoformat(),
        "every_days": treatment.repeat_every_days,
        "count": count,
        "treatment_offset_days": treatment.offset_days,
        "screening_offset_days": screening.offset_days,
        "follow_up_offset_days": follow_up.offset_days,
        "screening_minutes": durations["SCR"],
        "treatment_minutes": durations["TRT"],
        "follow_up_minutes": durations["FU"],
    }
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [
            sys.executable,
            str(ROOT / "bench/peer_django_scheduler.py"),
            "--runs",
            str(args.peer_runs),
            "--samples",
            str(args.samples),
        ],
        input=json.dumps(peer_input),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    peer: dict[str, Any] = json.loads(done.stdout)
    engine_dates = sorted(row[2].isoformat() for row in expected)
    assert peer["dates"] == engine_dates, "django-scheduler's occurrences differ from the engine's"

    engine_us = median_us(engine, args.runs, args.samples)
    loop_us = median_us(plain_loop, args.runs, args.samples)
    rrule_us = median_us(dateutil_rrule, args.runs, args.samples)
    period_us, generation_us = peer["period_us"], peer["generation_us"]

    print(f"JASMINE: {len(expected)} visits per calendar (Day 1 {DAY1}); all four agree")
    print(f"medians of {args.samples} samples of {args.runs} calendars (µs per calendar):")
    print(f"  engine                          {engine_us:9.1f}")
    loop_ratio, rrule_ratio = engine_us / loop_us, engine_us / rrule_us
    print(
        f"  plain timedelta loop (baseline) {loop_us:9.1f}   engine / loop     {loop_ratio:6.2f}x"
    )
    print(
        f"  dateutil rrule                  {rrule_us:9.1f}   engine / rrule    {rrule_ratio:6.2f}x"
    )
    print(
        f"  django-scheduler, Period        {period_us:9.1f}   "
        f"django-scheduler / engine {period_us / engine_us:6.1f}x ({args.peer_runs} per sample)"
    )
    print(
        f"  django-scheduler, generation    {generation_us:9.1f}   "
        f"django-scheduler / engine {generation_us / engine_us:6.1f}x (no database reads)"
    )
    common = {"script": "engine", "unit": "µs", "runs": args.samples}
    report(
        scenario="plan one JASMINE calendar",
        value=engine_us,
        baseline=loop_us,
        target=round(LOOP_TARGET * loop_us, 2),
        **common,
    )
    report(scenario="dateutil rrule, same calendar (peer)", value=rrule_us, **common)
    # The engine against django-scheduler: the engine's cost, django-scheduler's as the
    # baseline, so the ratio is the engine's share of it; the target is 1/20 of its cost.
    report(
        scenario="engine, against django-scheduler Period (≥ 20x faster)",
        value=engine_us,
        baseline=period_us,
        target=round(period_us / PEER_TARGET, 2),
        **common,
    )
    report(
        scenario="engine, against django-scheduler generation only",
        value=engine_us,
        baseline=generation_us,
        **common,
    )


if __name__ == "__main__":
    main()
