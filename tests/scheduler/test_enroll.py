from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from participants.models import Participant, TreatmentAssignment
from scheduler.engine import ParticipantFacts, plan
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.selectors import protocol_snapshot
from scheduler.services import EnrollmentError, participant_enroll
from tests.factories import participant_for
from trials.models import Arm

D = dt.date
CONSENT = D(2026, 1, 5)


def born(age: int, before: dt.date = CONSENT) -> dt.date:
    """Birth date of someone who turned `age` exactly 100 days before `before`."""
    return before.replace(year=before.year - age) - dt.timedelta(days=100)


@pytest.mark.django_db
def test_participant_enroll_persists_the_niams_calendar(import_seed) -> None:
    version = import_seed("000")
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 2), "consent": CONSENT}, birth_date=born(45)
    )

    participant_enroll(
        participant=participant, on=CONSENT, arm=Arm.objects.get(version=version, code="ANI")
    )

    rows = list(
        ScheduledVisit.objects.filter(participant=participant)
        .order_by("target_date")
        .values_list(
            "visit_definition__code", "target_date", "window_start", "window_end", "status"
        )
    )
    assert rows[0] == ("V1", D(2026, 1, 12), D(2026, 1, 5), D(2026, 1, 19), "planned")
    infusions = [(f"V{n}", D(2026, 2, 2) + dt.timedelta(days=28 * (n - 2))) for n in range(2, 11)]
    assert [(code, target) for code, target, *_ in rows[1:]] == [
        *infusions[:2],
        ("V3C", D(2026, 3, 9)),
        *infusions[2:],
        ("V11", D(2026, 10, 12)),
    ]
    assert sorted(
        ScheduledProcedure.objects.filter(
            visit__participant=participant, procedure__code="FDGPET"
        ).values_list("visit__visit_definition__code", flat=True)
    ) == ["V10", "V2"]
    assert list(
        ScheduledMilestone.objects.filter(participant=participant).values_list(
            "rule__code", "due_date", "dose_mg"
        )
    ) == [("CONTRACEPTION_END", D(2027, 1, 4), None)]
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ENROLLED
    assert TreatmentAssignment.objects.get(participant=participant).arm.code == "ANI"


@pytest.mark.django_db
def test_participant_enroll_stores_what_the_engine_plans(import_seed) -> None:
    version = import_seed("001")
    anchors = {"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)}
    participant = participant_for(version, anchors=anchors, weight_kg=Decimal(60))

    participant_enroll(participant=participant, on=D(2026, 3, 1))

    expected = plan(
        protocol_snapshot(version=version),
        ParticipantFacts(anchors=anchors, weight_kg=Decimal(60)),
    )
    assert list(
        ScheduledVisit.objects.filter(participant=participant)
        .order_by("target_date")
        .values_list("target_date", "window_start", "window_end")
    ) == [(v.target, v.window_start, v.window_end) for v in expected.visits]
    assert list(
        ScheduledMilestone.objects.filter(participant=participant, rule__code="PSL_TAPER")
        .order_by("sequence")
        .values_list("due_date", "dose_mg")
    ) == [(m.due, m.dose_mg) for m in expected.milestones if m.milestone_code == "PSL_TAPER"]
    assert ScheduledMilestone.objects.get(
        participant=participant, rule__code="PSL_TAPER", sequence=0
    ).dose_mg == Decimal(36)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("age", "message"),
    [
        (
            17,
            "AGE (Aged 18 to 80 years.): age 17 years is outside the required range "
            "(≥ 18 and ≤ 80)",
        ),
        (
            81,
            "AGE (Aged 18 to 80 years.): age 81 years is outside the required range "
            "(≥ 18 and ≤ 80)",
        ),
    ],
)
def test_participant_enroll_refuses_niams_ages_outside_18_to_80(import_seed, age, message) -> None:
    version = import_seed("000")
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 2), "consent": CONSENT}, birth_date=born(age)
    )

    with pytest.raises(EnrollmentError) as caught:
        participant_enroll(participant=participant, on=D(2026, 1, 20))

    assert caught.value.problems == [message]
    participant.refresh_from_db()
    assert participant.status == Participant.Status.SCREENING
    assert ScheduledVisit.objects.filter(participant=participant).count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("age", [18, 80])
def test_participant_enroll_accepts_niams_ages_at_the_limits(import_seed, age) -> None:
    version = import_seed("000")
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 2), "consent": CONSENT}, birth_date=born(age)
    )

    participant_enroll(participant=participant, on=D(2026, 1, 20))

    assert ScheduledVisit.objects.filter(participant=participant).count() == 12


