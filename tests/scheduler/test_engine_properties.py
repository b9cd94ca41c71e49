"""Property-based tests of the engine over random anchors, histories and weights."""

from __future__ import annotations

import calendar as cal
import datetime as dt
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.engine import ParticipantFacts, plan
from scheduler.engine.taper import weekly_doses
from scheduler.engine.types import History, ProtocolSnapshot, TaperSpec
from scheduler.snapshot import snapshot_from_document
from tests.conftest import bounded, seed_path
from trials.protocol_file import parse_protocol

SNAPSHOTS: dict[str, ProtocolSnapshot] = {
    prefix: snapshot_from_document(parse_protocol(seed_path(prefix).read_text(encoding="utf-8")))
    for prefix in ("000", "001", "002")
}

# Dates that break naive month/year arithmetic are drawn on purpose, besides ordinary ones.
LEAP_DAYS = [dt.date(year, 2, 29) for year in range(1972, 2100, 4)]
MONTH_ENDS = [
    dt.date(year, month, cal.monthrange(year, month)[1])
    for year in range(1990, 2061, 7)
    for month in range(1, 13)
]
anchor_dates = st.one_of(
    st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(2100, 12, 31)),
    st.sampled_from(LEAP_DAYS),
    st.sampled_from(MONTH_ENDS),
)


@st.composite
def participants(draw: st.DrawFn) -> tuple[str, ParticipantFacts]:
    prefix = draw(st.sampled_from(sorted(SNAPSHOTS)))
    start = draw(anchor_dates)
    if prefix == "001":
        day1 = start + dt.timedelta(days=draw(st.integers(0, 14)))
        anchors = {"psl_start": start, "day1": day1}
    else:
        anchors = {"day1": start}
    weight = Decimal(draw(st.integers(300, 1500))) / 10
    return prefix, ParticipantFacts(anchors=anchors, weight_kg=weight)


def expected_target(snapshot: ProtocolSnapshot, facts: ParticipantFacts, targets, visit, k):
    """Target from the protocol's own numbers: anchor + offset + (k - 1) * every, no chaining."""
    ref = visit.anchor
    if ref.anchor is not None:
        base = facts.anchors[ref.anchor]
    else:
        source = next(v for v in snapshot.visits if v.code == ref.visit)
        base = targets[(source.code, ref.occurrence or source.repeat_count)]
    days = visit.offset_days + (k - 1) * (visit.repeat_every_days or 0)
    return base + dt.timedelta(days=days)


@settings(max_examples=bounded(10_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(participants())
def test_plan_windows_contain_targets_offsets_never_drift_and_results_repeat(case) -> None:
    prefix, facts = case
    snapshot = SNAPSHOTS[prefix]

    calendar = plan(snapshot, facts)

    specs = {v.code: v for v in snapshot.visits}
    targets = {(v.visit_code, v.occurrence): v.target for v in calendar.visits}
    assert len(calendar.visits) == sum(v.repeat_count for v in snapshot.visits)
    for visit in calendar.visits:
        spec = specs[visit.visit_code]
        assert visit.window_start <= visit.target <= visit.window_end
        assert (visit.target - visit.window_start).days == spec.window_before
        assert (visit.window_end - visit.target).days == spec.window_after
        assert visit.target == expected_target(snapshot, facts, targets, spec, visit.occurrence)
    assert plan(snapshot, facts) == calendar


@settings(max_examples=bounded(1_000), deadline=None)
@given(
    start=anchor_dates,
    moved=st.integers(min_value=-10, max_value=10),
)
def test_plan_moves_only_what_counts_from_a_visit_done_early_or_late(start, moved) -> None:
    snapshot = SNAPSHOTS["000"]
    facts = ParticipantFacts(anchors={"day1": start})
    before = {(v.visit_code, v.occurrence): v.target for v in plan(snapshot, facts).visits}
    actual = before[("V10", 1)] + dt.timedelta(days=moved)

    after = {
        (v.visit_code, v.occurrence): v.target
        for v in plan(snapshot, facts, History(visit_dates={("V10", 1): actual})).visits
    }

    assert {
        key: (after[key] - before[key]).days for key in before if after[key] != before[key]
    } == ({("V11", 1): moved} if moved else {})


@settings(max_examples=bounded(2_000), deadline=None)
@given(
    weight=st.integers(min_value=200, max_value=2000).map(lambda w: Decimal(w) / 10),
    mg_per_kg=st.sampled_from([Decimal("0.5"), Decimal("0.6"), Decimal("1")]),
    cap=st.one_of(st.none(), st.sampled_from([Decimal(30), Decimal(60)])),
    step=st.sampled_from([Decimal("0.5"), Decimal(1), Decimal("2.5"), Decimal(5)]),
    target=st.sampled_from([Decimal(0), Decimal(5), Decimal("7.5"), Decimal(10)]),
    initial_weeks=st.integers(min_value=1, max_value=4),
    span=st.integers(min_value=1, max_value=20),
    shape=st.sampled_from(["geometric", "linear"]),
)
def test_taper_never_exceeds_its_caps_never_increases_and_meets_the_target(
    weight, mg_per_kg, cap, step, target, initial_weeks, span, shape
) -> None:
    spec = TaperSpec(
        initial_mg_per_kg=mg_per_kg,
        initial_weeks=initial_weeks,
        target_mg=target,
        target_week=initial_weeks + span,
        step_mg=step,
        initial_max_mg=cap,
        shape=shape,
    )

    doses = weekly_doses(spec, weight)

    ceiling = min(weight * mg_per_kg, cap) if cap is not None else weight * mg_per_kg
    assert len(doses) == spec.target_week + 1
    assert doses[0] <= ceiling
    assert ceiling - doses[0] < step  # rounded down by less than one tablet
    assert all(later <= earlier for earlier, later in zip(doses, doses[1:], strict=False))
    assert all(dose % step == 0 and dose >= 0 for dose in doses)
    assert doses[:initial_weeks] == [doses[0]] * initial_weeks
    assert doses[-1] <= target
