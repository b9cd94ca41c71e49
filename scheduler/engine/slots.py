"""The slot finder: a visit's plan inside the day + a site calendar + what is already booked
-> the start times that fit, in the coordinator's order of preference. Pure: no clock, no I/O.

Rules (also in the README):
- A visit's **plan** is an ordered list of steps. Each step holds resource kinds and staff
  kinds (with a count) for its whole duration and is placed relative to the step just before
  it: ``after`` it (when it ends), ``with`` it (when it starts), or ``overlap`` N minutes (N
  minutes before it ends). The first step starts the visit. The visit lasts from its start to
  the end of its last-ending step, and must not exceed the visit's stated maximum
  (`plan_problems` / `validate_plan` say by how much, for the protocol importer).
- Durations are **real minutes**; opening hours are the **site's wall clock** in its IANA zone
  (`localtime.local_to_utc` turns them into instants, with its rule for clock changes). So an
  08:00-16:00 day is 8 real hours even on a clock-change day, and starts are counted in real
  minutes from each opening interval's start: a slot never starts at a local time the clocks
  skipped, and on a fall-back night 01:00 EDT and 01:00 EST are two different slots.
- A whole visit lies inside **one** opening interval of the clinic on a day that is not a
  closure (a lunch break splits the day; overlapping or touching intervals are one). Each
  step's resource hold lies inside that resource's hours (its own, or the clinic's) and
  outside its out-of-service periods.
- **Capacity**: a resource unit holds at most `capacity` at any instant, counting existing
  holds and the slot's own; a staff kind holds at most the sum of its shifts' counts at that
  instant. A ratio (one infusion nurse per two chairs) is staff capacity counted in what a
  person can take at once: one nurse on shift is `count=2` of "infusion nurse".
- A step needing several of a kind may spread over several units; the unit a previous step of
  the same visit used is tried first (the participant keeps their chair). Within one slot, two
  steps' holds on the same unit are counted as if they overlapped (conservative, never over).
- **Preference**: days inside the window nearest the target first (a tie: the earlier day),
  then the earliest start in the day. Only when no slot fits inside the window, the nearest days
  outside it (within `horizon_days`, same tie rule) give **deviations**, each with its signed
  days out (-2: two days before the window opens; +3: three days after it closes), and the
  result says why in the coordinator's words, per kind of obstacle.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from scheduler.engine.localtime import local_to_utc

DAY = dt.timedelta(days=1)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# --------------------------------------------------------------------------- the visit's plan


@dataclass(frozen=True)
class Need:
    """`count` of a resource kind ("PET/CT scanner") or a staff kind ("infusion nurse")."""

    kind: str
    count: int = 1


@dataclass(frozen=True)
class Step:
    """One procedure of a visit, placed relative to the step just before it.

    relation: "after" (starts when the previous step ends), "with" (starts when it starts) or
    "overlap" (starts `overlap_minutes` before it ends). The first step starts the visit.
    """

    procedure: str
    minutes: int
    resources: tuple[Need, ...] = ()
    staff: tuple[Need, ...] = ()
    relation: Literal["after", "with", "overlap"] = "after"
    overlap_minutes: int = 0


@dataclass(frozen=True)
class VisitPlan:
    """What a visit does inside the day; `visit` names it in messages ("V2 (week 0)")."""

    visit: str
    steps: tuple[Step, ...]
    max_minutes: int


class SlotPlanError(ValueError):
    """A visit plan that cannot be used; `problems` says which and why."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def plan_layout(plan: VisitPlan) -> tuple[tuple[int, int], ...]:
    """Each step's (start, end) in minutes from the visit's start, in the plan's order."""
    layout: list[tuple[int, int]] = []
    for index, step in enumerate(plan.steps):
        if index == 0:
            start = 0
        else:
            before_start, before_end = layout[-1]
            if step.relation == "with":
                start = before_start
            elif step.relation == "overlap":
                start = max(before_start, before_end - step.overlap_minutes)
            else:
                start = before_end
        layout.append((start, start + step.minutes))
    return tuple(layout)


