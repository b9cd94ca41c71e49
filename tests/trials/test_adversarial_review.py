"""Adversarial review: protocol files, amendments, and the engine's arithmetic on edge inputs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine

from scheduler.access import site_today
from scheduler.calendar import CalendarDiff, VisitChange
from scheduler.engine import ParticipantFacts, plan
from scheduler.engine.taper import weekly_doses
from scheduler.engine.types import (
    AnchorRef,
    AnchorSpec,
    DateOutOfRange,
    ProtocolSnapshot,
    TaperSpec,
    VisitSpec,
)
from scheduler.models import BookingHold, ScheduledVisit
from scheduler.services import (
    participant_enroll,
    participant_move_to_version,
    participant_move_to_version_preview,
    site_move_to_version,
    site_move_to_version_preview,
    visit_book,
    visit_mark_missed,
    visit_record_done,
)
from tests.factories import SiteFactory, participant_for
from trials.models import ProtocolVersion, Trial
from trials.protocol_file import ProtocolFileError, parse_protocol
from trials.services import protocol_import

D = dt.date


def protocol(label: str, visits: list[tuple[str, int, int, int]], *, blinding: str = "open") -> str:
    """A small protocol: Day 1, one epoch, LABS, and (code, offset, before, after) visits."""
    lines = [
        "format: 1",
        "trial:",
        "  code: ADV",
        "  title: Adversarial trial",
        '  phase: "2"',
        "  sponsor: Someone",
        f"  blinding: {blinding}",
        "version:",
        f'  label: "{label}"',
        "anchors:",
        "  - code: day1",
        "    name: Day 1",
        "epochs:",
        "  - code: TRT",
        "    name: Treatment",
        "procedures:",
        "  - code: LABS",
        "    name: Labs",
        "    duration_minutes: 10",
        "visits:",
    ]
    for code, offset, before, after in visits:
        lines += [
            f"  - code: {code}",
            f"    name: Visit {code}",
            "    epoch: TRT",
            "    anchor: day1",
            f"    offset_days: {offset}",
            f"    window: {{before: {before}, after: {after}}}",
            "    duration_minutes: 30",
            "    procedures: [LABS]",
        ]
    return "\n".join(lines) + "\n"


TWO = protocol("1", [("V1", 0, 0, 2), ("V2", 28, 3, 3)])


# ---------------------------------------------------------------------------------------
# Import: every refusal located, nothing stored.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("    offset_days: 28", "\toffset_days: 28"),
            "x.yaml: (top level) (line 33): not valid YAML: found character '\\t' that cannot "
            "start any token (while scanning for the next token)",
        ),
        (
            ("    offset_days: 28\n", "    offset_days: 28\n    offset_days: 27\n"),
            "x.yaml: visits[1].offset_days (line 34): duplicate key 'offset_days' (first at "
            "line 33); a key appears once in a mapping",
        ),
        (
            ("window: {before: 0, after: 2}", "window: &w {before: 0, after: 2}"),
            "x.yaml: visits[0].window (line 26): YAML anchors (&w) are not allowed in a "
            "protocol file; write the value out where it is needed",
        ),
        (
            ("code: V2", 'code: "V\u200b2"'),
            "x.yaml: visits[1].code (line 29): expected a code (a letter, then letters, digits, "
            "'_' or '-', at most 40), got 'V\\u200b2'",
        ),
        (
            ("code: V2", 'code: "V2\u202e"'),
            "x.yaml: visits[1].code (line 29): expected a code (a letter, then letters, digits, "
            "'_' or '-', at most 40), got 'V2\\u202e'",
        ),
        (
            ("code: V2", "code: 来院"),
            "x.yaml: visits[1].code (line 29): expected a code (a letter, then letters, digits, "
            "'_' or '-', at most 40), got '来院'",
        ),
        (
            ("offset_days: 28\n", "offset_days: 28\n    repeat: {every_days: 28, count: 1}\n"),
            "x.yaml: visits[1].repeat.count (line 34): input should be greater than or equal "
            "to 2 (got 1)",
        ),
        (
            ("offset_days: 28\n", "offset_days: 28\n    repeat: {every_days: 7, count: 1000000}\n"),
            "x.yaml: visits[1].repeat.count (line 34): input should be less than or equal to "
            "1000 (got 1000000)",
        ),
        (
            ("offset_days: 28", "offset_days: 1" + "0" * 40),
            "x.yaml: visits[1].offset_days (line 33): a number of 41 characters is out of range",
        ),
        (
            ("window: {before: 3, after: 3}", "window: {before: 30, after: 3}"),
            "x.yaml: visits[1].window (line 34): window of V2 (days -2..31) overlaps the window "
            "of V1 (days 0..2); a window must be shorter than the gap between visits",
        ),
        (
            ("anchor: day1\n    offset_days: 28", "anchor: {visit: V2}\n    offset_days: 28"),
            "x.yaml: visits[1].anchor (line 32): visit anchors form a cycle: V2 -> V2",
        ),
        (
            ("procedures: [LABS]\n  - code: V2", "procedures: [LABS, labs]\n  - code: V2"),
            "x.yaml: visits[0].procedures[1] (line 28): unknown procedure 'labs'; expected one "
            "of: LABS",
        ),
    ],
    ids=[
        "tab",
        "duplicate-key",
        "yaml-anchor",
        "zero-width-code",
        "rtl-code",
        "japanese-code",
        "repeat-1",
        "repeat-1e6",
        "huge-number",
        "window-wider-than-gap",
        "self-anchor",
        "unknown-procedure-case",
    ],
)
def test_malformed_files_are_refused_where_and_store_nothing(change, message) -> None:
    old, new = change
    text = TWO.replace(old, new, 1)
    assert text != TWO
    with pytest.raises(ProtocolFileError) as refused:
        protocol_import(text=text, source="x.yaml")
    assert str(refused.value) == message
    assert (Trial.objects.count(), ProtocolVersion.objects.count()) == (0, 0)


def test_yaml_booleans_are_not_read_as_day_counts() -> None:
    text = TWO.replace("window: {before: 3, after: 3}", "window: {before: no, after: yes}")
    with pytest.raises(ProtocolFileError) as refused:
        parse_protocol(text, source="x.yaml")
    assert "visits[1].window.before (line 34)" in str(refused.value)


def test_japanese_names_import_and_codes_differing_by_case_are_distinct() -> None:
    # Design as built: codes are case-sensitive (V2 and v2 are two visits).
    text = TWO.replace("name: Visit V2", "name: 来院２\n    name_ja: 第２回来院").replace(
        "code: V2", "code: v1"
    )
    document = parse_protocol(text, source="x.yaml")
    assert [(v.code, v.name, v.name_ja) for v in document.visits] == [
        ("V1", "Visit V1", None),
        ("v1", "来院２", "第２回来院"),
    ]


# ---------------------------------------------------------------------------------------
# Engine: dates at the calendar's end, tapers at extreme weights and exact steps.


def test_a_plan_past_year_9999_is_refused_as_out_of_range() -> None:
    snapshot = ProtocolSnapshot(
        anchors=(AnchorSpec("day1", "Day 1"),),
        visits=(
            VisitSpec("V1", "V1", "TRT", AnchorRef(anchor="day1"), 0, 0, 2, 30),
            VisitSpec(
                "V2", "V2", "TRT", AnchorRef(visit="V1"), 28, 3, 3, 30,
                repeat_every_days=7, repeat_count=3,
            ),
        ),
    )  # fmt: skip
    assert plan(snapshot, ParticipantFacts({"day1": D(9999, 11, 1)})).visits[-1].window_end == (
        D(9999, 12, 16)
    )
    with pytest.raises(DateOutOfRange):
        plan(snapshot, ParticipantFacts({"day1": D(9999, 12, 1)}))


TSUKUBA_TAPER = TaperSpec(
    initial_mg_per_kg=Decimal("0.6"),
    initial_weeks=2,
    target_mg=Decimal("7.5"),
    target_week=12,
    step_mg=Decimal(1),
)


@pytest.mark.parametrize(
    ("weight", "doses"),
    [
        ("300", [180, 180, 134, 101, 75, 56, 42, 31, 23, 17, 13, 10, 7]),
        ("60", [36, 36, 31, 27, 23, 20, 17, 15, 13, 11, 9, 8, 7]),
        # Questionable (not asserted as a defect): a weight the engine is given below 1.67 kg
        # rounds the first dose to 0 tablets, and the taper is silently 0 mg/day throughout.
        ("0.5", [0] * 13),
    ],
)
def test_tsukuba_taper_at_extreme_weights(weight, doses) -> None:
    assert weekly_doses(TSUKUBA_TAPER, Decimal(weight)) == [Decimal(d) for d in doses]


def test_geometric_taper_step_that_is_exactly_a_tablet_is_not_a_tablet_low() -> None:
    spec = TaperSpec(
        initial_mg_per_kg=Decimal("0.6"),
        initial_weeks=1,
        target_mg=Decimal(3),
        target_week=4,
        step_mg=Decimal(1),
    )
    # 45 kg: 27 mg, then 27 * (1/9)^(k/4): 15.59, 9 exactly, 5.20, 3.
    assert weekly_doses(spec, Decimal(45)) == [Decimal(d) for d in (27, 15, 9, 5, 3)]


def test_linear_taper_step_that_is_exactly_a_tablet_is_not_a_tablet_low() -> None:
    spec = TaperSpec(
        initial_mg_per_kg=Decimal("0.6"),
        initial_weeks=1,
        target_mg=Decimal(0),
        target_week=9,
        step_mg=Decimal(1),
        shape="linear",
    )
    # 195 kg: 117 mg, falling by exactly 13 mg a week to 0.
    assert weekly_doses(spec, Decimal(195)) == [Decimal(117 - 13 * k) for k in range(10)]


# ---------------------------------------------------------------------------------------
# Amendments.

V1_VISITS = [("V1", 0, 0, 2), ("V2", 28, 3, 3), ("V3", 56, 3, 3), ("V4", 84, 3, 3),
             ("V5", 112, 3, 3), ("V6", 140, 3, 3)]  # fmt: skip
# v2: V3 dropped, V4 re-windowed to ±1, V5 three days later, V7 added.
V2_VISITS = [("V1", 0, 0, 2), ("V2", 28, 3, 3), ("V4", 84, 1, 1), ("V5", 115, 3, 3),
             ("V6", 140, 3, 3), ("V7", 168, 3, 3)]  # fmt: skip


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator", password="a-long-passphrase")


def enrolled(version, site, study_id):
    participant = participant_for(
        version, anchors={"day1": D(2026, 3, 2)}, site=site, study_id=study_id
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


def visit(participant, code):
    return ScheduledVisit.objects.get(participant=participant, visit_definition__code=code)


def calendar(participant):
    return list(
        ScheduledVisit.objects.filter(participant=participant)
        .order_by("target_date", "visit_definition__code")
        .values_list(
            "visit_definition__code", "status", "protocol_version__label", "target_date",
            "actual_date", "booked_date", "deviation_days",
        )
    )  # fmt: skip


@pytest.mark.django_db
def test_amendment_with_done_missed_and_booked_visits_previews_exactly_what_it_applies_once(
    coordinator,
) -> None:
    v1 = protocol_import(text=protocol("1", V1_VISITS), source="v1.yaml")
    site = SiteFactory.create(code="kiritimati", timezone="Pacific/Kiritimati")
    other = SiteFactory.create(code="pago", timezone="Pacific/Pago_Pago")
    moved = enrolled(v1, site, "K-001")
    stays = enrolled(v1, other, "P-001")
    before_other = calendar(stays)
    with time_machine.travel(dt.datetime(2026, 4, 20, 0, 0, tzinfo=dt.UTC), tick=False):
        visit_record_done(visit=visit(moved, "V1"), actual_date=D(2026, 3, 3), by=coordinator)
        visit_mark_missed(visit=visit(moved, "V2"), by=coordinator, reason="no show")
        visit_book(visit=visit(moved, "V3"), local_date=D(2026, 4, 28), local_time=dt.time(9),
                   by=coordinator)  # fmt: skip
        visit_book(visit=visit(moved, "V4"), local_date=D(2026, 5, 27), local_time=dt.time(9),
                   by=coordinator)  # fmt: skip
        assert BookingHold.objects.filter(visit=visit(moved, "V3")).count() == 0  # no resources
        v2 = protocol_import(text=protocol("2", V2_VISITS), source="v2.yaml")
        # 00:00Z on 20 April is 14:00 on 20 April at Kiritimati and 13:00 on 19 April at Pago Pago.
        assert (site_today(site), site_today(other)) == (D(2026, 4, 20), D(2026, 4, 19))
        on = site_today(site)
        preview = site_move_to_version_preview(site=site, version=v2, approved_on=on, on=on)
        applied = site_move_to_version(
            site=site, version=v2, approved_on=on, on=on, by=coordinator, reason="amendment 2"
        )
        again = participant_move_to_version(
            participant=moved, version=v2, on=on, by=coordinator, reason="amendment 2"
        )

    assert applied == preview
    assert list(preview) == ["K-001"]
    assert preview["K-001"].visits == (
        VisitChange("V3", 1, D(2026, 4, 27), (D(2026, 4, 24), D(2026, 4, 30)), None, None,
                    D(2026, 4, 28), "1", ""),
        VisitChange("V4", 1, D(2026, 5, 25), (D(2026, 5, 22), D(2026, 5, 28)), D(2026, 5, 25),
                    (D(2026, 5, 24), D(2026, 5, 26)), D(2026, 5, 27), "1", "2"),
        VisitChange("V5", 1, D(2026, 6, 22), (D(2026, 6, 19), D(2026, 6, 25)), D(2026, 6, 25),
                    (D(2026, 6, 22), D(2026, 6, 28)), None, "1", "2"),
        VisitChange("V6", 1, D(2026, 7, 20), (D(2026, 7, 17), D(2026, 7, 23)), D(2026, 7, 20),
                    (D(2026, 7, 17), D(2026, 7, 23)), None, "1", "2"),
        VisitChange("V7", 1, None, None, D(2026, 8, 17), (D(2026, 8, 14), D(2026, 8, 20)),
                    None, "", "2"),
    )  # fmt: skip
    assert [c.out_of_window for c in preview["K-001"].visits] == [False, True, False, False, False]
    assert again == CalendarDiff()  # applied twice: nothing more
    assert calendar(moved) == [
        ("V1", "done", "1", D(2026, 3, 2), D(2026, 3, 3), None, 0),
        ("V2", "missed", "1", D(2026, 3, 30), None, None, None),
        ("V3", "cancelled", "1", D(2026, 4, 27), None, D(2026, 4, 28), 0),
        ("V4", "booked", "2", D(2026, 5, 25), None, D(2026, 5, 27), 1),
        ("V5", "planned", "2", D(2026, 6, 25), None, None, None),
        ("V6", "planned", "2", D(2026, 7, 20), None, None, None),
        ("V7", "planned", "2", D(2026, 8, 17), None, None, None),
    ]
    assert calendar(stays) == before_other  # the other site stays on v1


@pytest.mark.django_db
def test_a_visit_left_before_the_move_date_stays_on_its_version_after_later_changes(
    coordinator,
) -> None:
    v1 = protocol_import(text=protocol("1", V1_VISITS), source="v1.yaml")
    participant = enrolled(v1, SiteFactory.create(), "A-001")
    moved_v2 = [("V1", 0, 0, 2), ("V2", 30, 3, 3), *V1_VISITS[2:]]
    v2 = protocol_import(text=protocol("2", moved_v2), source="v2.yaml")
    with time_machine.travel(dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.UTC), tick=False):
        diff = participant_move_to_version_preview(participant=participant, version=v2,
                                                   on=D(2026, 4, 15))  # fmt: skip
        participant_move_to_version(
            participant=participant, version=v2, on=D(2026, 4, 15), by=coordinator, reason="a2"
        )
        assert [c.visit_code for c in diff.visits] == ["V3", "V4", "V5", "V6"]  # not V2
        kept = ("V2", "planned", "1", D(2026, 3, 30), None, None, None)
        assert calendar(participant)[1] == kept
        visit_record_done(visit=visit(participant, "V1"), actual_date=D(2026, 3, 2),
                          by=coordinator)  # fmt: skip
    assert calendar(participant)[1] == kept