@pytest.mark.django_db
def test_participant_enroll_refuses_a_39kg_jasmine_participant(import_seed) -> None:
    version = import_seed("002")
    participant = participant_for(
        version, anchors={"day1": D(2026, 3, 2)}, weight_kg=Decimal(39), birth_date=born(50)
    )

    with pytest.raises(EnrollmentError) as caught:
        participant_enroll(participant=participant, on=D(2026, 2, 1))

    assert caught.value.problems == [
        "WEIGHT (Weight between 40 and 100 kg.): weight 39.0 kg is outside the required range "
        "(≥ 40 and ≤ 100)"
    ]
    assert str(caught.value).startswith(f"{participant} cannot be enrolled: WEIGHT")


@pytest.mark.django_db
@pytest.mark.parametrize("weight", [40, 100])
def test_participant_enroll_accepts_jasmine_weights_at_the_limits(import_seed, weight) -> None:
    version = import_seed("002")
    participant = participant_for(
        version, anchors={"day1": D(2026, 3, 2)}, weight_kg=Decimal(weight), birth_date=born(50)
    )

    participant_enroll(participant=participant, on=D(2026, 2, 1))

    assert ScheduledVisit.objects.filter(participant=participant).count() == 54


@pytest.mark.django_db
def test_participant_enroll_refuses_tsukuba_age_80_since_the_limit_is_below_80(import_seed) -> None:
    version = import_seed("001")
    participant = participant_for(
        version,
        anchors={"psl_start": D(2026, 3, 2), "consent": D(2026, 3, 1)},
        birth_date=born(80, D(2026, 3, 1)),
    )

    with pytest.raises(EnrollmentError) as caught:
        participant_enroll(participant=participant, on=D(2026, 3, 1))

    assert caught.value.problems == [
        "AGE (Age 18 years or older and younger than 80 years at the time of obtaining "
        "consent.): age 80 years is outside the required range (≥ 18 and < 80)"
    ]


@pytest.mark.django_db
def test_participant_enroll_lists_every_problem_and_writes_nothing(import_seed) -> None:
    version = import_seed("001")
    participant = participant_for(
        version,
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 20)},
        birth_date=born(16, D(2026, 3, 1)),
        weight_kg=None,
    )

    with pytest.raises(EnrollmentError) as caught:
        participant_enroll(participant=participant, on=D(2026, 3, 1))

    assert caught.value.problems == [
        "AGE (Age 18 years or older and younger than 80 years at the time of obtaining "
        "consent.): age 16 years is outside the required range (≥ 18 and < 80)",
        "Anifrolumab Day 1 (first infusion) (2026-03-20) is 18 day(s) after Prednisolone (PSL) "
        "start; the protocol allows at most 14",
    ]
    assert ScheduledVisit.objects.count() == 0
    assert ScheduledMilestone.objects.count() == 0


@pytest.mark.django_db
def test_participant_enroll_refuses_an_already_enrolled_participant(import_seed) -> None:
    version = import_seed("002")
    participant = participant_for(version, anchors={"day1": D(2026, 3, 2)}, birth_date=born(50))
    participant_enroll(participant=participant, on=D(2026, 2, 1))

    with pytest.raises(EnrollmentError) as caught:
        participant_enroll(participant=participant, on=D(2026, 2, 1))

    assert caught.value.problems == ["status is enrolled, expected screening"]
    assert ScheduledVisit.objects.filter(participant=participant).count() == 54


@pytest.mark.django_db
def test_participant_enroll_query_count_does_not_grow_with_the_calendar(
    import_seed, django_assert_num_queries, monkeypatch
) -> None:
    # Sizes kept under SQLite's bulk-insert batch (999 variables), which would otherwise add
    # queries that have nothing to do with N+1. On Postgres every table's new rows go in with
    # COPY (the threshold lowered to one row), each after a query for their keys.
    from django.db import connection

    from scheduler import bulkwrite

    monkeypatch.setattr(bulkwrite, "COPY_FROM_ROWS", 1)
    queries = 45 if connection.vendor == "postgresql" else 43
    small = participant_for(
        import_seed("001"),
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 9)},
        birth_date=born(40),
    )  # 7 visits, 15 milestones
    large = participant_for(
        import_seed("000"), anchors={"day1": D(2026, 3, 2)}, birth_date=born(40)
    )  # 12 visits, 1 milestone

    # TSUKUBA's file names no reminders: it gets the defaults, with no stored rules to read.
    with django_assert_num_queries(queries - 1):
        participant_enroll(participant=small, on=D(2026, 2, 1))
    with django_assert_num_queries(queries):
        participant_enroll(participant=large, on=D(2026, 2, 1))