def plan_minutes(plan: VisitPlan) -> int:
    """How long the visit lasts: from its start to the end of its last-ending step."""
    return max((end for _, end in plan_layout(plan)), default=0)


def plan_problems(plan: VisitPlan) -> list[str]:
    """What is wrong with a plan, in words that name the visit, the step and the minutes."""
    problems: list[str] = []
    where = f"visit {plan.visit}"
    if not plan.steps:
        problems.append(f"{where}: the plan has no steps")
    for index, step in enumerate(plan.steps):
        at = f"{where}, step {index + 1} ({step.procedure})"
        if step.minutes <= 0:
            problems.append(f"{at}: lasts {step.minutes} minutes; a step lasts at least 1")
        if step.relation not in ("after", "with", "overlap"):
            problems.append(f"{at}: relation {step.relation!r} is not after, with or overlap")
        if index == 0 and step.relation != "after":
            problems.append(f"{at}: the first step starts the visit; it cannot be {step.relation}")
        if step.relation == "overlap" and index > 0:
            previous = plan.steps[index - 1]
            if not 0 < step.overlap_minutes <= previous.minutes:
                problems.append(
                    f"{at}: overlaps {previous.procedure} by {step.overlap_minutes} minutes; "
                    f"it can overlap by 1 to {previous.minutes}"
                )
        for need in (*step.resources, *step.staff):
            if need.count < 1:
                problems.append(f"{at}: needs {need.count} {need.kind}; at least 1")
    if plan.steps and not problems:
        total = plan_minutes(plan)
        if total > plan.max_minutes:
            layout = plan_layout(plan)
            parts = ", ".join(
                f"{step.procedure} {start}-{end}"
                for step, (start, end) in zip(plan.steps, layout, strict=True)
            )
            problems.append(
                f"{where}: its steps take {total} minutes ({parts}) but the visit lasts at most "
                f"{plan.max_minutes}; {total - plan.max_minutes} minutes too many"
            )
    return problems


def validate_plan(plan: VisitPlan) -> VisitPlan:
    """The plan itself, or SlotPlanError with every problem (for the protocol importer)."""
    problems = plan_problems(plan)
    if problems:
        raise SlotPlanError(problems)
    return plan


# ---------------------------------------------------------------------- the site's calendar


@dataclass(frozen=True)
class Hours:
    """Open from `start` to `end` (site wall clock, end > start) on a weekday (0 is Monday)."""

    weekday: int
    start: dt.time
    end: dt.time


@dataclass(frozen=True)
class Closure:
    """A local date the site is closed, with its reason ("Thanksgiving Day")."""

    day: dt.date
    reason: str


@dataclass(frozen=True)
class OutOfService:
    """A period (aware datetimes) a resource cannot be used."""

    start: dt.datetime
    end: dt.datetime
    reason: str = ""


@dataclass(frozen=True)
class Resource:
    """A unit of a kind ("Chair 3" of "infusion chair"), holding up to `capacity` at once.

    hours: its own hours, which only narrow the clinic's; None means the clinic's hours.
    """

    kind: str
    name: str
    capacity: int = 1
    hours: tuple[Hours, ...] | None = None
    out_of_service: tuple[OutOfService, ...] = ()


@dataclass(frozen=True)
class StaffShift:
    """`count` of a staff kind on duty from `start` to `end` on a weekday (0 is Monday)."""

    kind: str
    weekday: int
    start: dt.time
    end: dt.time
    count: int = 1


@dataclass(frozen=True)
class SiteCalendar:
    timezone: str
    hours: tuple[Hours, ...]
    closures: tuple[Closure, ...] = ()
    resources: tuple[Resource, ...] = ()
    staff: tuple[StaffShift, ...] = ()


