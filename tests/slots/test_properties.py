"""Properties of the slot finder, checked against a plain re-reading of its inputs.

Whatever the site, plan and bookings: no slot exceeds a resource's capacity or a staff kind's
shifts given the existing holds, falls outside the clinic's or the resource's hours, on a
closure or in an out-of-service period, or breaks the plan's step order; slots come in the
stated order; and for one-step plans the finder misses nothing a brute-force search finds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.engine.localtime import local_to_utc
from scheduler.engine.slots import (
    Closure,
    Hold,
    Hours,
    Need,
    OutOfService,
    Resource,
    SiteCalendar,
    SlotSearch,
    StaffShift,
    Step,
    VisitPlan,
    find_slots,
    plan_layout,
    plan_minutes,
)
from tests.conftest import bounded

# Zones with clock changes of one hour, none, and half an hour (Lord Howe).
ZONES = ["America/New_York", "Asia/Tokyo", "Europe/Berlin", "Australia/Lord_Howe"]
# Days near the 2026 clock changes of those zones, and ordinary ones.
FIRST_DAYS = [
    dt.date(2026, 3, 6),
    dt.date(2026, 3, 27),
    dt.date(2026, 4, 3),
    dt.date(2026, 10, 2),
    dt.date(2026, 10, 23),
    dt.date(2026, 10, 30),
    dt.date(2026, 11, 23),
]
RESOURCE_KINDS = ["chair", "scanner"]
Span = tuple[dt.datetime, dt.datetime]
Relation = Literal["after", "with", "overlap"]
STAFF_KIND = "nurse"


@st.composite
def day_intervals(draw: st.DrawFn) -> tuple[Hours, ...]:
    """Opening hours: mostly daytime, sometimes around midnight (the clock changes' hours)."""
    hours = []
    for weekday in range(7):
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
            start = draw(st.integers(6 * 4, 10 * 4) | st.integers(0, 22 * 4)) * 15
            length = draw(st.integers(2, 10 * 4)) * 15
            end = min(start + length, 24 * 60 - 1)
            hours.append(
                Hours(weekday, dt.time(start // 60, start % 60), dt.time(end // 60, end % 60))
            )
    return tuple(hours)


@dataclass(frozen=True)
class Case:
    site: SiteCalendar
    plan: VisitPlan
    holds: tuple[Hold, ...]
    window_start: dt.date
    window_end: dt.date
    target: dt.date
    step_minutes: int
    count: int
    per_day: int | None
    horizon_days: int
    not_before: dt.datetime | None


def instant(draw: st.DrawFn, zone: str, day: dt.date) -> dt.datetime:
    """A site-local instant on `day`, mostly in the daytime."""
    minute = draw(st.integers(6 * 60, 18 * 60) | st.integers(0, 24 * 60 - 1))
    return local_to_utc(day, dt.time(minute // 60, minute % 60), zone)


@st.composite
def cases(draw: st.DrawFn, single_step: bool = False) -> Case:
    zone = draw(st.sampled_from(ZONES))
    first = draw(st.sampled_from(FIRST_DAYS))
    span = draw(st.integers(0, 4))
    window_start = first + dt.timedelta(days=draw(st.integers(0, 2)))
    window_end = window_start + dt.timedelta(days=span)
    target = window_start + dt.timedelta(days=draw(st.integers(0, span)))
    days = span + 8
    resources = []
    for kind in RESOURCE_KINDS:
        for number in range(draw(st.integers(1, 3))):
            periods = tuple(
                OutOfService(start, start + dt.timedelta(minutes=draw(st.integers(15, 600))))
                for start in (
                    instant(draw, zone, first + dt.timedelta(days=draw(st.integers(-2, days))))
                    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2])))
                )
            )
            own = draw(st.sampled_from([False, False, True])) and draw(day_intervals()) or None
            capacity = draw(st.integers(1, 3))
            resources.append(Resource(kind, f"{kind} {number}", capacity, own, periods))
    clinic = draw(day_intervals())
    # Staff on duty: mostly in the clinic's hours (one shift each), sometimes at other times.
    on_duty = clinic if draw(st.sampled_from([True, True, False])) else draw(day_intervals())
    staff = tuple(
        StaffShift(STAFF_KIND, h.weekday, h.start, h.end, draw(st.integers(1, 3))) for h in on_duty
    )
    closures = tuple(
        Closure(first + dt.timedelta(days=n), "closed")
        for n in draw(st.sets(st.integers(0, days), max_size=3))
    )
    site = SiteCalendar(zone, clinic, closures, tuple(resources), staff)

    steps: list[Step] = []
    for index in range(1 if single_step else draw(st.integers(1, 4))):
        minutes = draw(st.integers(1, 24)) * 5
        relation: Relation = (
            "after" if index == 0 else draw(st.sampled_from(["after", "with", "overlap"]))
        )
        overlap = draw(st.integers(1, steps[-1].minutes)) if relation == "overlap" else 0
        kinds = draw(st.lists(st.sampled_from(RESOURCE_KINDS), max_size=2, unique=True))
        needs = tuple(Need(kind, draw(st.integers(1, 2))) for kind in kinds)
        staff_needs = (
            (Need(STAFF_KIND, draw(st.integers(1, 2))),) if draw(st.integers(0, 2)) == 0 else ()
        )
        steps.append(Step(f"P{index}", minutes, needs, staff_needs, relation, overlap))
    plan = VisitPlan("V", tuple(steps), 0)
    plan = VisitPlan("V", plan.steps, plan_minutes(plan))

    holds: list[Hold] = []
    for _ in range(draw(st.integers(0, 40))):
        # Bookings crowd the window's days (and the next ones, for the deviations).
        day = (window_start - first).days + draw(st.integers(-1, span + 1))
        start = instant(draw, zone, first + dt.timedelta(days=day))
        end = start + dt.timedelta(minutes=draw(st.integers(1, 48)) * 5)
        if draw(st.integers(0, 3)) == 0:
            holds.append(Hold(STAFF_KIND, start, end, draw(st.integers(1, 2)), staff=True))
        else:
            unit = draw(st.sampled_from(resources))
            holds.append(Hold(unit.name, start, end, draw(st.integers(1, unit.capacity))))
    moment = instant(draw, zone, first + dt.timedelta(days=draw(st.integers(0, days))))
    not_before = draw(st.sampled_from([None, None, moment]))
    return Case(
        site,
        plan,
        tuple(holds),
        window_start,
        window_end,
        target,
        draw(st.sampled_from([5, 15, 30, 60])),
        draw(st.integers(1, 8)),
        draw(st.none() | st.integers(1, 3)),
        draw(st.integers(0, 3)),
        not_before,
    )


def search(case: Case) -> SlotSearch:
    return find_slots(
        case.plan,
        case.site,
        case.holds,
        window_start=case.window_start,
        window_end=case.window_end,
        target=case.target,
        step_minutes=case.step_minutes,
        count=case.count,
        per_day=case.per_day,
        horizon_days=case.horizon_days,
        not_before=case.not_before,
    )


def spans(site: SiteCalendar, hours: tuple[Hours, ...], day: dt.date) -> list[Span]:
    """A day's open intervals as instants; overlapping or touching ones are one."""
    joined: list[Span] = []
    for start, end in sorted(
        (local_to_utc(day, h.start, site.timezone), local_to_utc(day, h.end, site.timezone))
        for h in hours
        if h.weekday == day.weekday()
    ):
        if end <= start:
            continue
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def level(pieces: list[tuple[dt.datetime, dt.datetime, int]], at: dt.datetime) -> int:
    return sum(count for start, end, count in pieces if start <= at < end)


def within_limits(
    pieces: list[tuple[dt.datetime, dt.datetime, int]],
    limit: list[tuple[dt.datetime, dt.datetime, int]],
    start: dt.datetime,
    end: dt.datetime,
) -> bool:
    """Held never above the limit at any instant of [start, end)."""
    moments = {start} | {s for s, _, _ in pieces + limit if start <= s < end}
    moments |= {e for _, e, _ in pieces + limit if start <= e < end}
    return all(level(pieces, t) <= level(limit, t) for t in moments)


def check_slot(
    case: Case,
    slot_start: dt.datetime,
    slot_end: dt.datetime,
    holds: tuple[Hold, ...],
    day: dt.date,
) -> None:
    site = case.site
    zone = ZoneInfo(site.timezone)
    assert slot_start.astimezone(zone).date() == day
    assert day not in {c.day for c in site.closures}
    assert slot_end - slot_start == dt.timedelta(minutes=case.plan.max_minutes)
    assert any(a <= slot_start and slot_end <= b for a, b in spans(site, site.hours, day))
    if case.not_before is not None:
        assert slot_start >= case.not_before
    # Step order: each hold where the plan puts its step, and every need covered exactly.
    layout = plan_layout(case.plan)
    for index, step in enumerate(case.plan.steps):
        mine = [h for h in holds if h.procedure == step.procedure]
        for hold in mine:
            assert hold.start == slot_start + dt.timedelta(minutes=layout[index][0])
            assert hold.end == slot_start + dt.timedelta(minutes=layout[index][1])
        for need in step.resources:
            assert sum(h.count for h in mine if not h.staff and h.kind == need.kind) == need.count
        for need in step.staff:
            assert sum(h.count for h in mine if h.staff and h.kind == need.kind) == need.count
    units = {r.name: r for r in site.resources}
    for hold in holds:
        if hold.staff:
            continue
        unit = units[hold.resource]
        assert unit.kind == hold.kind
        own = site.hours if unit.hours is None else unit.hours
        assert any(a <= hold.start and hold.end <= b for a, b in spans(site, own, day))
        assert not any(p.start < hold.end and hold.start < p.end for p in unit.out_of_service)
    # Capacity, counting the existing holds and the slot's own.
    everything = list(case.holds) + list(holds)
    for name, unit in units.items():
        pieces = [
            (h.start, h.end, h.count) for h in everything if not h.staff and h.resource == name
        ]
        mine = [h for h in holds if not h.staff and h.resource == name]
        limit = [
            (slot_start - dt.timedelta(days=2), slot_end + dt.timedelta(days=2), unit.capacity)
        ]
        for hold in mine:
            assert within_limits(pieces, limit, hold.start, hold.end)
    shifts = [
        (a, b, shift.count)
        for shift in site.staff
        for a, b in spans(site, (Hours(shift.weekday, shift.start, shift.end),), day)
    ]  # one shift at a time: shifts add up
    pieces = [(h.start, h.end, h.count) for h in everything if h.staff]
    for hold in holds:
        if hold.staff:
            assert within_limits(pieces, shifts, hold.start, hold.end)


@settings(max_examples=bounded(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_no_slot_breaks_hours_closures_capacity_or_order(case: Case) -> None:
    found = search(case)
    assert not (found.slots and found.deviations)
    assert (found.reason == "") == bool(found.slots)
    for slot in found.slots + found.deviations:
        check_slot(case, slot.start_utc, slot.end_utc, slot.holds, slot.day)
        assert slot.start == slot.start_utc and str(slot.start.tzinfo) == case.site.timezone
        inside = case.window_start <= slot.day <= case.window_end
        assert (slot.days_out == 0) == inside
        if slot.days_out < 0:
            assert slot.days_out == (slot.day - case.window_start).days
        if slot.days_out > 0:
            assert slot.days_out == (slot.day - case.window_end).days
            assert slot.days_out <= case.horizon_days
    assert len(found.slots) <= case.count and len(found.deviations) <= case.count
    if not found.slots and not any(o.kind == "missing" for o in found.obstacles):
        # The reason accounts for every day of the window.
        width = (case.window_end - case.window_start).days
        window = {case.window_start + dt.timedelta(days=n) for n in range(width + 1)}
        assert {day for o in found.obstacles for day in o.days} == window
        assert found.reason.startswith(f"window {case.window_start.isoformat()}")
    order = [(abs((s.day - case.target).days), s.day, s.start_utc) for s in found.slots]
    assert order == sorted(order)
    order = [(abs(s.days_out), s.day, s.start_utc) for s in found.deviations]
    assert order == sorted(order)
    if case.per_day is not None:
        for slots in (found.slots, found.deviations):
            days = [s.day for s in slots]
            assert all(days.count(day) <= case.per_day for day in days)


def brute_force_first(case: Case) -> dt.datetime | None:
    """The first feasible start of a one-step plan by the stated preference, found the slow
    way: every start on the grid of every day, capacity read minute by minute."""
    site = case.site
    (step,) = case.plan.steps
    width = (case.window_end - case.window_start).days
    days = sorted(
        (case.window_start + dt.timedelta(days=n) for n in range(width + 1)),
        key=lambda d: (abs((d - case.target).days), d),
    )
    closed = {c.day for c in site.closures}
    minute = dt.timedelta(minutes=1)
    for day in days:
        if day in closed:
            continue
        starts = []
        for opens, closes in sorted(spans(site, site.hours, day)):
            at = opens
            while at + dt.timedelta(minutes=step.minutes) <= closes:
                starts.append(at)
                at += dt.timedelta(minutes=case.step_minutes)
        for start in sorted(starts):
            if case.not_before is not None and start < case.not_before:
                continue
            end = start + dt.timedelta(minutes=step.minutes)
            moments = [start + n * minute for n in range(step.minutes)]

            def free(unit: Resource, at: dt.datetime, day: dt.date = day) -> int:
                own = site.hours if unit.hours is None else unit.hours
                if not any(a <= at < b for a, b in spans(site, own, day)):
                    return 0
                if any(p.start <= at < p.end for p in unit.out_of_service):
                    return 0
                used = sum(
                    h.count
                    for h in case.holds
                    if not h.staff and h.resource == unit.name and h.start <= at < h.end
                )
                return unit.capacity - used

            ok = True
            for need in step.resources:
                units = [r for r in site.resources if r.kind == need.kind]
                if sum(max(0, min(free(u, t) for t in moments)) for u in units) < need.count:
                    ok = False
            for need in step.staff:
                for t in moments:
                    on = sum(
                        s.count
                        for s in site.staff
                        for a, b in spans(site, (Hours(s.weekday, s.start, s.end),), day)
                        if a <= t < b
                    )
                    used = sum(h.count for h in case.holds if h.staff and h.start <= t < h.end)
                    if on - used < need.count:
                        ok = False
                        break
            if ok and end > start:
                return start
    return None


@settings(max_examples=bounded(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(single_step=True))
def test_a_one_step_visit_gets_the_first_start_a_brute_force_search_finds(case: Case) -> None:
    found = search(case)
    expected = brute_force_first(case)
    assert (found.slots[0].start_utc if found.slots else None) == expected
