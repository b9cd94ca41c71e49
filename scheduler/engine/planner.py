"""The schedule engine: protocol snapshot + participant facts + history -> planned calendar.

Date rules (also in the README):
- A visit's target is a date: its anchor's date plus whole days (weeks are 7 days). Occurrence
  k of a repeating visit is anchor + offset + (k - 1) * every_days, never the previous
  occurrence + every_days, so nothing drifts.
- A window is the closed date range [target - before, target + after].
- An anchor is a participant date (Day 1, consent, PSL start) or the *actual* date of an earlier
  visit; until that visit is done, its booked date stands in for it, and until it is booked,
  its target. So a visit done or booked early or late moves exactly what counts from it.
- An anchor constrained relative to another (Day 1 within 14 days after PSL start) must lie in
  its range; while unknown it is estimated at its default, and what counts from it is marked
  estimated.

Everything that depends only on the protocol (the order of anchors and visits, each occurrence's
offset from its visit's base, its procedures, the windows) is worked out once per snapshot object
(`_compile`) and kept as long as that object lives; each plan then only adds the participant's
dates. Nothing that depends on a participant is kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import weakref
from decimal import Decimal
from itertools import accumulate, repeat
from operator import attrgetter
from typing import NamedTuple

from scheduler.engine.taper import taper_steps
from scheduler.engine.types import (
    ActivitySpec,
    AnchorRef,
    AnchorSpec,
    DateOutOfRange,
    History,
    ParticipantFacts,
    Plan,
    PlannedMilestone,
    PlannedVisit,
    PlanningError,
    ProtocolSnapshot,
    TaperSpec,
    VisitSpec,
    within_calendar,
)

DAY = dt.timedelta(days=1)
# timedelta's own limit. Any count of days past it also lies past the calendar (about 3.65
# million days), so `_days` stands it in for such a count: adding it to any date overflows,
# as the exact count would have.
_MAX_DAYS = 999_999_999
_VISIT_ORDER = attrgetter("target", "visit_code", "occurrence")
_MILESTONE_ORDER = attrgetter("due", "milestone_code", "sequence")
_NO_DATES: dict[tuple[str, int], dt.date] = {}


@functools.lru_cache(maxsize=4096)  # the few counts protocols use, again and again
def _days(count: int) -> dt.timedelta:
    """`count` days (DAY * count), or timedelta's limit with its sign past that limit."""
    if -_MAX_DAYS <= count <= _MAX_DAYS:
        return dt.timedelta(days=count)
    return dt.timedelta(days=_MAX_DAYS if count > 0 else -_MAX_DAYS)


def _anchor_order(protocol: ProtocolSnapshot) -> list[AnchorSpec]:
    """Anchors ordered so that each comes after the anchor it is relative to: every chain is
    walked once, without recursion (linear in the number of anchors)."""
    specs = {spec.code: spec for spec in protocol.anchors}
    order: list[AnchorSpec] = []
    placed: set[str] = set()
    for spec in protocol.anchors:
        walk: list[AnchorSpec] = []
        walked: set[str] = set()
        current: AnchorSpec | None = spec
        while current is not None and current.code not in placed:
            if current.code in walked:
                raise PlanningError(
                    ["the protocol's anchors form a cycle: " + " -> ".join(s.code for s in walk)]
                )
            walk.append(current)
            walked.add(current.code)
            current = specs.get(current.relative_to) if current.relative_to else None
        order.extend(reversed(walk))
        placed.update(walked)
    return order


# The compiled records are named tuples: quick to make (a snapshot of 10,000 visits makes
# 20,000 of them) and to read.


class _Ref(NamedTuple):
    """An AnchorRef resolved against the protocol: a participant anchor; or the visit
    `source`, its occurrence `history_key[1]`, `source_shift` after that visit's base."""

    anchor: str | None
    source: str = ""
    history_key: tuple[str, int] = ("", 0)
    source_shift: dt.timedelta = dt.timedelta(0)