def site_problems(site: SiteCalendar) -> list[str]:
    """What is wrong with a site calendar, for whoever edits it (the finder ignores an interval
    that ends before it starts, and counts a duplicated resource name once)."""
    problems: list[str] = []
    try:
        ZoneInfo(site.timezone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        problems.append(f"timezone {site.timezone!r} is not an IANA zone")

    def check(what: str, hours: Iterable[Hours | StaffShift]) -> None:
        for h in hours:
            if not 0 <= h.weekday <= 6:
                problems.append(f"{what}: weekday {h.weekday} is not 0 (Monday) to 6 (Sunday)")
            if h.end <= h.start:
                problems.append(f"{what}: {h.start:%H:%M}-{h.end:%H:%M} must end after it starts")

    check("opening hours", site.hours)
    names: set[str] = set()
    for resource in site.resources:
        what = f"resource {resource.name} ({resource.kind})"
        if resource.name in names:
            problems.append(f"{what}: another resource has the same name")
        names.add(resource.name)
        if resource.capacity < 1:
            problems.append(f"{what}: capacity {resource.capacity}; at least 1")
        check(what, resource.hours or ())
        for period in resource.out_of_service:
            if period.start.tzinfo is None or period.end.tzinfo is None:
                problems.append(f"{what}: out-of-service times need a timezone")
            elif period.end <= period.start:
                problems.append(f"{what}: an out-of-service period must end after it starts")
    for shift in site.staff:
        check(f"staff {shift.kind}", (shift,))
        if shift.count < 1:
            problems.append(f"staff {shift.kind}: {shift.count} on duty; at least 1")
    return problems


@dataclass(frozen=True)
class Hold:
    """Something held from `start` to `end` (aware datetimes; slots give them in UTC).

    resource: a resource's name, or for staff (`staff=True`) the staff kind. Existing bookings
    need only resource, start, end and count (and staff); a slot's holds also say the kind and
    the procedure, and can be fed back as existing holds as they are.
    """

    resource: str
    start: dt.datetime
    end: dt.datetime
    count: int = 1
    kind: str = ""
    procedure: str = ""
    staff: bool = False


# ------------------------------------------------------------------------------ the answer


@dataclass(frozen=True)
class Slot:
    """A feasible start: local times are aware datetimes in the site's zone."""

    start: dt.datetime
    end: dt.datetime
    start_utc: dt.datetime
    end_utc: dt.datetime
    day: dt.date
    # 0 inside the window; -n: n days before it opens; +n: n days after it closes.
    days_out: int
    holds: tuple[Hold, ...]

    @property
    def deviation(self) -> bool:
        return self.days_out != 0


ObstacleKind = Literal["missing", "closed", "past", "short", "unavailable", "full"]


@dataclass(frozen=True)
class Obstacle:
    """Why some days of the window have no slot: one kind of obstacle, one subject, its days.

    kind: "missing" (the site has no such resource or staff), "closed" (subject: the closure's
    reason, or "weekend"/"no opening hours"), "past" (before `not_before`), "short" (no opening
    interval long enough for the visit), "unavailable" (subject: a resource or staff kind not
    there at the needed times even with nothing booked), "full" (subject: the kind whose
    bookings leave no room).
    """

    kind: ObstacleKind
    subject: str
    days: tuple[dt.date, ...]
    text: str
    # "unavailable": the reasons of the out-of-service periods on those days ("" for none
    # given); "short": the visit's length in minutes. For faces that word it themselves.
    out_of_service: tuple[str, ...] = ()
    minutes: int = 0


@dataclass(frozen=True)
class SlotSearch:
    """slots: inside the window, best first. deviations: only when no slot fits inside it, the
    nearest slots outside, best first. reason: empty when there are slots, else the
    coordinator's sentence built from `obstacles`."""

    slots: tuple[Slot, ...]
    deviations: tuple[Slot, ...] = ()
    obstacles: tuple[Obstacle, ...] = ()
    reason: str = ""


# --------------------------------------------------------------------- holds, indexed once


def _floor(instant: dt.datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError(f"{instant!r} is naive; holds and periods need aware datetimes")
    return int(instant.timestamp() // 60)


def _ceil(instant: dt.datetime) -> int:
    _floor(instant)  # refuses a naive datetime
    return -int(-instant.timestamp() // 60)


def _utc(minute: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(minute * 60, dt.UTC)


Key = tuple[bool, str]  # (staff?, resource name or staff kind)


@dataclass(frozen=True)
class _Booked:
    starts: tuple[int, ...]
    spans: tuple[tuple[int, int, int], ...]  # (start, end, count), sorted by start
    longest: int


@dataclass(frozen=True)
class HoldIndex:
    """Existing holds by resource (or staff kind), sorted, in whole minutes (widened outwards).

    Build it once with `index_holds` and extend it with `with_holds` while booking visit after
    visit: only the keys touched are copied.
    """

    by_key: dict[Key, _Booked] = field(default_factory=dict)

    def with_holds(self, holds: Iterable[Hold]) -> HoldIndex:
        added: dict[Key, list[tuple[int, int, int]]] = {}
        for hold in holds:
            start, end = _floor(hold.start), _ceil(hold.end)
            if end > start and hold.count > 0:
                added.setdefault((hold.staff, hold.resource), []).append((start, end, hold.count))
        if not added:
            return self
        by_key = dict(self.by_key)
        for key, spans in added.items():
            old = by_key.get(key)
            merged = sorted([*(old.spans if old else ()), *spans])
            by_key[key] = _Booked(
                tuple(s for s, _, _ in merged),
                tuple(merged),
                max(e - s for s, e, _ in merged),
            )
        return HoldIndex(by_key)

    def overlapping(self, key: Key, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        booked = self.by_key.get(key)
        if booked is None:
            return
        low = bisect_left(booked.starts, start - booked.longest)
        high = bisect_left(booked.starts, end)
        for span in booked.spans[low:high]:
            if span[1] > start:
                yield span


def index_holds(holds: Iterable[Hold]) -> HoldIndex:
    return HoldIndex().with_holds(holds)


# ------------------------------------------------------------------------------ the search


def _profile(
    day_start: int, day_end: int, edges: Iterable[tuple[int, int, int]]
) -> tuple[list[int], list[int]]:
    """A step function from (start, end, +/-amount) pieces: breakpoints and levels."""
    deltas: dict[int, int] = {day_start: 0}
    for start, end, amount in edges:
        start, end = max(start, day_start), min(end, day_end)
        if end > start:
            deltas[start] = deltas.get(start, 0) + amount
            deltas[end] = deltas.get(end, 0) - amount
    times = sorted(deltas)
    levels, level = [], 0
    for moment in times:
        level += deltas[moment]
        levels.append(level)
    return times, levels


def _lowest(profile: tuple[list[int], list[int]], start: int, end: int) -> int:
    times, levels = profile
    index = bisect_right(times, start) - 1
    lowest = levels[index]
    index += 1
    count = len(times)
    while index < count and times[index] < end:
        if levels[index] < lowest:
            lowest = levels[index]
        index += 1
    return lowest


@dataclass
class _Day:
    day: dt.date
    start: int
    end: int
    intervals: list[tuple[int, int]]
    closed: str  # the closure's reason, "weekend" or "no opening hours"; "" when open


class _Search:
    def __init__(
        self, plan: VisitPlan, site: SiteCalendar, index: HoldIndex, step: int, not_before: int
    ):
        self.plan, self.site, self.index = plan, site, index
        self.zone = ZoneInfo(site.timezone)
        self.layout = plan_layout(plan)
        self.span = max(end for _, end in self.layout)
        self.step = step
        self.not_before = not_before
        self.closures: dict[dt.date, list[str]] = {}
        for closure in site.closures:
            self.closures.setdefault(closure.day, []).append(closure.reason)
        self.units: dict[str, list[Resource]] = {}
        for resource in site.resources:
            self.units.setdefault(resource.kind, []).append(resource)
        self.staff_kinds = {shift.kind for shift in site.staff}
        self.days: dict[dt.date, _Day] = {}
        self.profiles: dict[tuple[Key, dt.date, bool], tuple[list[int], list[int]]] = {}
        self.by_name = {resource.name: resource for resource in site.resources}
        self.grid: dict[dt.date, list[int]] = {}

    def missing(self) -> list[str]:
        kinds: list[str] = []
        for step in self.plan.steps:
            for need in step.resources:
                if need.kind not in self.units and need.kind not in kinds:
                    kinds.append(need.kind)
            for need in step.staff:
                if need.kind not in self.staff_kinds and need.kind not in kinds:
                    kinds.append(need.kind)
        return kinds

    def _intervals(self, day: dt.date, hours: Iterable[Hours]) -> list[tuple[int, int]]:
        """The day's open intervals as instants, overlapping or touching ones joined."""
        weekday = day.weekday()
        pieces = sorted(
            (
                _floor(local_to_utc(day, h.start, self.site.timezone)),
                _floor(local_to_utc(day, h.end, self.site.timezone)),
            )
            for h in hours
            if h.weekday == weekday
        )
        joined: list[tuple[int, int]] = []
        for start, end in pieces:
            if end <= start:
                continue
            if joined and start <= joined[-1][1]:
                joined[-1] = (joined[-1][0], max(joined[-1][1], end))
            else:
                joined.append((start, end))
        return joined

    def day(self, day: dt.date) -> _Day:
        known = self.days.get(day)
        if known is not None:
            return known
        start = _floor(local_to_utc(day, dt.time(0), self.site.timezone))
        end = _floor(local_to_utc(day + DAY, dt.time(0), self.site.timezone))
        intervals = self._intervals(day, self.site.hours)
        closed = "; ".join(self.closures.get(day, ()))
        if not closed and not intervals:
            closed = "weekend" if day.weekday() >= 5 else "no opening hours"
        made = _Day(day, start, end, intervals, closed)
        self.days[day] = made
        return made

    def profile(self, key: Key, day: _Day, booked: bool) -> tuple[list[int], list[int]]:
        cached = self.profiles.get((key, day.day, booked))
        if cached is not None:
            return cached
        edges: list[tuple[int, int, int]] = []
        staff, name = key
        if staff:
            weekday = day.day.weekday()
            for shift in self.site.staff:
                if shift.kind == name and shift.weekday == weekday:
                    a = _floor(local_to_utc(day.day, shift.start, self.site.timezone))
                    b = _floor(local_to_utc(day.day, shift.end, self.site.timezone))
                    edges.append((a, b, shift.count))
        else:
            resource = self.by_name[name]
            hours = self.site.hours if resource.hours is None else resource.hours
            edges.extend((a, b, resource.capacity) for a, b in self._intervals(day.day, hours))
            for period in resource.out_of_service:
                edges.append((_floor(period.start), _ceil(period.end), -resource.capacity))
        if booked:
            edges.extend((s, e, -c) for s, e, c in self.index.overlapping(key, day.start, day.end))
        made = _profile(day.start, day.end, edges)
        self.profiles[(key, day.day, booked)] = made
        return made

    def fit(self, day: _Day, start: int, booked: bool) -> list[Hold] | tuple[bool, str]:
        """The holds of a visit starting at `start`, or (staff?, kind) of the first need that
        does not fit."""
        taken: dict[Key, list[tuple[int, int, int]]] = {}
        used_unit: dict[str, str] = {}
        holds: list[Hold] = []
        for step, (offset_start, offset_end) in zip(self.plan.steps, self.layout, strict=True):
            s, e = start + offset_start, start + offset_end
            for need in step.resources:
                remaining = need.count
                units = self.units[need.kind]
                preferred = used_unit.get(need.kind)
                if preferred is not None:
                    units = sorted(units, key=lambda unit: unit.name != preferred)
                for unit in units:
                    key = (False, unit.name)
                    free = _lowest(self.profile(key, day, booked), s, e)
                    free -= sum(c for a, b, c in taken.get(key, ()) if a < e and b > s)
                    if free <= 0:
                        continue
                    take = min(free, remaining)
                    taken.setdefault(key, []).append((s, e, take))
                    holds.append(Hold(unit.name, _utc(s), _utc(e), take, need.kind, step.procedure))
                    used_unit.setdefault(need.kind, unit.name)
                    remaining -= take
                    if not remaining:
                        break
                if remaining:
                    return (False, need.kind)
            for need in step.staff:
                key = (True, need.kind)
                free = _lowest(self.profile(key, day, booked), s, e)
                free -= sum(c for a, b, c in taken.get(key, ()) if a < e and b > s)
                if free < need.count:
                    return (True, need.kind)
                taken.setdefault(key, []).append((s, e, need.count))
                holds.append(
                    Hold(need.kind, _utc(s), _utc(e), need.count, need.kind, step.procedure, True)
                )
        return holds

    def starts(self, day: _Day) -> list[int]:
        """Every start on each opening interval's grid, earliest first (intervals may overlap)."""
        known = self.grid.get(day.day)
        if known is None:
            moments: set[int] = set()
            for opens, closes in day.intervals:
                moments.update(range(opens, closes - self.span + 1, self.step))
            known = self.grid[day.day] = sorted(moments)
        return known

    def slot(self, day: _Day, start: int, days_out: int, holds: list[Hold]) -> Slot:
        start_utc, end_utc = _utc(start), _utc(start + self.span)
        return Slot(
            start_utc.astimezone(self.zone),
            end_utc.astimezone(self.zone),
            start_utc,
            end_utc,
            day.day,
            days_out,
            tuple(holds),
        )


@dataclass
class _DayOutcome:
    """Why a searched day gave no slot."""

    day: dt.date
    closed: str = ""
    short: bool = False
    # (staff?, kind) that stopped each start that fits the day but not its bookings
    blocked: list[tuple[bool, str]] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)


def find_slots(
    plan: VisitPlan,
    site: SiteCalendar,
    holds: HoldIndex | Iterable[Hold] = (),
    *,
    window_start: dt.date,
    window_end: dt.date,
    target: dt.date,
    step_minutes: int = 15,
    count: int = 5,
    per_day: int | None = None,
    horizon_days: int = 14,
    not_before: dt.datetime | None = None,
) -> SlotSearch:
    """Up to `count` slots for the visit inside its window (see the module's rules).

    per_day: at most this many slots on one day (1 gives one slot a day: a picker's spread).
    not_before: no slot starts before this instant (the site's "now" when booking).
    """
    if window_end < window_start:
        raise ValueError(f"window ends ({window_end}) before it starts ({window_start})")
    if step_minutes < 1 or count < 1:
        raise ValueError("step_minutes and count must be at least 1")
    validate_plan(plan)
    index = holds if isinstance(holds, HoldIndex) else index_holds(holds)
    earliest = _ceil(not_before) if not_before is not None else -(2**62)
    search = _Search(plan, site, index, step_minutes, earliest)
    header = (
        f"window {window_start.isoformat()}"
        if window_start == window_end
        else f"window {window_start.isoformat()} to {window_end.isoformat()}"
    )
    missing = search.missing()
    if missing:
        obstacles = tuple(
            Obstacle("missing", kind, (), f"the site has no {kind}") for kind in missing
        )
        return SlotSearch((), (), obstacles, f"{header}: " + "; ".join(o.text for o in obstacles))

    width = (window_end - window_start).days
    inside = sorted(
        (window_start + n * DAY for n in range(width + 1)),
        key=lambda day: (abs((day - target).days), day),
    )
    outcomes: list[_DayOutcome] = []
    slots = _collect(search, inside, count, per_day, lambda day: 0, outcomes)
    if slots:
        return SlotSearch(tuple(slots))

    obstacles = _obstacles(search, outcomes)
    reason = f"{header}: " + "; ".join(o.text for o in obstacles)
    outside = [
        day
        for n in range(1, horizon_days + 1)
        for day in (window_start - n * DAY, window_end + n * DAY)
    ]

    def days_out(day: dt.date) -> int:
        return (day - window_start).days if day < window_start else (day - window_end).days

    deviations = _collect(search, outside, count, per_day, days_out, [])
    if not deviations:
        reason += f"; nothing fits within {horizon_days} days either side of it either"
    return SlotSearch((), tuple(deviations), obstacles, reason)


def _collect(
    search: _Search,
    days: Sequence[dt.date],
    count: int,
    per_day: int | None,
    days_out: Callable[[dt.date], int],
    outcomes: list[_DayOutcome],
) -> list[Slot]:
    slots: list[Slot] = []
    for date in days:
        day = search.day(date)
        outcome = _DayOutcome(date, closed=day.closed)
        found = 0
        if not day.closed:
            outcome.short = all(b - a < search.span for a, b in day.intervals)
            for start in search.starts(day):
                if start < search.not_before:
                    continue
                fitted = search.fit(day, start, booked=True)
                if isinstance(fitted, list):
                    slots.append(search.slot(day, start, days_out(date), fitted))
                    found += 1
                    if len(slots) == count or (per_day is not None and found == per_day):
                        break
                else:
                    outcome.candidates.append(start)
                    outcome.blocked.append(fitted)
        if len(slots) == count:
            return slots
        if not found:
            outcomes.append(outcome)
    return slots


def _obstacles(search: _Search, outcomes: list[_DayOutcome]) -> tuple[Obstacle, ...]:
    closed: dict[str, list[dt.date]] = {}
    past: list[dt.date] = []
    short: list[dt.date] = []
    unavailable: dict[tuple[bool, str], list[dt.date]] = {}
    full: dict[tuple[bool, str], list[dt.date]] = {}
    for outcome in sorted(outcomes, key=lambda o: o.day):
        if outcome.closed:
            closed.setdefault(outcome.closed, []).append(outcome.day)
            continue
        if outcome.short:
            short.append(outcome.day)
            continue
        if not outcome.candidates:
            past.append(outcome.day)
            continue
        day = search.day(outcome.day)
        fits_empty = False
        lacking: list[tuple[bool, str]] = []
        for start, blocked in zip(outcome.candidates, outcome.blocked, strict=True):
            empty = search.fit(day, start, booked=False)
            if isinstance(empty, list):
                fits_empty = True
                if blocked not in full:
                    full[blocked] = []
                if outcome.day not in full[blocked]:
                    full[blocked].append(outcome.day)
            elif empty not in lacking:
                lacking.append(empty)
        if not fits_empty:
            for what in lacking:
                unavailable.setdefault(what, []).append(outcome.day)

    result: list[Obstacle] = []
    for subject, days in closed.items():
        result.append(
            Obstacle("closed", subject, tuple(days), f"closed on {_days(days)} ({subject})")
        )
    if past:
        result.append(Obstacle("past", "", tuple(past), f"too late to book on {_days(past)}"))
    if short:
        text = f"opening hours too short for the {search.span}-minute visit on {_days(short)}"
        result.append(Obstacle("short", "", tuple(short), text, minutes=search.span))
    for (staff, kind), days in unavailable.items():
        reasons = () if staff else _out_of_service(search, kind, days)
        note = (
            f" (out of service: {'; '.join(r or 'no reason given' for r in reasons)})"
            if reasons
            else ""
        )
        text = f"{kind} unavailable at the needed times on {_days(days)}{note}"
        result.append(Obstacle("unavailable", kind, tuple(days), text, out_of_service=reasons))
    for (staff, kind), days in full.items():
        days = sorted(days)
        text = f"no {kind} free on {_days(days)}" if staff else f"{kind} full on {_days(days)}"
        result.append(Obstacle("full", kind, tuple(days), text))
    return tuple(result)


def _out_of_service(search: _Search, kind: str, days: list[dt.date]) -> tuple[str, ...]:
    """The reasons ("" when none was given) of the periods `kind` is out of service on `days`."""
    reasons: list[str] = []
    for unit in search.units.get(kind, ()):
        for period in unit.out_of_service:
            start, end = _floor(period.start), _ceil(period.end)
            for date in days:
                day = search.day(date)
                if start < day.end and end > day.start and period.reason not in reasons:
                    reasons.append(period.reason)
    return tuple(reasons)


def _days(days: Sequence[dt.date]) -> str:
    """25 Nov; 25 and 27 Nov; 24, 25 and 27 Nov; 30 Nov, 1 and 2 Dec."""
    items: list[str] = []
    ordered = sorted(days)
    for index, day in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        same_month = following is not None and (following.year, following.month) == (
            day.year,
            day.month,
        )
        items.append(str(day.day) if same_month else f"{day.day} {MONTHS[day.month - 1]}")
    return f"{', '.join(items[:-1])} and {items[-1]}" if len(items) > 1 else items[0]
