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
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from scheduler.engine.taper import taper_steps
from scheduler.engine.types import (
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
    VisitSpec,
    within_calendar,
)

DAY = dt.timedelta(days=1)


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


@within_calendar
def resolve_anchors(
    protocol: ProtocolSnapshot, given: dict[str, dt.date]
) -> tuple[dict[str, dt.date], frozenset[str]]:
    """Dates of every anchor the participant can have, and which of them are estimates."""
    specs = {spec.code: spec for spec in protocol.anchors}
    dates: dict[str, dt.date] = {}
    estimated: set[str] = set()
    problems: list[str] = []

    # Each anchor after the one it is relative to, so its base is known when it is reached.
    for spec in _anchor_order(protocol):
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
        elif base is not None and spec.default_days is not None:
            dates[code] = base + spec.default_days * DAY
            estimated.add(code)
    unknown = sorted(set(given) - set(specs))
    if unknown:
        problems.append(f"unknown anchor(s) for this protocol: {', '.join(unknown)}")
    if problems:
        raise PlanningError(problems)
    return dates, frozenset(estimated)


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


@within_calendar
def plan(
    protocol: ProtocolSnapshot,
    facts: ParticipantFacts,
    history: History | None = None,
) -> Plan:
    """Plan every visit and milestone for one participant. Pure and deterministic."""
    history = history or History()
    anchors, estimated_anchors = resolve_anchors(protocol, facts.anchors)
    visits = {visit.code: visit for visit in protocol.visits}

    # The date each visit counts from (with whether it is an estimate), computed once per
    # visit in topological order: a chain of visits anchored to earlier visits, however deep,
    # costs one step per visit and no recursion. Every occurrence of a visit shares it.
    bases: dict[str, _Resolved] = {}

    def base_date(ref: AnchorRef) -> _Resolved:
        if ref.anchor is not None:
            if ref.anchor not in anchors:
                return ref.anchor
            return anchors[ref.anchor], ref.anchor in estimated_anchors
        assert ref.visit is not None
        source = visits[ref.visit]
        occurrence = ref.occurrence or source.repeat_count
        known = history.visit_dates.get((source.code, occurrence))
        if known is not None:
            return known, False
        return target_of(source, occurrence)

    def target_of(visit: VisitSpec, occurrence: int) -> _Resolved:
        # Occurrence k is base + offset + (k - 1) * every: nothing drifts.
        base = bases[visit.code]
        if base is None or isinstance(base, str):
            return base
        shift = visit.offset_days + (occurrence - 1) * (visit.repeat_every_days or 0)
        return base[0] + shift * DAY, base[1]

    for visit in visit_order(protocol):
        try:
            bases[visit.code] = base_date(visit.anchor)
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

    planned_visits: list[PlannedVisit] = []
    for visit in protocol.visits:
        if visit.arms and facts.arm not in visit.arms:
            continue
        for occurrence in range(1, visit.repeat_count + 1):
            known = resolved(target_of(visit, occurrence))
            if known is None:
                continue
            target, estimated = known
            planned_visits.append(
                PlannedVisit(
                    visit_code=visit.code,
                    occurrence=occurrence,
                    target=target,
                    window_start=target - visit.window_before * DAY,
                    window_end=target + visit.window_after * DAY,
                    procedures=tuple(
                        activity.procedure
                        for activity in visit.activities
                        if activity.occurrences is None or occurrence in activity.occurrences
                    ),
                    estimated=estimated,
                )
            )

    planned_milestones: list[PlannedMilestone] = []
    for milestone in protocol.milestones:
        base = resolved(base_date(milestone.anchor))
        if base is None:
            continue
        start = base[0] + milestone.offset_days * DAY
        if milestone.taper is None:
            planned_milestones.append(PlannedMilestone(milestone.code, 0, start, estimated=base[1]))
            continue
        if facts.weight_kg is None:
            raise PlanningError(
                [f"{milestone.name} is weight-based: the participant's weight is needed"]
            )
        adjustments = {
            week: adjustment
            for (code, week), adjustment in history.taper_adjustments.items()
            if code == milestone.code
        }
        for step in taper_steps(milestone.taper, Decimal(facts.weight_kg), adjustments):
            planned_milestones.append(
                PlannedMilestone(
                    milestone.code,
                    step.week,
                    start + 7 * step.week * DAY,
                    step.dose_mg,
                    base[1],
                    step.flag,
                )
            )

    if missing:
        names = {spec.code: spec.name for spec in protocol.anchors}
        raise PlanningError(
            [f"the date of {names.get(code, code)} ({code}) is needed" for code in sorted(missing)]
        )
    planned_visits.sort(key=lambda v: (v.target, v.visit_code, v.occurrence))
    planned_milestones.sort(key=lambda m: (m.due, m.milestone_code, m.sequence))
    return Plan(
        visits=tuple(planned_visits),
        milestones=tuple(planned_milestones),
        anchors=anchors,
        estimated_anchors=estimated_anchors,
    )