class _Visit(NamedTuple):
    code: str
    ref: _Ref
    arms: frozenset[str]
    # (occurrence, days from the visit's base, procedures) for each occurrence
    occurrences: tuple[tuple[int, dt.timedelta, tuple[str, ...]], ...]
    before: dt.timedelta
    after: dt.timedelta
    # Its occurrences' targets never decrease (it does not repeat, or repeats forwards).
    forwards: bool


class _Milestone(NamedTuple):
    code: str
    name: str
    ref: _Ref | None  # None: counted from a visit the protocol lacks (a KeyError, as before)
    unknown_visit: str
    offset: dt.timedelta
    taper: TaperSpec | None


class _Compiled(NamedTuple):
    """What planning needs of one protocol snapshot, computed once for it."""

    anchor_problems: tuple[str, ...]  # the anchors form a cycle: no plan at all
    # (spec, the date it is estimated at from its base: default_days as a timedelta, or None)
    anchor_order: tuple[tuple[AnchorSpec, dt.timedelta | None], ...]
    anchor_specs: dict[str, AnchorSpec]
    visit_problems: tuple[str, ...]  # unknown visits counted from, or a cycle
    topological: tuple[_Visit, ...]  # each visit after the visit it is counted from
    visits: tuple[_Visit, ...]  # the protocol's order
    milestones: tuple[_Milestone, ...]


def _shift(visit: VisitSpec, occurrence: int) -> int:
    # Occurrence k is base + offset + (k - 1) * every: nothing drifts.
    return visit.offset_days + (occurrence - 1) * (visit.repeat_every_days or 0)


def _procedures(activities: tuple[ActivitySpec, ...], occurrence: int) -> tuple[str, ...]:
    return tuple(
        activity.procedure
        for activity in activities
        if activity.occurrences is None or occurrence in activity.occurrences
    )


def _occurrences(visit: VisitSpec) -> tuple[tuple[int, dt.timedelta, tuple[str, ...]], ...]:
    """(occurrence, days from the visit's base, procedures) for each of its occurrences."""
    count, activities = visit.repeat_count, visit.activities
    if count < 1:
        return ()
    if count == 1:
        return ((1, _days(visit.offset_days), _procedures(activities, 1) if activities else ()),)
    if abs(visit.offset_days) <= _MAX_DAYS and abs(_shift(visit, count)) <= _MAX_DAYS:
        # Every shift lies between the first and the last: none needs _days' limit. Summed
        # as timedeltas, exactly (whole days): the first, then `every` days more each time.
        every = _days(visit.repeat_every_days or 0)
        shifts = list(accumulate(repeat(every, count - 1), initial=_days(visit.offset_days)))
    else:
        shifts = [_days(_shift(visit, k)) for k in range(1, count + 1)]
    # The procedures of every occurrence, and the occurrences that have more (computed apart).
    every_time = tuple(a.procedure for a in activities if a.occurrences is None)
    some_times: set[int] = set()
    for activity in activities:
        if activity.occurrences is not None:
            some_times.update(activity.occurrences)
    procedures = [every_time] * count
    for k in some_times:
        if 1 <= k <= count:
            procedures[k - 1] = _procedures(activities, k)
    return tuple(zip(range(1, count + 1), shifts, procedures, strict=True))


