"""Slot finder speed, with a baseline measured in the same run.

    .venv/bin/python bench/slots.py [--runs 15] [--bookings 1000]

Pure Python, no database: the engine's `find_slots` on a NIAMS-like site in New York
(clinic 07:30-17:30 on weekdays, US federal holidays closed, 1 PET/CT scanner 08:00-16:00,
16 infusion chairs, 1 CAVI device, 8 infusion nurses at one per two chairs: a site busy
enough to have 1,000 bookings in a week without being full). Prints medians of
`--runs` runs of:
- one visit: up to 5 slots for the NIAMS week-0 visit (FDG-PET/CT, CAVI, infusion) with
  `--bookings` existing bookings inside its 7-day window (target: under 50 ms), and the same
  search when the scanner is full all week (reason + out-of-window deviations);
- calendar: a 52-visit weekly JASMINE calendar (injection + observation in a chair, with a
  nurse) booked visit by visit, each booking's holds fed into the next search, among a year
  of other bookings (target: under 1 s);
- baseline: the same windows' candidate start times enumerated (local wall time -> UTC, every
  opening interval, the 15-minute grid) with no capacity check at all, i.e. what any finder
  must at least do to look at the window; the ratio is what the capacity checks add.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import report  # noqa: E402
from scheduler.engine.localtime import local_to_utc  # noqa: E402
from scheduler.engine.slots import (  # noqa: E402
    Hold,
    HoldIndex,
    Hours,
    Need,
    Resource,
    SiteCalendar,
    StaffShift,
    Step,
    VisitPlan,
    find_slots,
    index_holds,
)
from scheduler.sitecalendar import closures_between  # noqa: E402

ZONE = "America/New_York"
WEEK = range(5)
T = dt.time
DAY = dt.timedelta(days=1)
SITE_ZONE = ZoneInfo(ZONE)
CHAIRS = [f"Chair {n}" for n in range(1, 17)]

SITE = SiteCalendar(
    timezone=ZONE,
    hours=tuple(Hours(day, T(7, 30), T(17, 30)) for day in range(5)),
    closures=closures_between("US", dt.date(2026, 1, 1), dt.date(2027, 12, 31)),
    resources=(
        Resource("PET/CT scanner", "PET/CT 1", hours=tuple(Hours(d, T(8), T(16)) for d in WEEK)),
        *(Resource("infusion chair", name) for name in CHAIRS),
        Resource("CAVI device", "CAVI 1"),
    ),
    # Eight nurses, each watching two chairs.
    staff=tuple(StaffShift("infusion nurse", d, T(7, 30), T(17, 30), count=16) for d in range(5)),
)

NIAMS_WEEK0 = VisitPlan(
    "V2",
    (
        Step("LABS", 15),
        Step("FDGPET", 110, resources=(Need("PET/CT scanner"),)),
        Step("CAVI", 20, resources=(Need("CAVI device"),)),
        Step("INFUSION", 90, resources=(Need("infusion chair"),), staff=(Need("infusion nurse"),)),
        Step("EXAM", 30, relation="with"),
        Step("SLEQ", 20),
    ),
    240,
)

JASMINE_WEEKLY = VisitPlan(
    "TRT",
    (
        Step("INJECTION", 15, resources=(Need("infusion chair"),), staff=(Need("infusion nurse"),)),
        Step("OBSERVATION", 45, resources=(Need("infusion chair"),)),
    ),
    60,
)


def ny(day: dt.date, minute_of_day: int) -> dt.datetime:
    return local_to_utc(day, T(minute_of_day // 60, minute_of_day % 60), ZONE)


def bookings(days: list[dt.date], count: int, seed: int) -> list[Hold]:
    """`count` short bookings on the open days: chairs (with a nurse), CAVI, a few scans."""
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    open_days = [d for d in days if d.weekday() < 5 and d not in {c.day for c in SITE.closures}]
    holds: list[Hold] = []
    for day in open_days:  # two scans a day, morning and early afternoon
        holds += [Hold("PET/CT 1", ny(day, 8 * 60), ny(day, 10 * 60))]
        holds += [Hold("PET/CT 1", ny(day, 12 * 60), ny(day, 13 * 60 + 50))]
    while len(holds) < count:
        day = rng.choice(open_days)
        start = rng.randrange(7 * 60 + 30, 17 * 60, 5)
        minutes = rng.choice((10, 15, 20, 30))
        end = min(start + minutes, 17 * 60 + 30)
        kind = rng.random()
        if kind < 0.75:
            holds.append(Hold(rng.choice(CHAIRS), ny(day, start), ny(day, end)))
        elif kind < 0.95:
            holds.append(Hold("infusion nurse", ny(day, start), ny(day, end), staff=True))
        else:
            holds.append(Hold("CAVI 1", ny(day, start), ny(day, end)))
    return holds[:count]


def enumerate_candidates(first: dt.date, last: dt.date, step: int, span: int) -> int:
    """Baseline: every grid start in the window as local and UTC datetimes, no checks."""
    seen = 0
    day = first
    while day <= last:
        for hours in SITE.hours:
            if hours.weekday != day.weekday():
                continue
            opens = local_to_utc(day, hours.start, ZONE)
            closes = local_to_utc(day, hours.end, ZONE)
            at = opens
            while at + dt.timedelta(minutes=span) <= closes:
                at.astimezone(SITE_ZONE)
                seen += 1
                at += dt.timedelta(minutes=step)
        day += DAY
    return seen


def median_ms(run: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--bookings", type=int, default=1000)
    args = parser.parse_args()

    # One visit: target Wednesday 2026-11-18, window 15-21 Nov (Sun-Sat: 5 open days).
    target = dt.date(2026, 11, 18)
    first, last = target - 3 * DAY, target + 3 * DAY
    window = [first + n * DAY for n in range(7)]
    existing = bookings(window, args.bookings, seed=11)
    index = index_holds(existing)

    def one_visit(index: HoldIndex = index) -> Any:
        return find_slots(
            NIAMS_WEEK0, SITE, index, window_start=first, window_end=last, target=target
        )

    full = index.with_holds(Hold("PET/CT 1", ny(day, 8 * 60), ny(day, 16 * 60)) for day in window)

    def no_room() -> Any:
        return find_slots(
            NIAMS_WEEK0, SITE, full, window_start=first, window_end=last, target=target
        )

    visit_ms, found = median_ms(one_visit, args.runs)
    no_room_ms, refused = median_ms(no_room, args.runs)
    baseline_ms, candidates = median_ms(
        lambda: enumerate_candidates(first, last, 15, 235), args.runs
    )
    index_ms, _ = median_ms(lambda: index_holds(existing), args.runs)

    # The calendar: 52 weekly visits from Day 1 = Monday 2026-01-05, windows +/- 2 days,
    # among ~200 other bookings a week all year.
    day1 = dt.date(2026, 1, 5)
    year = [day1 - 7 * DAY + n * DAY for n in range(7 * 54)]
    background = index_holds(bookings(year, 200 * 54, seed=52))
    targets = [day1 + 7 * k * DAY for k in range(52)]

    def calendar() -> list[Any]:
        booked, held = [], background
        for week in targets:
            result = find_slots(
                JASMINE_WEEKLY,
                SITE,
                held,
                window_start=week - 2 * DAY,
                window_end=week + 2 * DAY,
                target=week,
                count=1,
            )
            slot = (result.slots or result.deviations)[0]
            held = held.with_holds(slot.holds)
            booked.append(slot)
        return booked

    def calendar_baseline() -> int:
        return sum(enumerate_candidates(w - 2 * DAY, w + 2 * DAY, 15, 60) for w in targets)

    calendar_ms, booked = median_ms(calendar, max(3, args.runs // 3))
    calendar_base_ms, calendar_candidates = median_ms(calendar_baseline, max(3, args.runs // 3))
    in_window = sum(1 for slot in booked if not slot.deviation)

    print(f"site: {ZONE}, 1 scanner, 16 chairs, 1 CAVI, 8 nurses at 1:2; median of {args.runs}")
    first_slot = f"{found.slots[0].start:%a %d %b %H:%M}" if found.slots else "none"
    print(
        f"one visit:  {visit_ms:8.2f} ms for {len(found.slots)} slots, {args.bookings} bookings in"
        f" the window (first: {first_slot}; target < 50 ms)"
    )
    print(
        f"no room:    {no_room_ms:8.2f} ms for the reason and {len(refused.deviations)} "
        f"deviations ({refused.reason})"
    )
    print(f"baseline:   {baseline_ms:8.2f} ms to enumerate the window's {candidates} starts")
    print(
        f"ratio:      {visit_ms / baseline_ms:8.2f} x baseline (no room: "
        f"{no_room_ms / baseline_ms:.2f} x)"
    )
    print(f"index:      {index_ms:8.2f} ms to index the {args.bookings} bookings (once)")
    print(
        f"calendar:   {calendar_ms:8.2f} ms for 52 weekly visits booked one by one "
        f"({in_window} in window) among {sum(len(b.spans) for b in background.by_key.values())}"
        f" bookings (target < 1000 ms)"
    )
    print(f"baseline:   {calendar_base_ms:8.2f} ms to enumerate their {calendar_candidates} starts")
    print(f"ratio:      {calendar_ms / calendar_base_ms:8.2f} x baseline")
    report(
        script="slots",
        scenario="slots for one visit",
        size=args.bookings,
        value=visit_ms,
        unit="ms",
        baseline=baseline_ms,
        target=50,
        runs=args.runs,
    )
    report(
        script="slots",
        scenario="slots for one visit, no room",
        size=args.bookings,
        value=no_room_ms,
        unit="ms",
        baseline=baseline_ms,
        runs=args.runs,
    )
    report(
        script="slots",
        scenario="52-visit calendar booked",
        value=calendar_ms,
        unit="ms",
        baseline=calendar_base_ms,
        target=1000,
        runs=max(3, args.runs // 3),
    )


if __name__ == "__main__":
    main()
