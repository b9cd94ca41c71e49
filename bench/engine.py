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
Each call plans for the next of DAYS different Day 1s in turn (the loops take the same ones), so
nothing about one participant can be kept from one call to the next: what the engine keeps is
only what it works out once per protocol snapshot. One more figure, "engine, cold", plans from
a fresh copy of the snapshot each call, i.e. with that work included, against the same loop (no
target). Every peer's dates are checked equal to the engine's before anything is timed, the
loops' for every Day 1.
Targets: the engine at most 3x the plain loop; at least 20x faster than django-scheduler.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
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
DAYS = 397  # Day 1s taken in turn: DAY1 and the 396 days after it
LOOP_TARGET = 3.0  # the engine at most 3x the plain loop
PEER_TARGET = 20.0  # and at least 20x faster than django-scheduler

Row = tuple[str, int, dt.date, dt.date, dt.date]


def median_us(
    work: Callable[[], object],
    runs: int,
    samples: int,
    prepare: Callable[[], object] | None = None,
) -> float:
    """Median over `samples` of the mean microseconds of `runs` calls (`prepare`, untimed,
    before each sample)."""
    means = []
    for _ in range(samples):
        if prepare is not None:
            prepare()
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

    from scheduler.engine import ParticipantFacts, Plan, ProtocolSnapshot, plan
    from scheduler.snapshot import snapshot_from_document
    from trials.protocol_file import parse_protocol

    snapshot = snapshot_from_document(
        parse_protocol(PROTOCOL.read_text(encoding="utf-8"), source=PROTOCOL.name)
    )
    day1s = [DAY1 + dt.timedelta(days=n) for n in range(DAYS)]
    every_facts = [ParticipantFacts(anchors={"day1": day1}) for day1 in day1s]
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

    next_facts = itertools.cycle(every_facts).__next__
    next_day1 = itertools.cycle(day1s).__next__
    # The rrule peer's own turn: each Day 1 with its first weekly visit as a datetime.
    next_start = itertools.cycle(
        [(day1, dt.datetime.combine(day1 + trt_offset, dt.time())) for day1 in day1s]
    ).__next__

    def rows(calendar: Plan) -> list[Row]:
        return [
            (v.visit_code, v.occurrence, v.target, v.window_start, v.window_end)
            for v in calendar.visits
        ]

    def engine() -> list[Row]:
        return rows(plan(snapshot, next_facts()))

    fresh: list[ProtocolSnapshot] = []

    def fresh_copies() -> None:
        """As many copies of the snapshot as a sample takes: equal, but each a new object."""
        fresh[:] = [dataclasses.replace(snapshot) for _ in range(args.runs)]

    def engine_cold() -> list[Row]:
        return rows(plan(fresh.pop(), next_facts()))

    def plain_loop() -> list[Row]:
        day1 = next_day1()
        target = day1 + scr_offset
        rows = [("SCR", 1, target, target - scr_before, target + scr_after)]
        first = day1 + trt_offset
        for k in range(count):
            target = first + k * every
            rows.append(("TRT", k + 1, target, target - trt_before, target + trt_after))
        target = target + fu_offset
        rows.append(("FU", 1, target, target - fu_before, target + fu_after))
        return rows

    def dateutil_rrule() -> list[Row]:
        day1, start = next_start()
        target = day1 + scr_offset
        rows = [("SCR", 1, target, target - scr_before, target + scr_after)]
        for k, moment in enumerate(rrule(WEEKLY, dtstart=start, count=count), start=1):
            target = moment.date()
            rows.append(("TRT", k, target, target - trt_before, target + trt_after))
        target = target + fu_offset
        rows.append(("FU", 1, target, target - fu_before, target + fu_after))
        return rows

    # Every Day 1 in turn: each cycle is back at its start after DAYS calls.
    for day1 in day1s:
        expected = engine()
        assert expected[1][2] == day1, f"the engine planned Day 1 {expected[1][2]}, not {day1}"
        assert len(expected) == 1 + count + 1, f"{len(expected)} visits planned"
        assert plain_loop() == expected, "the plain loop's rows differ from the engine's"
        assert dateutil_rrule() == expected, "dateutil's rows differ from the engine's"
        facts = ParticipantFacts(anchors={"day1": day1})
        cold = rows(plan(dataclasses.replace(snapshot), facts))
        assert cold == expected, "a fresh snapshot's rows differ"
    expected = rows(plan(snapshot, every_facts[0]))  # DAY1's, for django-scheduler

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
    cold_us = median_us(engine_cold, args.runs, args.samples, prepare=fresh_copies)
    loop_us = median_us(plain_loop, args.runs, args.samples)
    rrule_us = median_us(dateutil_rrule, args.runs, args.samples)
    period_us, generation_us = peer["period_us"], peer["generation_us"]

    print(
        f"JASMINE: {len(expected)} visits per calendar ({DAYS} Day 1s from {DAY1} in turn); "
        "all four agree"
    )
    print(f"medians of {args.samples} samples of {args.runs} calendars (µs per calendar):")
    print(f"  engine                          {engine_us:9.1f}")
    loop_ratio, rrule_ratio = engine_us / loop_us, engine_us / rrule_us
    print(
        f"  engine, cold (fresh snapshot)   {cold_us:9.1f}   cold / loop       "
        f"{cold_us / loop_us:6.2f}x (compiled in each call)"
    )
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
    report(
        scenario="plan one JASMINE calendar, cold (a fresh snapshot each call)",
        value=cold_us,
        baseline=loop_us,
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