def _compile(protocol: ProtocolSnapshot) -> _Compiled:
    anchor_problems: tuple[str, ...] = ()
    anchor_order: list[AnchorSpec] = []
    try:
        anchor_order = _anchor_order(protocol)
    except PlanningError as error:
        anchor_problems = tuple(error.problems)
    visit_problems: tuple[str, ...] = ()
    ordered: list[VisitSpec] = []
    try:
        ordered = visit_order(protocol)
    except PlanningError as error:
        visit_problems = tuple(error.problems)

    specs = {visit.code: visit for visit in protocol.visits}
    refs: dict[str, _Ref] = {}  # by participant anchor: one each

    def ref_of(ref: AnchorRef) -> _Ref:
        if ref.anchor is not None:
            found = refs.get(ref.anchor)
            if found is None:
                found = refs[ref.anchor] = _Ref(ref.anchor)
            return found
        assert ref.visit is not None
        source = specs[ref.visit]
        occurrence = ref.occurrence or source.repeat_count
        return _Ref(None, source.code, (source.code, occurrence), _days(_shift(source, occurrence)))

    compiled: dict[int, _Visit] = {}  # by id of its VisitSpec
    for visit in protocol.visits:
        if visit.anchor.visit is not None and visit.anchor.visit not in specs:
            continue  # refused by visit_problems before it is needed
        compiled[id(visit)] = _Visit(
            visit.code,
            ref_of(visit.anchor),
            visit.arms,
            _occurrences(visit),
            _days(visit.window_before),
            _days(visit.window_after),
            visit.repeat_count <= 1 or (visit.repeat_every_days or 0) >= 0,
        )
    milestones = []
    for milestone in protocol.milestones:
        source = milestone.anchor.visit
        known = source is None or source in specs
        milestones.append(
            _Milestone(
                code=milestone.code,
                name=milestone.name,
                ref=ref_of(milestone.anchor) if known else None,
                unknown_visit=source if not known and source is not None else "",
                offset=_days(milestone.offset_days),
                taper=milestone.taper,
            )
        )
    return _Compiled(
        anchor_problems=anchor_problems,
        anchor_order=tuple(
            (
                spec,
                _days(spec.default_days)
                if spec.relative_to and spec.default_days is not None
                else None,
            )
            for spec in anchor_order
        ),
        anchor_specs={spec.code: spec for spec in protocol.anchors},
        visit_problems=visit_problems,
        topological=tuple(compiled[id(visit)] for visit in ordered),
        visits=tuple(compiled[id(v)] for v in protocol.visits if id(v) in compiled),
        milestones=tuple(milestones),
    )


# Each snapshot object's compiled form, by the object's id, for as long as the object lives
# (a weak reference drops the entry with it). Keyed by identity, not by value: hashing a
# snapshot by value would cost more than planning from it.
_compiled_by_id: dict[int, tuple[weakref.ref[ProtocolSnapshot], _Compiled]] = {}


def _compiled(protocol: ProtocolSnapshot) -> _Compiled:
    key = id(protocol)
    entry = _compiled_by_id.get(key)
    if entry is not None and entry[0]() is protocol:
        return entry[1]
    compiled = _compile(protocol)

    def forget(ref: weakref.ref[ProtocolSnapshot]) -> None:
        # Runs while the snapshot is freed, before its id can be reused.
        if _compiled_by_id.get(key, (None,))[0] is ref:
            _compiled_by_id.pop(key, None)

    # An object that takes no weak reference is compiled again for each plan.
    with contextlib.suppress(TypeError):
        _compiled_by_id[key] = (weakref.ref(protocol, forget), compiled)
    return compiled


def _resolve_anchors(
    compiled: _Compiled, given: dict[str, dt.date]
) -> tuple[dict[str, dt.date], frozenset[str]]:
    if compiled.anchor_problems:
        raise PlanningError(list(compiled.anchor_problems))
    specs = compiled.anchor_specs
    dates: dict[str, dt.date] = {}
    estimated: set[str] = set()
    problems: list[str] = []

    # Each anchor after the one it is relative to, so its base is known when it is reached.
    for spec, default in compiled.anchor_order:
        code = spec.code
        base = dates.get(spec.relative_to) if spec.relative_to else None
        if code in given:
            value = given[code]
            if base is not None:
                gap = (value - base).days
                if spec.min_days is not None and gap < spec.min_days:
                    problems.append(
                        f"{spec.name} ({value.isoformat()}) is {gap} day(s) after "
                        f"{specs[spec.relative_to].name}; the protocol needs at least "  # type: ignore[index]
                        f"{spec.min_days}"
                    )
                if spec.max_days is not None and gap > spec.max_days:
                    problems.append(
                        f"{spec.name} ({value.isoformat()}) is {gap} day(s) after "
                        f"{specs[spec.relative_to].name}; the protocol allows at most "  # type: ignore[index]
                        f"{spec.max_days}"
                    )
            dates[code] = value
        elif base is not None and default is not None:
            dates[code] = base + default
            estimated.add(code)
    unknown = given.keys() - specs.keys()
    if unknown:
        problems.append(f"unknown anchor(s) for this protocol: {', '.join(sorted(unknown))}")
    if problems:
        raise PlanningError(problems)
    return dates, frozenset(estimated)


