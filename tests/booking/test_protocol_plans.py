"""Visit plans in protocol files: refused when they do not fit the visit's stated duration or
name a procedure the visit does not carry, stored, and exported back the same."""

from __future__ import annotations

import datetime as dt

import pytest

from scheduler.booking import visit_plan
from scheduler.engine.slots import Need, Step, plan_layout, plan_minutes
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll
from tests.conftest import seed_path
from tests.factories import participant_for
from trials.models import VisitDefinition
from trials.protocol_file import ProtocolFileError, parse_protocol
from trials.protocol_file import plan_layout as file_layout
from trials.services import protocol_export, protocol_import

pytestmark = pytest.mark.django_db
SEED = seed_path("000")
NIAMS = SEED.read_text(encoding="utf-8")
EXAM_DURING_OBSERVATION = "      - {procedure: EXAM, relation: overlap, overlap_minutes: 60}\n"


def lines_of(text: str, needle: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]


def test_niams_week_0_and_32_plans_fit_in_235_of_240_minutes(seed_document) -> None:
    document = seed_document("000")
    minutes = {p.code: p.duration_minutes for p in document.procedures}
    for code in ("V2", "V10"):
        section = next(v for v in document.visits if v.code == code)
        steps = section.plan_steps()
        assert steps is not None
        assert file_layout(steps, minutes) == (
            (0, 15),  # LABS, fasting
            (15, 125),  # FDGPET
            (125, 145),  # CAVI
            (145, 235),  # INFUSION: 30 infusion + 60 observation
            (175, 205),  # EXAM during the observation
            (205, 225),  # SLEQ
        )
        assert section.duration_minutes == 240


def test_the_stored_plan_is_the_engines_plan_with_what_each_step_holds(import_seed) -> None:
    import_seed("000")
    definition = VisitDefinition.objects.get(code="V2")
    assert definition.plan == [
        {"procedure": "LABS", "relation": "after", "overlap_minutes": 0},
        {"procedure": "FDGPET", "relation": "after", "overlap_minutes": 0},
        {"procedure": "CAVI", "relation": "after", "overlap_minutes": 0},
        {"procedure": "INFUSION", "relation": "after", "overlap_minutes": 0},
        {"procedure": "EXAM", "relation": "overlap", "overlap_minutes": 60},
        {"procedure": "SLEQ", "relation": "after", "overlap_minutes": 0},
    ]

    participant = participant_for(definition.version, anchors={"day1": dt.date(2026, 2, 3)})
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    plan = visit_plan(
        ScheduledVisit.objects.get(participant=participant, visit_definition=definition)
    )
    assert plan is not None
    assert plan.steps == (
        Step("LABS", 15),
        Step("FDGPET", 110, resources=(Need("PET/CT scanner"),)),
        Step("CAVI", 20, resources=(Need("CAVI device"),)),
        Step("INFUSION", 90, resources=(Need("Infusion chair"),)),
        Step("EXAM", 30, relation="overlap", overlap_minutes=60),
        Step("SLEQ", 20),
    )
    assert (plan.max_minutes, plan_minutes(plan)) == (240, 235)
    # The file's arithmetic and the slot finder's agree.
    assert plan_layout(plan) == ((0, 15), (15, 125), (125, 145), (145, 235), (175, 205), (205, 225))


def test_a_plan_longer_than_the_visit_is_refused_with_file_visit_and_line(db) -> None:
    text = NIAMS.replace(EXAM_DURING_OBSERVATION, "      - EXAM\n", 1)
    with pytest.raises(ProtocolFileError) as refused:
        protocol_import(text=text, source="000_niams_vascular.yaml")
    line = lines_of(text, "    plan:")[0]
    assert str(refused.value) == (
        f"000_niams_vascular.yaml: visits[1].plan (line {line}): visit V2: the plan lasts 285 "
        "minutes (LABS 0-15, FDGPET 15-125, CAVI 125-145, INFUSION 145-235, EXAM 235-265, "
        "SLEQ 265-285), 45 more than the visit's 240; let procedures overlap (with, overlap) "
        "or lengthen duration_minutes"
    )
    assert not VisitDefinition.objects.exists()


def test_a_step_naming_a_procedure_the_visit_does_not_carry_is_refused(db) -> None:
    text = NIAMS.replace("      - SLEQ\n", "      - SLEQ\n      - ECG\n", 1)
    with pytest.raises(ProtocolFileError) as refused:
        parse_protocol(text, source="niams.yaml")
    line = lines_of(text, "      - ECG")[0]
    assert str(refused.value) == (
        f"niams.yaml: visits[1].plan[6] (line {line}): visit V2, step 7 (ECG): the visit does "
        "not carry procedure 'ECG'; its procedures are EXAM, LABS, SLEQ, CAVI, FDGPET, INFUSION"
    )


def test_a_plan_leaving_out_a_procedure_or_starting_with_an_overlap_is_refused() -> None:
    text = NIAMS.replace(
        "      - LABS\n      - FDGPET\n", "      - {procedure: FDGPET, relation: with}\n", 1
    )
    with pytest.raises(ProtocolFileError) as refused:
        parse_protocol(text, source="niams.yaml")
    messages = [p.message for p in refused.value.problems]
    assert messages == [
        "visit V2, step 1 (FDGPET): the first step starts the visit; it cannot be with",
        "visit V2: the plan leaves out LABS; every procedure of the visit has its place in the day",
    ]


def test_plans_and_staff_needs_round_trip_through_export(db) -> None:
    text = NIAMS.replace(
        "    resource: Infusion chair\n",
        "    resource: Infusion chair\n    staff: {kind: infusion nurse}\n",
        1,
    )
    version = protocol_import(text=text, source="niams.yaml")
    exported = protocol_export(version=version)
    assert "  resource: Infusion chair\n  staff:\n    kind: infusion nurse\n" in exported
    assert (
        "  plan:\n  - LABS\n  - FDGPET\n  - CAVI\n  - INFUSION\n"
        "  - procedure: EXAM\n    relation: overlap\n    overlap_minutes: 60\n  - SLEQ\n"
    ) in exported
    assert parse_protocol(exported) == parse_protocol(text)
