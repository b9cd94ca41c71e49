"""Doses are what was prescribed: a prescription that is not a whole number of tablets is
refused with the two nearest doses offered (or kept exactly when the protocol allows it);
doses beyond the protocol's ceiling or the dose column are refused, never a 500; no computed
dose is above its cap or the week before it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import yaml
from django.contrib.auth.models import User
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from participants.models import Participant
from scheduler.engine.taper import dose_ceiling, taper_steps
from scheduler.engine.types import TaperAdjustment as TaperDecision
from scheduler.engine.types import TaperSpec
from scheduler.models import ScheduledMilestone, TaperAdjustment
from scheduler.services import CalendarError, participant_enroll, taper_adjust, taper_adjust_preview
from tests.conftest import bounded, seed_path
from tests.factories import member_of_every_trial_site, participant_for
from trials.models import ProtocolVersion
from trials.protocol_file import ProtocolFileError, parse_protocol
from trials.services import protocol_export, protocol_import

D = dt.date
TSUKUBA = seed_path("001").read_text(encoding="utf-8")
EXACT = TSUKUBA.replace(
    "      shape: geometric\n", "      shape: geometric\n      exact_doses: true\n"
)


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


def enrolled(version: ProtocolVersion, weight: str = "60") -> Participant:
    participant = participant_for(
        version,
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
        weight_kg=Decimal(weight),
        birth_date=D(1980, 6, 15),
        study_id="T-001",
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


def doses(participant: Participant) -> list[Decimal | None]:
    return list(
        ScheduledMilestone.objects.filter(participant=participant, rule__code="PSL_TAPER")
        .order_by("sequence")
        .values_list("dose_mg", flat=True)
    )


def refusal(participant: Participant, dose: str, week: int = 2, **options) -> str:
    """The refusal of a prescription, which the preview and the decision must agree on."""
    with pytest.raises(CalendarError) as preview:
        taper_adjust_preview(
            participant=participant,
            milestone_code="PSL_TAPER",
            week=week,
            dose_mg=Decimal(dose),
            **options,
        )
    with pytest.raises(CalendarError) as decision:
        taper_adjust(
            participant=participant,
            milestone_code="PSL_TAPER",
            week=week,
            dose_mg=Decimal(dose),
            by=User.objects.get_or_create(username="investigator")[0],
            reason="investigator's prescription",
            **options,
        )
    assert str(preview.value) == str(decision.value)
    return str(decision.value)


@pytest.fixture
def tsukuba(import_seed, db) -> Participant:
    return enrolled(import_seed("001"))


@pytest.fixture
def investigator(django_user_model):
    return django_user_model.objects.create_user("investigator", password="a-long-passphrase")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("dose", "message"),
    [
        ("26.6", "26.6 mg is not a multiple of the 1 mg tablet; prescribe 26 mg or 27 mg"),
        ("26.5", "26.5 mg is not a multiple of the 1 mg tablet; prescribe 26 mg or 27 mg"),
        ("0.4", "0.4 mg is not a multiple of the 1 mg tablet; prescribe 0 mg or 1 mg"),
        ("35.99", "35.99 mg is not a multiple of the 1 mg tablet; prescribe 35 mg or 36 mg"),
        (
            "99999.99",
            "99999.99 mg/day is above what the protocol allows tsukuba-early-ani/T-001: "
            "0.6 mg/kg/day × 60 kg = 36 mg/day",
        ),
        (
            "37",
            "37 mg/day is above what the protocol allows tsukuba-early-ani/T-001: "
            "0.6 mg/kg/day × 60 kg = 36 mg/day",
        ),
        (
            "100000",
            "100000 mg/day cannot be recorded: doses are recorded to 0.01 mg, up to "
            "99999.99 mg/day",
        ),
        (
            "26.655",
            "26.655 mg/day cannot be recorded: doses are recorded to 0.01 mg, up to "
            "99999.99 mg/day",
        ),
        ("-1", "-1 mg/day is not a dose: a prescribed dose is 0 mg/day or more"),
    ],
)
def test_prescription_the_calendar_cannot_hold_as_written_is_refused(
    tsukuba, dose, message
) -> None:
    before = doses(tsukuba)

    assert refusal(tsukuba, dose, allow_increase=True) == message
    assert (doses(tsukuba), TaperAdjustment.objects.count()) == (before, 0)


@pytest.mark.django_db
def test_only_the_nearest_dose_within_the_ceiling_is_offered(import_seed) -> None:
    # 60.5 kg × 0.6 mg/kg = 36.3 mg: 37 mg would be above it.
    participant = enrolled(import_seed("001"), weight="60.5")

    assert refusal(participant, "36.2") == (
        "36.2 mg is not a multiple of the 1 mg tablet; prescribe 36 mg"
    )


@pytest.mark.django_db
def test_whole_tablet_prescription_is_stored_as_prescribed(tsukuba, investigator) -> None:
    taper_adjust(
        participant=tsukuba,
        milestone_code="PSL_TAPER",
        week=2,
        dose_mg=Decimal(26),
        by=investigator,
        reason="investigator's prescription",
    )

    assert doses(tsukuba)[:4] == [Decimal(36), Decimal(36), Decimal(26), Decimal(22)]
    assert TaperAdjustment.objects.get().dose_mg == Decimal(26)


@pytest.mark.django_db
def test_protocol_allowing_exact_doses_stores_the_prescription_exactly(investigator) -> None:
    participant = enrolled(protocol_import(text=EXACT, source="tsukuba-exact.yaml"))

    taper_adjust(
        participant=participant,
        milestone_code="PSL_TAPER",
        week=2,
        dose_mg=Decimal("26.6"),
        by=investigator,
        reason="oral solution",
    )

    assert doses(participant)[:4] == [Decimal(36), Decimal(36), Decimal("26.6"), Decimal(23)]


@pytest.mark.django_db
def test_admin_taper_form_shows_the_refusal_instead_of_a_500(admin_client, tsukuba) -> None:
    url = reverse("admin:participants_participant_taper", args=[tsukuba.pk])
    posted = {"milestone_code": "PSL_TAPER", "week": "2", "reason": "flare", "_preview": "1"}

    responses = [
        admin_client.post(url, {**posted, "dose_mg": dose}) for dose in ("99999.99", "26.6")
    ]

    assert [r.status_code for r in responses] == [200, 200]
    assert [r.context["form"].non_field_errors() for r in responses] == [
        [
            "99999.99 mg/day is above what the protocol allows tsukuba-early-ani/T-001: "
            "0.6 mg/kg/day × 60 kg = 36 mg/day"
        ],
        ["26.6 mg is not a multiple of the 1 mg tablet; prescribe 26 mg or 27 mg"],
    ]


@pytest.mark.django_db
def test_exact_doses_flag_is_imported_and_exported() -> None:
    version = protocol_import(text=EXACT, source="tsukuba-exact.yaml")

    exported = yaml.safe_load(protocol_export(version=version))

    assert exported["milestones"][0]["taper"]["exact_doses"] is True
    assert "exact_doses" not in yaml.safe_load(TSUKUBA)["milestones"][0]["taper"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("      shape: geometric\n", "      shape: geometric\n      exact_doses: maybe\n"),
            "x.yaml: milestones[0].taper.exact_doses (line 125): input should be a valid boolean "
            "(got 'maybe')",
        ),
        (
            ("step_mg: 1\n", "step_mg: 0.125\n"),
            "x.yaml: milestones[0].taper.step_mg (line 121): decimal input should have no more "
            "than 2 decimal places (got 0.125)",
        ),
    ],
)
def test_protocol_file_validates_the_dose_rules(change, problem) -> None:
    with pytest.raises(ProtocolFileError) as caught:
        parse_protocol(TSUKUBA.replace(*change), source="x.yaml")

    assert str(caught.value) == problem


# ----------------------------------------------------------------------------------------
# The engine


SPEC = TaperSpec(
    initial_mg_per_kg=Decimal("0.6"),
    initial_weeks=2,
    target_mg=Decimal("7.5"),
    target_week=12,
    step_mg=Decimal(1),
)


def engine_doses(spec: TaperSpec, decisions: dict[int, TaperDecision]) -> list[Decimal]:
    return [step.dose_mg for step in taper_steps(spec, Decimal(60), decisions)]


def test_prescription_off_the_tablet_is_rounded_down_never_up() -> None:
    # A decision recorded before prescriptions were checked: 26.6 mg became 27 mg.
    assert engine_doses(SPEC, {2: TaperDecision("set", Decimal("26.6"))})[2] == Decimal(26)
    exact = TaperSpec(**{**SPEC.__dict__, "exact_doses": True})
    assert engine_doses(exact, {2: TaperDecision("set", Decimal("26.6"))})[2] == Decimal("26.6")


def test_decisions_in_the_initial_weeks_are_applied() -> None:
    three_initial_weeks = TaperSpec(**{**SPEC.__dict__, "initial_weeks": 3})
    plain = engine_doses(three_initial_weeks, {})

    held = engine_doses(three_initial_weeks, {1: TaperDecision("hold")})
    lowered = engine_doses(three_initial_weeks, {1: TaperDecision("set", Decimal(30))})

    # A hold keeps the initial dose a week longer; a prescription is held for the rest of
    # the initial weeks, and the reductions restart from it.
    assert held == [Decimal(36), *plain]
    assert lowered[:4] == [Decimal(36), Decimal(30), Decimal(30), Decimal(26)]
    assert len(lowered) == len(plain)


STEPS = [Decimal("0.5"), Decimal(1), Decimal("2.5"), Decimal(5)]


@st.composite
def tapers_and_decisions(draw: st.DrawFn):
    step = draw(st.sampled_from(STEPS))
    initial_weeks = draw(st.integers(min_value=1, max_value=4))
    spec = TaperSpec(
        initial_mg_per_kg=draw(st.sampled_from([Decimal("0.5"), Decimal("0.6"), Decimal(1)])),
        initial_weeks=initial_weeks,
        target_mg=draw(st.sampled_from([Decimal(0), Decimal(5), Decimal("7.5"), Decimal(10)])),
        target_week=initial_weeks + draw(st.integers(min_value=1, max_value=20)),
        step_mg=step,
        initial_max_mg=draw(st.one_of(st.none(), st.sampled_from([Decimal(30), Decimal(60)]))),
        shape=draw(st.sampled_from(["geometric", "linear"])),
        exact_doses=draw(st.booleans()),
    )
    weight = Decimal(draw(st.integers(min_value=200, max_value=2000))) / 10
    ceiling = dose_ceiling(spec, weight)
    # What the services accept: at most the ceiling, whole tablets unless the drug allows
    # exact doses (then to the column's 0.01 mg), above last week's dose included.
    if spec.exact_doses:
        prescription = st.integers(0, int(ceiling * 100)).map(lambda n: Decimal(n) / 100)
    else:
        prescription = st.integers(0, int(ceiling / step)).map(lambda n: n * step)
    decision = st.one_of(
        st.just(TaperDecision("hold")), prescription.map(lambda d: TaperDecision("set", d))
    )
    decisions = draw(
        st.dictionaries(
            st.integers(min_value=1, max_value=spec.target_week + 6), decision, max_size=8
        )
    )
    return spec, weight, ceiling, decisions


@settings(max_examples=bounded(2_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tapers_and_decisions())
def test_no_computed_dose_is_above_its_cap_or_the_dose_before_it(case) -> None:
    spec, weight, ceiling, decisions = case

    steps = taper_steps(spec, weight, decisions)

    doses = [step.dose_mg for step in steps]
    assert [step.week for step in steps] == list(range(len(steps)))
    assert len(steps) >= max(spec.target_week, *decisions, 0) + 1
    for week, dose in enumerate(doses):
        decision = decisions.get(week) if week else None
        assert dose <= ceiling
        if decision is not None and decision.kind == "set":
            assert dose == decision.dose_mg  # exactly what was prescribed
            continue
        assert dose >= 0
        if week:
            assert dose <= doses[week - 1]
        # Whole tablets, or an exact prescription carried on unchanged.
        assert dose % spec.step_mg == 0 or (week and dose == doses[week - 1])
    target = min(spec.target_mg, doses[0])
    assert doses[-1] <= target or steps[-1].flag != ""