@within_calendar
def resolve_anchors(
    protocol: ProtocolSnapshot, given: dict[str, dt.date]
) -> tuple[dict[str, dt.date], frozenset[str]]:
    """Dates of every anchor the participant can have, and which of them are estimates."""
    return _resolve_anchors(_compiled(protocol), given)


def visit_order(protocol: ProtocolSnapshot) -> list[VisitSpec]:
    """The protocol's visits ordered so that each comes after the visit it is counted from
    (a topological order). Each visit has at most one such visit, so the chains form a forest:
    one breadth-first pass from the visits counted from participant anchors orders it, linear
    in the number of visits and without recursion, however long a chain is."""
    codes = {visit.code for visit in protocol.visits}
    roots: list[VisitSpec] = []
    children: dict[str, list[VisitSpec]] = {}
    unknown: list[str] = []
    for visit in protocol.visits:
        source = visit.anchor.visit
        if source is None:
            roots.append(visit)
        elif source in codes:
            children.setdefault(source, []).append(visit)
        else:
            unknown.append(f"visit {visit.code} is counted from an unknown visit {source}")
    if unknown:
        raise PlanningError(unknown)
    order = roots
    for visit in order:  # the list grows while it is walked: breadth first
        order.extend(children.get(visit.code, ()))
    if len(order) < len(protocol.visits):
        placed = {visit.code for visit in order}
        cycle = sorted(visit.code for visit in protocol.visits if visit.code not in placed)
        raise PlanningError([f"visit anchors form a cycle through: {', '.join(cycle)}"])
    return order


# What a date resolves to: (date, estimated); or, when it cannot be planned, the code of the
# participant anchor whose date is missing, or None when its arithmetic left the calendar.
_Resolved = tuple[dt.date, bool] | str | None


def _base(
    ref: _Ref,
    anchors: dict[str, dt.date],
    estimated_anchors: frozenset[str],
    visit_dates: dict[tuple[str, int], dt.date],
    bases: dict[str, _Resolved],
) -> _Resolved:
    """The date `ref` counts from; OverflowError when its arithmetic leaves the calendar."""
    anchor = ref.anchor
    if anchor is not None:
        date = anchors.get(anchor)
        return anchor if date is None else (date, anchor in estimated_anchors)
    known = visit_dates.get(ref.history_key)
    if known is not None:
        return known, False
    source = bases[ref.source]
    if source is None or isinstance(source, str):
        return source
    return source[0] + ref.source_shift, source[1]


