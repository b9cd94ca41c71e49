"""The planner works out what depends only on the protocol once per snapshot object and builds
its PlannedVisits without their dataclass __init__ (issue 13's speed targets). Its plans must
be exactly what the straightforward planner below (the planner as it was before) makes: for
every seed protocol at several Day 1s, with arms, estimated anchors, history (visits done
early or late, booked, missed) and taper decisions; for random protocols; and its refusals
the same, message for message."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scheduler.engine import planner
from scheduler.engine.planner import plan, resolve_anchors
from scheduler.engine.taper import taper_steps
from scheduler.engine.types import (
    ActivitySpec,
    AnchorRef,
    AnchorSpec,
    DateOutOfRange,
    History,
    MilestoneSpec,
    ParticipantFacts,
    Plan,
    PlannedMilestone,
    PlannedVisit,
    PlanningError,
    ProtocolSnapshot,
    TaperAdjustment,
    VisitSpec,
    within_calendar,
)
from scheduler.snapshot import snapshot_from_document
from tests.conftest import bounded
from trials.protocol_file import parse_protocol

D = dt.date
DAY = dt.timedelta(days=1)
SEEDS = sorted((Path(__file__).resolve().parents[2] / "seeds/protocols").glob("*.yaml"))


# ---- The reference: the planner before it compiled snapshots, kept as it was. -------------


def _reference_anchor_order(protocol: ProtocolSnapshot) -> list[AnchorSpec]:
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
def reference_resolve_anchors(
    protocol: ProtocolSnapshot, given: dict[str, dt.date]
) -> tuple[dict[str, dt.date], frozenset[str]]:
    specs = {spec.code: spec for spec in protocol.anchors}
    dates: dict[str, dt.date] = {}
    estimated: set[str] = set()
    problems: list[str] = []
    for spec in _reference_anchor_order(protocol):
        code = spec.code
        base = dates.get(spec.relative_to) if spec.relative_to else None
        if code in given:
            value = given[code]
            if base is not None:
                assert spec.relative_to is not None
                gap = (value - base).days
                if spec.min_days is not None and gap < spec.min_days:
                    problems.append(
                        f"{spec.name} ({value.isoformat()}) is {gap} day(s) after "
                        f"{specs[spec.relative_to].name}; the protocol needs at least "
                        f"{spec.min_days}"
                    )
                if spec.max_days is not None and gap > spec.max_days:
                    problems.append(
                        f"{spec.name} ({value.isoformat()}) is {gap} day(s) after "
                        f"{specs[spec.relative_to].name}; the protocol allows at most "
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


def _reference_visit_order(protocol: ProtocolSnapshot) -> list[VisitSpec]:
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
    for visit in order:
        order.extend(children.get(visit.code, ()))
    if len(order) < len(protocol.visits):
        placed = {visit.code for visit in order}
        cycle = sorted(visit.code for visit in protocol.visits if visit.code not in placed)
        raise PlanningError([f"visit anchors form a cycle through: {', '.join(cycle)}"])
    return order


_Resolved = tuple[dt.date, bool] | str | None


@within_calendar
def reference_plan(
    protocol: ProtocolSnapshot, facts: ParticipantFacts, history: History | None = None
) -> Plan:
    history = history or History()
    anchors, estimated_anchors = reference_resolve_anchors(protocol, facts.anchors)
    visits = {visit.code: visit for visit in protocol.visits}
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
        base = bases[visit.code]
        if base is None or isinstance(base, str):
            return base
        shift = visit.offset_days + (occurrence - 1) * (visit.repeat_every_days or 0)
        return base[0] + shift * DAY, base[1]

    for visit in _reference_visit_order(protocol):
        try:
            bases[visit.code] = base_date(visit.anchor)
        except OverflowError:
            bases[visit.code] = None

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


# ---- Comparing outcomes. ---------------------------------------------------------------------


def outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """What a call gives: ("plan", its value, each visit's fields) or the refusal it raises."""
    try:
        result = function(*args)
    except (PlanningError, KeyError, AssertionError) as error:
        return ("refused", type(error).__name__, str(error))
    if isinstance(result, Plan):
        # Plan equality is by value; the fields (and their order) show how each was built.
        return ("plan", result, [list(vars(v).items()) for v in result.visits])
    return ("value", result)


def assert_same(
    snapshot: ProtocolSnapshot, facts: ParticipantFacts, history: History | None = None
) -> tuple[Any, ...]:
    expected = outcome(reference_plan, snapshot, facts, history)
    assert outcome(plan, snapshot, facts, history) == expected
    # Again, on the snapshot now compiled; and on an equal snapshot compiled afresh.
    assert outcome(plan, snapshot, facts, history) == expected
    assert outcome(plan, dataclasses.replace(snapshot), facts, history) == expected
    assert outcome(resolve_anchors, snapshot, facts.anchors) == outcome(
        reference_resolve_anchors, snapshot, facts.anchors
    )
    return expected


def seed_snapshot(path: Path) -> ProtocolSnapshot:
    return snapshot_from_document(parse_protocol(path.read_text(encoding="utf-8")))


DAY1S = [D(2026, 3, 2), D(2024, 2, 29), D(2023, 12, 31), D(1999, 1, 31), D(2099, 12, 25)]


def facts_for(snapshot: ProtocolSnapshot, day1: dt.date, arm: str | None, *, relative: str):
    """Every anchor without a base at `day1`; one with a base at its earliest ("given"),
    left out to be estimated ("estimated"), or past its range ("outside")."""
    anchors: dict[str, dt.date] = {}
    for spec in snapshot.anchors:
        if spec.relative_to is None:
            anchors[spec.code] = day1
        elif relative == "given":
            anchors[spec.code] = day1 + (spec.min_days or 0) * DAY
        elif relative == "outside" and spec.max_days is not None:
            anchors[spec.code] = day1 + (spec.max_days + 1) * DAY
    return ParticipantFacts(anchors=anchors, weight_kg=Decimal("57.3"), arm=arm)


def lived(snapshot: ProtocolSnapshot, facts: ParticipantFacts) -> History:
    """A participant part-way through: each visit's first occurrence done 2 days late, the
    last of a repeating one booked 3 days early, the one before it missed (no date), and
    each taper held at week 2 and set to 12.5 mg at week 5."""
    calendar = reference_plan(snapshot, facts)
    dates: dict[tuple[str, int], dt.date] = {}
    for visit in calendar.visits:
        spec = next(s for s in snapshot.visits if s.code == visit.visit_code)
        if visit.occurrence == 1:
            dates[(visit.visit_code, 1)] = visit.target + 2 * DAY
        elif visit.occurrence == spec.repeat_count:
            dates[(visit.visit_code, visit.occurrence)] = visit.target - 3 * DAY
    adjustments = {}
    for milestone in snapshot.milestones:
        if milestone.taper is not None:
            adjustments[(milestone.code, 2)] = TaperAdjustment("hold")
            adjustments[(milestone.code, 5)] = TaperAdjustment("set", Decimal("12.5"))
    return History(visit_dates=dates, taper_adjustments=adjustments)


def arms_of(snapshot: ProtocolSnapshot) -> list[str | None]:
    return [None, *sorted({arm for visit in snapshot.visits for arm in visit.arms}), "NONE"]


@pytest.mark.parametrize("path", SEEDS, ids=lambda path: path.stem)
def test_every_seed_protocol_plans_exactly_as_before(path: Path) -> None:
    snapshot = seed_snapshot(path)
    planned = 0
    for day1 in DAY1S:
        for arm in arms_of(snapshot):
            for relative in ("given", "estimated", "outside"):
                facts = facts_for(snapshot, day1, arm, relative=relative)
                if assert_same(snapshot, facts)[0] == "plan":
                    planned += 1
                    assert_same(snapshot, facts, lived(snapshot, facts))
        # Refusals: no anchors at all, an unknown one, no weight.
        assert assert_same(snapshot, ParticipantFacts(anchors={}))[0] == "refused"
        unknown = ParticipantFacts(anchors={"day1": day1, "nonesuch": day1})
        assert assert_same(snapshot, unknown)[0] == "refused"
        given = facts_for(snapshot, day1, None, relative="given")
        assert_same(snapshot, dataclasses.replace(given, weight_kg=None))
    # Day 1 at the calendar's ends: no plan, the same refusal.
    for day1 in (D(9999, 12, 20), D(1, 1, 3)):
        refused = assert_same(snapshot, facts_for(snapshot, day1, None, relative="given"))
        assert refused[:2] == ("refused", "DateOutOfRange")
    assert planned >= len(DAY1S) * 2


def test_a_seed_with_a_taper_keeps_its_doses_and_decisions(seed_document) -> None:
    # Tsukuba: the prednisolone taper, with a hold and a prescribed dose.
    snapshot = snapshot_from_document(seed_document("001"))
    facts = ParticipantFacts(
        anchors={"psl_start": D(2026, 3, 9), "day1": D(2026, 3, 16)}, weight_kg=Decimal(60)
    )
    history = lived(snapshot, facts)
    kind, calendar, _ = assert_same(snapshot, facts, history)

    assert kind == "plan"
    taper = [m for m in calendar.milestones if m.milestone_code == "PSL_TAPER"]
    # 60 kg x 0.6 mg/kg = 36 mg for the two initial weeks, held a third (week 2), reduced from
    # there; 12.5 mg prescribed at week 5 is 12 mg in 1 mg tablets, reduced from there.
    assert [(m.sequence, m.due, m.dose_mg, m.flag) for m in taper[:8]] == [
        (0, D(2026, 3, 9), Decimal(36), ""),
        (1, D(2026, 3, 16), Decimal(36), ""),
        (2, D(2026, 3, 23), Decimal(36), ""),
        (3, D(2026, 3, 30), Decimal(31), ""),
        (4, D(2026, 4, 6), Decimal(27), ""),
        (5, D(2026, 4, 13), Decimal(12), ""),
        (6, D(2026, 4, 20), Decimal(11), ""),
        (7, D(2026, 4, 27), Decimal(10), ""),
    ]


def test_jasmine_rows_are_the_recorded_ones(seed_document) -> None:
    snapshot = snapshot_from_document(seed_document("002"))
    calendar = plan(snapshot, ParticipantFacts(anchors={"day1": D(2024, 2, 29)}))

    rows = [
        (v.visit_code, v.occurrence, v.target, v.window_start, v.window_end, v.procedures)
        for v in calendar.visits
    ]
    assert len(rows) == 54
    assert rows[:3] == [
        ("SCR", 1, D(2024, 2, 8), D(2024, 2, 1), D(2024, 2, 15), ("SCREEN",)),
        ("TRT", 1, D(2024, 2, 29), D(2024, 2, 27), D(2024, 3, 2), ("INJECTION", "TIS")),
        ("TRT", 2, D(2024, 3, 7), D(2024, 3, 5), D(2024, 3, 9), ("INJECTION",)),
    ]
    assert rows[13] == (
        "TRT",
        13,
        D(2024, 5, 23),
        D(2024, 5, 21),
        D(2024, 5, 25),
        ("INJECTION", "TIS"),
    )
    assert rows[-2:] == [
        ("TRT", 52, D(2025, 2, 20), D(2025, 2, 18), D(2025, 2, 22), ("INJECTION", "TIS")),
        ("FU", 1, D(2025, 3, 20), D(2025, 3, 13), D(2025, 3, 27), ("TIS",)),
    ]
    assert calendar.milestones == (PlannedMilestone("PRIMARY_TIS", 0, D(2025, 2, 27)),)
    assert not any(v.estimated for v in calendar.visits)


# ---- Random protocols: chains, repeats backwards, interleaved visits, overflow. -------------

CODES = [f"V{n}" for n in range(6)]
HUGE = [2_000_000_000, -2_000_000_000, 5_000_000, -5_000_000]  # past timedelta / the calendar


def one_in(draw: st.DrawFn, n: int) -> bool:
    # A value inside the range: Hypothesis draws the ends of a range far more often.
    return draw(st.integers(0, n - 1)) == n // 2


def rarely(draw: st.DrawFn, rare: st.SearchStrategy[Any], usual: st.SearchStrategy[Any]) -> Any:
    """About one draw in 16 from `rare`, the others from `usual`."""
    return draw(rare if one_in(draw, 16) else usual)


@st.composite
def protocols(draw: st.DrawFn) -> ProtocolSnapshot:
    anchors = (
        AnchorSpec("a", "Anchor A"),
        AnchorSpec(
            "b",
            "Anchor B",
            relative_to="a",
            min_days=draw(st.sampled_from([None, 0, 2])),
            max_days=draw(st.sampled_from([None, 5, 10])),
            default_days=draw(st.sampled_from([None, 0, 7])),
        ),
        AnchorSpec("c", "Anchor C"),
    )
    count = draw(st.integers(1, len(CODES)))
    usual_days, huge_days = st.integers(-400, 400), st.sampled_from(HUGE)
    visits = []
    for index in range(count):
        occurrence = draw(st.sampled_from([None, 1, 2]))
        if index and one_in(draw, 3):
            anchor = AnchorRef(visit=draw(st.sampled_from(CODES[:index])), occurrence=occurrence)
        elif one_in(draw, 40):  # any visit: itself, a later one (maybe a cycle), an unknown one
            anchor = AnchorRef(visit=draw(st.sampled_from(CODES)), occurrence=occurrence)
        else:
            anchor = AnchorRef(anchor=draw(st.sampled_from("abc")))
        repeats = draw(st.integers(0, 6))
        visits.append(
            VisitSpec(
                code=CODES[index],
                name=CODES[index],
                epoch="E",
                anchor=anchor,
                offset_days=rarely(draw, huge_days, usual_days),
                window_before=rarely(draw, st.sampled_from(HUGE[:1]), st.integers(0, 9)),
                window_after=draw(st.integers(0, 9)),
                duration_minutes=30,
                repeat_every_days=draw(st.sampled_from([None, 0, 7, 28, -3, 400])),
                repeat_count=repeats,
                arms=frozenset(draw(st.sets(st.sampled_from("XY"), max_size=1))),
                activities=tuple(
                    ActivitySpec(procedure, occurrences)
                    for procedure, occurrences in draw(
                        st.lists(
                            st.tuples(
                                st.sampled_from(["P", "Q", "R"]),
                                st.one_of(st.none(), st.frozensets(st.integers(1, 6), min_size=1)),
                            ),
                            max_size=3,
                        )
                    )
                ),
            )
        )
    milestones = tuple(
        MilestoneSpec(
            code=f"M{n}",
            name=f"M{n}",
            kind="date",
            anchor=draw(
                st.one_of(
                    st.builds(AnchorRef, anchor=st.sampled_from("abc")),
                    st.builds(
                        AnchorRef,
                        visit=st.sampled_from(CODES[:count]),
                        occurrence=st.sampled_from([None, 1]),
                    ),
                )
            ),
            offset_days=rarely(draw, huge_days, usual_days),
        )
        for n in range(draw(st.integers(0, 2)))
    )
    return ProtocolSnapshot(anchors=anchors, visits=tuple(visits), milestones=milestones)


ordinary_dates = st.dates(min_value=D(1990, 1, 1), max_value=D(2100, 12, 31))
calendar_ends = st.sampled_from([D(1, 1, 1), D(1, 1, 20), D(9999, 12, 31), D(9999, 12, 1)])


@st.composite
def anchor_dates(draw: st.DrawFn) -> dict[str, dt.date]:
    """Usually A and C; B (relative to A) now and then, in or out of its range; rarely a
    date at the calendar's ends or an anchor the protocol lacks."""
    anchors: dict[str, dt.date] = {}
    if not one_in(draw, 10):
        anchors["a"] = rarely(draw, calendar_ends, ordinary_dates)
        if draw(st.booleans()) and anchors["a"].year not in (1, 9999):
            anchors["b"] = anchors["a"] + draw(st.integers(-2, 12)) * DAY
    if not one_in(draw, 5):
        anchors["c"] = draw(ordinary_dates)
    if one_in(draw, 20):
        anchors["z"] = draw(ordinary_dates)
    return anchors


@settings(max_examples=bounded(3_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocols(),
    anchor_dates(),
    st.sampled_from([None, "X", "Y"]),
    st.dictionaries(
        st.tuples(st.sampled_from(CODES), st.integers(1, 6)),
        st.one_of(ordinary_dates, calendar_ends),
        max_size=4,
    ),
)
def test_random_protocols_plan_and_refuse_exactly_as_before(
    snapshot: ProtocolSnapshot,
    anchors: dict[str, dt.date],
    arm: str | None,
    visit_dates: dict[tuple[str, int], dt.date],
) -> None:
    facts = ParticipantFacts(anchors=anchors, arm=arm)
    first = assert_same(snapshot, facts)
    event("planned" if first[0] == "plan" else f"refused: {first[2][:25]}")
    history = History(visit_dates=visit_dates)
    event("with history: " + assert_same(snapshot, facts, history)[0])


def interleaved(every: int | None = 7) -> ProtocolSnapshot:
    """Two repeating visits whose occurrences interleave, listed latest first, and one counted
    from the first occurrence of the other."""
    return ProtocolSnapshot(
        anchors=(AnchorSpec("a", "A"),),
        visits=(
            VisitSpec("B", "B", "E", AnchorRef(anchor="a"), 3, 1, 1, 30, every, 3),
            VisitSpec("A", "A", "E", AnchorRef(anchor="a"), 0, 1, 1, 30, 7, 3),
            VisitSpec("C", "C", "E", AnchorRef(visit="A", occurrence=1), 1, 0, 0, 30),
        ),
    )


@pytest.mark.parametrize("every", [7, -7, 0, None])
def test_visits_out_of_date_order_are_sorted_as_before(every: int | None) -> None:
    facts = ParticipantFacts(anchors={"a": D(2026, 1, 1)})
    kind, calendar, _ = assert_same(interleaved(every), facts)

    assert kind == "plan"
    steps = {7: [3, 10, 17], -7: [3, -4, -11], 0: [3, 3, 3], None: [3, 3, 3]}[every]
    expected = [("A", k + 1, D(2026, 1, 1) + 7 * k * DAY) for k in range(3)]
    expected += [("B", k + 1, D(2026, 1, 1) + days * DAY) for k, days in enumerate(steps)]
    expected.append(("C", 1, D(2026, 1, 2)))
    expected.sort(key=lambda row: (row[2], row[0], row[1]))
    assert [(v.visit_code, v.occurrence, v.target) for v in calendar.visits] == expected
    # The first A done 9 days late moves C past the Bs.
    late = History(visit_dates={("A", 1): D(2026, 1, 10)})
    kind, moved, _ = assert_same(interleaved(every), facts, late)
    assert [v.target for v in moved.visits if v.visit_code == "C"] == [D(2026, 1, 11)]


def test_a_count_of_days_past_timedelta_is_refused_only_when_it_is_needed() -> None:
    far = VisitSpec(
        "FAR", "Far", "E", AnchorRef(anchor="a"), 2_000_000_000, 0, 0, 30, arms=frozenset({"X"})
    )
    near = VisitSpec("NEAR", "Near", "E", AnchorRef(anchor="a"), 1, 0, 0, 30)
    snapshot = ProtocolSnapshot(anchors=(AnchorSpec("a", "A"),), visits=(far, near))

    planned = assert_same(snapshot, ParticipantFacts(anchors={"a": D(2026, 1, 1)}, arm="Y"))
    assert [(v.visit_code, v.target) for v in planned[1].visits] == [("NEAR", D(2026, 1, 2))]
    refused = assert_same(snapshot, ParticipantFacts(anchors={"a": D(2026, 1, 1)}, arm="X"))
    assert refused[:2] == ("refused", "DateOutOfRange")


# ---- The planned visits are the dataclass's own instances. ----------------------------------


def test_planned_visits_are_frozen_dataclass_instances_equal_to_constructed_ones(
    seed_document,
) -> None:
    snapshot = snapshot_from_document(seed_document("002"))
    visit = plan(snapshot, ParticipantFacts(anchors={"day1": D(2026, 3, 2)})).visits[1]
    built = PlannedVisit(
        visit_code="TRT",
        occurrence=1,
        target=D(2026, 3, 2),
        window_start=D(2026, 2, 28),
        window_end=D(2026, 3, 4),
        procedures=("INJECTION", "TIS"),
    )

    assert type(visit) is PlannedVisit
    assert visit == built and hash(visit) == hash(built) and repr(visit) == repr(built)
    # Every field and nothing else, in the dataclass's order: a field added to PlannedVisit
    # must be added where the planner builds one.
    assert list(vars(visit)) == [f.name for f in dataclasses.fields(PlannedVisit)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        visit.target = D(2026, 3, 3)  # type: ignore[misc]
    assert dataclasses.replace(visit, occurrence=2) == dataclasses.replace(built, occurrence=2)
    assert visit != dataclasses.replace(built, estimated=True)


# ---- What is kept: per snapshot object, for its life; nothing per participant. ---------------


def test_a_snapshot_is_compiled_once_and_forgotten_with_it(seed_document) -> None:
    snapshot = snapshot_from_document(seed_document("002"))
    first = planner._compiled(snapshot)

    assert planner._compiled(snapshot) is first
    equal = dataclasses.replace(snapshot)
    assert equal == snapshot and planner._compiled(equal) is not first
    key = id(equal)
    del equal
    gc.collect()
    assert key not in planner._compiled_by_id
    assert id(snapshot) in planner._compiled_by_id


def test_each_plan_is_computed_afresh_for_its_participant(seed_document) -> None:
    snapshot = snapshot_from_document(seed_document("002"))
    facts = ParticipantFacts(anchors={"day1": D(2026, 3, 2)})
    once, again = plan(snapshot, facts), plan(snapshot, facts)
    later = plan(snapshot, ParticipantFacts(anchors={"day1": D(2026, 3, 9)}))

    assert once == again and once is not again and once.visits[0] is not again.visits[0]
    assert [v.target - w.target for v, w in zip(later.visits, once.visits, strict=True)] == [
        7 * DAY
    ] * 54
