"""A visit's plan inside the day: layout of its steps and the importer's validation."""

from __future__ import annotations

import pytest

from scheduler.engine.slots import (
    Need,
    SlotPlanError,
    Step,
    VisitPlan,
    plan_layout,
    plan_minutes,
    plan_problems,
    validate_plan,
)
from tests.slots.sites import NIAMS_PET_VISIT, NIAMS_SEQUENTIAL


def test_after_with_and_overlap_place_each_step_against_the_one_before() -> None:
    plan = VisitPlan(
        "V",
        (
            Step("A", 30),
            Step("B", 20),  # after A
            Step("C", 10, relation="with"),  # starts with B
            Step("D", 40, relation="overlap", overlap_minutes=5),  # 5 min before C ends
            Step("E", 15),  # after D
        ),
        max_minutes=200,
    )
    assert plan_layout(plan) == ((0, 30), (30, 50), (30, 40), (35, 75), (75, 90))
    assert plan_minutes(plan) == 90


def test_a_parallel_step_that_ends_last_sets_the_visits_length() -> None:
    plan = VisitPlan("V", (Step("A", 30), Step("B", 90, relation="with")), max_minutes=90)
    assert plan_minutes(plan) == 90
    assert validate_plan(plan) is plan


def test_the_niams_week0_procedures_in_a_row_do_not_fit_four_hours() -> None:
    with pytest.raises(SlotPlanError) as caught:
        validate_plan(NIAMS_SEQUENTIAL)
    assert caught.value.problems == [
        "visit V2: its steps take 285 minutes (EXAM 0-30, LABS 30-45, SLEQ 45-65, CAVI 65-85, "
        "FDGPET 85-195, INFUSION 195-285) but the visit lasts at most 240; 45 minutes too many"
    ]


def test_the_niams_week0_visit_fits_with_exam_and_questionnaire_during_observation() -> None:
    assert plan_layout(NIAMS_PET_VISIT) == (
        (0, 15),
        (15, 125),
        (125, 145),
        (145, 235),
        (145, 175),
        (175, 195),
    )
    assert plan_problems(NIAMS_PET_VISIT) == []
    assert plan_minutes(NIAMS_PET_VISIT) == 235


def test_every_malformed_step_is_named() -> None:
    plan = VisitPlan(
        "V9",
        (
            Step("A", 10, relation="with"),
            Step("B", 0),
            Step("C", 5, relation="overlap", overlap_minutes=3),
            Step("D", 5, relation="overlap", overlap_minutes=6),
            Step("E", 5, resources=(Need("chair", 0),)),
        ),
        max_minutes=60,
    )
    assert plan_problems(plan) == [
        "visit V9, step 1 (A): the first step starts the visit; it cannot be with",
        "visit V9, step 2 (B): lasts 0 minutes; a step lasts at least 1",
        "visit V9, step 3 (C): overlaps B by 3 minutes; it can overlap by 1 to 0",
        "visit V9, step 4 (D): overlaps C by 6 minutes; it can overlap by 1 to 5",
        "visit V9, step 5 (E): needs 0 chair; at least 1",
    ]


def test_an_empty_plan_is_refused() -> None:
    assert plan_problems(VisitPlan("V1", (), 60)) == ["visit V1: the plan has no steps"]