@within_calendar
def plan(
    protocol: ProtocolSnapshot,
    facts: ParticipantFacts,
    history: History | None = None,
) -> Plan:
    """Plan every visit and milestone for one participant. Pure and deterministic."""
    compiled = _compiled(protocol)
    anchors, estimated_anchors = _resolve_anchors(compiled, facts.anchors)
    if compiled.visit_problems:
        raise PlanningError(list(compiled.visit_problems))
    visit_dates = history.visit_dates if history is not None else _NO_DATES

    # The date each visit counts from (with whether it is an estimate), computed once per
    # visit in topological order: a chain of visits anchored to earlier visits, however deep,
    # costs one step per visit and no recursion. Every occurrence of a visit shares it.
    bases: dict[str, _Resolved] = {}
    for visit in compiled.topological:
        ref = visit.ref
        anchor = ref.anchor
        if anchor is not None:
            date = anchors.get(anchor)
            bases[visit.code] = anchor if date is None else (date, anchor in estimated_anchors)
            continue
        try:
            bases[visit.code] = _base(ref, anchors, estimated_anchors, visit_dates, bases)
        except OverflowError:
            # Only an error if a visit the participant has needs it (below).
            bases[visit.code] = None

    # Participant anchors a planned visit or milestone needs and the participant lacks.
    missing: set[str] = set()

    def resolved(value: _Resolved) -> tuple[dt.date, bool] | None:
        if value is None:
            raise DateOutOfRange()
        if isinstance(value, str):
            missing.add(value)
            return None
        return value

    # Each PlannedVisit is made as its dataclass __init__ would make it, its fields set in one
    # step instead of one object.__setattr__ each (see PlannedVisit).
    new, set_fields, planned_visit = object.__new__, object.__setattr__, PlannedVisit
    planned_visits: list[PlannedVisit] = []
    add = planned_visits.append
    arm = facts.arm
    # The visits come out in date order unless a visit repeats backwards or one visit's
    # occurrences overlap the next one's: checked at each visit's first occurrence.
    in_order = True
    last: tuple[dt.date, str, int] | None = None
    for visit in compiled.visits:
        if (visit.arms and arm not in visit.arms) or not visit.occurrences:
            continue
        known = resolved(bases[visit.code])
        if known is None:
            continue
        base, estimated = known
        code, before, after = visit.code, visit.before, visit.after
        for occurrence, shift, procedures in visit.occurrences:
            target = base + shift
            planned = new(planned_visit)
            set_fields(
                planned,
                "__dict__",
                {
                    "visit_code": code,
                    "occurrence": occurrence,
                    "target": target,
                    "window_start": target - before,
                    "window_end": target + after,
                    "procedures": procedures,
                    "estimated": estimated,
                },
            )
            add(planned)
        if in_order:
            first = visit.occurrences[0]
            if not visit.forwards or (
                last is not None and last > (base + first[1], code, first[0])
            ):
                in_order = False
            else:
                last = (target, code, occurrence)

    planned_milestones: list[PlannedMilestone] = []
    for milestone in compiled.milestones:
        if milestone.ref is None:
            raise KeyError(milestone.unknown_visit)
        found = resolved(_base(milestone.ref, anchors, estimated_anchors, visit_dates, bases))
        if found is None:
            continue
        start = found[0] + milestone.offset
        if milestone.taper is None:
            planned_milestones.append(
                PlannedMilestone(milestone.code, 0, start, estimated=found[1])
            )
            continue
        if facts.weight_kg is None:
            raise PlanningError(
                [f"{milestone.name} is weight-based: the participant's weight is needed"]
            )
        adjustments = (
            {
                week: adjustment
                for (code, week), adjustment in history.taper_adjustments.items()
                if code == milestone.code
            }
            if history is not None
            else {}
        )
        for step in taper_steps(milestone.taper, Decimal(facts.weight_kg), adjustments):
            planned_milestones.append(
                PlannedMilestone(
                    milestone.code,
                    step.week,
                    start + 7 * step.week * DAY,
                    step.dose_mg,
                    found[1],
                    step.flag,
                )
            )

    if missing:
        names = {spec.code: spec.name for spec in compiled.anchor_specs.values()}
        raise PlanningError(
            [f"the date of {names.get(code, code)} ({code}) is needed" for code in sorted(missing)]
        )
    if not in_order:
        planned_visits.sort(key=_VISIT_ORDER)
    planned_milestones.sort(key=_MILESTONE_ORDER)
    return Plan(
        visits=tuple(planned_visits),
        milestones=tuple(planned_milestones),
        anchors=anchors,
        estimated_anchors=estimated_anchors,
    )
