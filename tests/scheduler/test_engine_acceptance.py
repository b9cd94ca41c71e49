"""The issue's acceptance values, computed by the pure engine from the seed protocol files."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from scheduler.engine import ParticipantFacts, PlanningError, plan
from scheduler.engine.types import History
from scheduler.snapshot import snapshot_from_document

D = dt.date
NIAMS_DAY1 = dt.date(2026, 2, 2)
TSUKUBA_DAY1 = dt.date(2026, 3, 16)
DAY = dt.timedelta(days=1)


def niams_plan(seed_document, day1: dt.date = NIAMS_DAY1, history: History | None = None):
    protocol = snapshot_from_document(seed_document("000"))
    return plan(protocol, ParticipantFacts(anchors={"day1": day1}), history)


def test_niams_screening_window_runs_from_28_to_14_days_before_day1(seed_document) -> None:
    screening = [v for v in niams_plan(seed_document).visits if v.visit_code == "V1"]

    assert [(v.window_start, v.window_end) for v in screening] == [
        (D(2026, 2, 2) - 28 * DAY, D(2026, 2, 2) - 14 * DAY)
    ]
    assert (screening[0].window_start, screening[0].window_end) == (D(2026, 1, 5), D(2026, 1, 19))


def test_niams_nine_treatment_visits_every_28_days_from_day1(seed_document) -> None:
    calendar = niams_plan(seed_document)
    treatment = [v for v in calendar.visits if v.visit_code in {f"V{n}" for n in range(2, 11)}]

    assert [(v.target - D(2026, 2, 2)).days for v in treatment] == [
        0,
        28,
        56,
        84,
        112,
        140,
        168,
        196,
        224,
    ]
    assert treatment[-1].target == D(2026, 9, 14)


def test_niams_follow_up_is_28_days_after_the_last_treatment_visit(seed_document) -> None:
    calendar = niams_plan(seed_document)
    targets = {v.visit_code: v.target for v in calendar.visits}

    assert targets["V11"] == D(2026, 10, 12)
    assert (targets["V11"] - targets["V10"]).days == 28


def test_niams_follow_up_counts_from_the_actual_date_of_the_last_infusion(seed_document) -> None:
    late = History(visit_dates={("V10", 1): D(2026, 9, 17)})
    targets = {v.visit_code: v.target for v in niams_plan(seed_document, history=late).visits}

    assert targets["V11"] == D(2026, 10, 15)
    assert targets["V9"] == D(2026, 8, 17)  # Day-1 anchored: unmoved


def test_niams_cavi_and_fdg_pet_are_exactly_on_the_visits_the_template_names(
    seed_document,
) -> None:
    calendar = niams_plan(seed_document)

    with_cavi = [v.visit_code for v in calendar.visits if "CAVI" in v.procedures]
    with_pet = [v.visit_code for v in calendar.visits if "FDGPET" in v.procedures]
    template = {v.code: v.procedures for v in seed_document("000").visits}
    assert with_cavi == [code for code, procs in template.items() if "CAVI" in procs]
    assert with_cavi == ["V2", "V6", "V10"]
    assert with_pet == ["V2", "V10"]


def test_niams_contraception_ends_16_weeks_after_the_last_infusion(seed_document) -> None:
    calendar = niams_plan(seed_document)

    assert [(m.milestone_code, m.due) for m in calendar.milestones] == [
        ("CONTRACEPTION_END", D(2026, 9, 14) + 16 * 7 * DAY)
    ]
    assert calendar.milestones[0].due == D(2027, 1, 4)


def tsukuba_plan(seed_document, weight: int, day1: dt.date = TSUKUBA_DAY1):
    protocol = snapshot_from_document(seed_document("001"))
    return plan(
        protocol,
        ParticipantFacts(
            anchors={"psl_start": D(2026, 3, 2), "day1": day1}, weight_kg=Decimal(weight)
        ),
    )


def taper(calendar) -> list[tuple[int, dt.date, Decimal]]:
    return [
        (m.sequence, m.due, m.dose_mg)
        for m in calendar.milestones
        if m.milestone_code == "PSL_TAPER"
    ]


def test_tsukuba_60kg_taper_starts_at_36mg_and_reaches_7_5_or_less_at_week_12(
    seed_document,
) -> None:
    steps = taper(tsukuba_plan(seed_document, 60))

    assert [dose for _, _, dose in steps] == [
        Decimal(d) for d in (36, 36, 31, 27, 23, 20, 17, 15, 13, 11, 9, 8, 7)
    ]
    assert [due for _, due, _ in steps] == [D(2026, 3, 2) + 7 * w * DAY for w in range(13)]
    doses = [dose for _, _, dose in steps]
    assert all(later <= earlier for earlier, later in zip(doses, doses[1:], strict=False))
    assert doses[12] <= Decimal("7.5")


def test_tsukuba_70kg_starts_at_42mg_since_the_protocol_sets_no_cap(seed_document) -> None:
    steps = taper(tsukuba_plan(seed_document, 70))

    assert [dose for _, _, dose in steps][:3] == [Decimal(42), Decimal(42), Decimal(35)]
    assert steps[-1][2] == Decimal(7)


def test_tsukuba_infusions_every_28_days_through_week_24(seed_document) -> None:
    calendar = tsukuba_plan(seed_document, 60)
    infusions = [v for v in calendar.visits if "INFUSION" in v.procedures]

    assert [(v.target - D(2026, 3, 16)).days // 7 for v in infusions] == [0, 4, 8, 12, 16, 20, 24]
    assert [v.target for v in infusions if "LLDAS" in v.procedures] == [
        D(2026, 3, 16),
        D(2026, 6, 8),
        D(2026, 8, 31),
    ]
    assert [v.target for v in infusions if {"SLEDAI", "COMPLEMENT"} <= set(v.procedures)] == [
        D(2026, 3, 16),
        D(2026, 6, 8),
        D(2026, 8, 31),
    ]


def test_tsukuba_day1_more_than_14_days_after_psl_start_is_refused(seed_document) -> None:
    with pytest.raises(PlanningError) as caught:
        tsukuba_plan(seed_document, 60, day1=D(2026, 3, 17))

    assert caught.value.problems == [
        "Anifrolumab Day 1 (first infusion) (2026-03-17) is 15 day(s) after Prednisolone (PSL) "
        "start; the protocol allows at most 14"
    ]


def test_tsukuba_day1_unknown_is_estimated_from_psl_start(seed_document) -> None:
    protocol = snapshot_from_document(seed_document("001"))
    calendar = plan(
        protocol, ParticipantFacts(anchors={"psl_start": D(2026, 3, 2)}, weight_kg=Decimal(60))
    )

    assert calendar.anchors["day1"] == D(2026, 3, 9)
    assert calendar.estimated_anchors == frozenset({"day1"})
    assert {v.estimated for v in calendar.visits} == {True}
    assert [m.estimated for m in calendar.milestones if m.milestone_code == "PSL_TAPER"][0] is False


def test_jasmine_52_weekly_treatment_visits_then_follow_up_4_weeks_later(seed_document) -> None:
    protocol = snapshot_from_document(seed_document("002"))
    calendar = plan(protocol, ParticipantFacts(anchors={"day1": D(2026, 3, 2)}))

    treatment = [v for v in calendar.visits if v.visit_code == "TRT"]
    assert len(treatment) == 52
    assert [(v.target - D(2026, 3, 2)).days for v in treatment] == [7 * k for k in range(52)]
    assert [v.visit_code for v in calendar.visits][0] == "SCR"
    follow_up = [v for v in calendar.visits if v.visit_code == "FU"]
    assert [(v.target - treatment[-1].target).days for v in follow_up] == [28]
    assert follow_up[0].target == D(2027, 3, 22)


def test_plan_names_every_missing_anchor(seed_document) -> None:
    protocol = snapshot_from_document(seed_document("001"))

    with pytest.raises(PlanningError) as caught:
        plan(protocol, ParticipantFacts(anchors={}, weight_kg=Decimal(60)))

    assert caught.value.problems == [
        "the date of Anifrolumab Day 1 (first infusion) (day1) is needed",
        "the date of Prednisolone (PSL) start (psl_start) is needed",
    ]
