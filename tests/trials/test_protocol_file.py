from __future__ import annotations

import pytest

from trials.protocol_file import ProtocolFileError, dump_protocol, parse_protocol

BASE = """\
format: 1
trial: {code: demo, title: Demo trial, phase: "2", sponsor: Demo sponsor, blinding: open}
version: {label: "1"}
anchors:
  - {code: day1, name: Day 1}
epochs:
  - {code: TRT, name: Treatment}
procedures:
  - {code: LABS, name: Blood tests, duration_minutes: 10}
visits:
  - code: V1
    name: Visit 1
    epoch: TRT
    anchor: day1
    offset_days: 0
    window: {before: 0, after: 2}
    duration_minutes: 60
    procedures: [LABS]
  - code: V2
    name: Visit 2
    epoch: TRT
    anchor: day1
    offset_days: 7
    window: {before: 3, after: 3}
    duration_minutes: 60
"""
V1_ANCHOR = "    anchor: day1\n    offset_days: 0"
V2_ANCHOR = "    anchor: day1\n    offset_days: 7"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ProtocolFileError) as caught:
        parse_protocol(text, source="demo.yaml")
    return str(caught.value).splitlines()


def test_parse_protocol_accepts_the_base_document() -> None:
    document = parse_protocol(BASE, source="demo.yaml")

    assert [visit.code for visit in document.visits] == ["V1", "V2"]
    assert document.visits[1].window.before == 3


def test_parse_protocol_names_a_missing_anchor_with_path_and_line() -> None:
    text = BASE.replace(V2_ANCHOR, "    offset_days: 7")

    assert errors_of(text) == [
        "demo.yaml: visits[1].anchor (line 19): is required but missing: expected an anchor "
        "code (e.g. day1) or {visit: CODE} for an earlier visit's actual date"
    ]


def test_parse_protocol_names_an_unknown_anchor() -> None:
    text = BASE.replace(V2_ANCHOR, "    anchor: day_1\n    offset_days: 7")

    assert errors_of(text) == [
        "demo.yaml: visits[1].anchor (line 22): unknown anchor 'day_1'; expected one of: day1, "
        "or {visit: CODE} for the actual date of an earlier visit"
    ]


def test_parse_protocol_refuses_a_window_longer_than_the_gap_between_visits() -> None:
    text = BASE.replace("before: 3, after: 3", "before: 5, after: 3")

    assert errors_of(text) == [
        "demo.yaml: visits[1].window (line 24): window of V2 (days 2..10) overlaps the window "
        "of V1 (days 0..2); a window must be shorter than the gap between visits"
    ]


def test_parse_protocol_refuses_windows_that_overlap_between_repeats() -> None:
    text = BASE.replace(
        "    window: {before: 3, after: 3}",
        "    window: {before: 3, after: 4}\n    repeat: {every_days: 7, count: 4}",
    )

    assert errors_of(text) == [
        "demo.yaml: visits[1].window (line 24): window of 3+4 days is not shorter than the "
        "7-day gap between repeats, so the windows of consecutive occurrences would overlap"
    ]


def test_parse_protocol_names_an_unknown_procedure() -> None:
    text = BASE.replace("procedures: [LABS]", "procedures: [LABS, CAVI]")

    assert errors_of(text) == [
        "demo.yaml: visits[0].procedures[1] (line 18): unknown procedure 'CAVI'; expected one "
        "of: LABS"
    ]


def test_parse_protocol_refuses_a_cycle_of_visit_anchors() -> None:
    text = BASE.replace(V1_ANCHOR, "    anchor: {visit: V2}\n    offset_days: -7").replace(
        V2_ANCHOR, "    anchor: {visit: V1}\n    offset_days: 7"
    )

    assert errors_of(text) == [
        "demo.yaml: visits[0].anchor (line 14): visit anchors form a cycle: V1 -> V2 -> V1"
    ]


def test_parse_protocol_refuses_a_cycle_of_participant_anchors() -> None:
    text = BASE.replace(
        "  - {code: day1, name: Day 1}",
        "  - {code: day1, name: Day 1, relative_to: psl, default_days: 1}\n"
        "  - {code: psl, name: PSL, relative_to: day1, default_days: 1}",
    )

    assert errors_of(text) == [
        "demo.yaml: anchors[0].relative_to (line 5): anchors form a cycle: day1 -> psl -> day1"
    ]


def test_parse_protocol_reports_a_misspelt_field_and_what_it_left_missing() -> None:
    text = BASE.replace("offset_days: 7", "ofset_days: 7")

    assert errors_of(text) == [
        "demo.yaml: visits[1].offset_days (line 19): is required but missing: expected whole "
        "days from the anchor (weeks x 7), negative before it",
        "demo.yaml: visits[1].ofset_days (line 23): is not a known field here",
    ]


def test_parse_protocol_reports_a_wrong_type_with_the_value_given() -> None:
    text = BASE.replace("offset_days: 7", "offset_days: seven")

    assert errors_of(text) == [
        "demo.yaml: visits[1].offset_days (line 23): input should be a valid integer (got 'seven')"
    ]


@pytest.mark.parametrize("written", ["yes", "no", "true", "off", "'7'", "7.0"])
def test_parse_protocol_takes_a_whole_number_only_as_a_number(written: str) -> None:
    # YAML reads yes/no/true/off as booleans, which pydantic would take as 1 or 0 days.
    text = BASE.replace("offset_days: 7", f"offset_days: {written}")

    [error] = errors_of(text)
    assert error.startswith(
        "demo.yaml: visits[1].offset_days (line 23): input should be a valid integer (got "
    )


def test_parse_protocol_reports_broken_yaml_with_its_line() -> None:
    text = BASE.replace("name: Visit 2", "name: [Visit 2")

    assert errors_of(text) == [
        "demo.yaml: (top level) (line 21): not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence)"
    ]


def test_parse_protocol_refuses_an_occurrence_the_visit_does_not_have() -> None:
    text = BASE.replace(V2_ANCHOR, "    anchor: {visit: V1, occurrence: 3}\n    offset_days: 7")

    assert errors_of(text) == [
        "demo.yaml: visits[1].anchor.occurrence (line 22): visit 'V1' happens 1 time(s); there "
        "is no occurrence 3"
    ]


def test_parse_protocol_reports_every_problem_at_once() -> None:
    text = BASE.replace("procedures: [LABS]", "procedures: [CAVI]").replace(
        "epoch: TRT\n    anchor: day1\n    offset_days: 7",
        "epoch: FU\n    anchor: day1\n    offset_days: 7",
    )

    assert errors_of(text) == [
        "demo.yaml: visits[0].procedures[0] (line 18): unknown procedure 'CAVI'; expected one "
        "of: LABS",
        "demo.yaml: visits[1].epoch (line 21): unknown epoch 'FU'; expected one of: TRT",
    ]


def test_dump_protocol_round_trips_to_an_equal_document() -> None:
    document = parse_protocol(BASE, source="demo.yaml")

    assert parse_protocol(dump_protocol(document), source="dumped.yaml") == document


def test_parse_protocol_finds_an_overlap_that_only_one_arm_has() -> None:
    # Found in review: the nearest earlier visit of *some* shared arm hid an overlap in
    # another arm. A (arm Y) overlaps C (both arms) for arm-Y participants, with B (arm X)
    # in between.
    text = (
        BASE.replace(
            "epochs:", "arms:\n  - {code: X, name: Arm X}\n  - {code: Y, name: Arm Y}\nepochs:"
        )
        .replace(
            "    window: {before: 0, after: 2}", "    window: {before: 0, after: 10}\n    arms: [Y]"
        )
        .replace(
            "    window: {before: 3, after: 3}\n    duration_minutes: 60\n",
            "    window: {before: 0, after: 0}\n    duration_minutes: 60\n    arms: [X]\n"
            "  - code: V3\n    name: Visit 3\n    epoch: TRT\n    anchor: day1\n"
            "    offset_days: 8\n"
            "    window: {before: 0, after: 0}\n    duration_minutes: 60\n",
        )
        .replace("offset_days: 7", "offset_days: 5")
    )

    assert errors_of(text) == [
        "demo.yaml: visits[2].window (line 36): window of V3 (days 8..8) overlaps the window "
        "of V1 (days 0..10); a window must be shorter than the gap between visits"
    ]


BLINDED_TWO_ARMS = BASE.replace("blinding: open", "blinding: double").replace(
    "epochs:", "arms:\n  - {code: ACT, name: Active}\n  - {code: PBO, name: Placebo}\nepochs:"
)


@pytest.mark.parametrize("blinding", ["single", "double"])
def test_parse_protocol_refuses_a_visit_of_one_arm_in_a_blinded_trial(blinding: str) -> None:
    text = BLINDED_TWO_ARMS.replace("blinding: double", f"blinding: {blinding}").replace(
        "    window: {before: 3, after: 3}\n",
        "    window: {before: 3, after: 3}\n    arms: [ACT]\n",
    )

    assert errors_of(text) == [
        f"demo.yaml: visits[1].arms (line 28): visit V2 is limited to arm(s) ACT in a "
        f"{blinding}-blind trial, which would show the arm in every calendar; give it to every "
        "arm or make the trial open"
    ]


def test_parse_protocol_accepts_arm_limits_in_an_open_trial_and_every_arm_when_blinded() -> None:
    open_trial = BLINDED_TWO_ARMS.replace("blinding: double", "blinding: open").replace(
        "    window: {before: 3, after: 3}\n",
        "    window: {before: 3, after: 3}\n    arms: [ACT]\n",
    )
    every_arm = BLINDED_TWO_ARMS.replace(
        "    window: {before: 3, after: 3}\n",
        "    window: {before: 3, after: 3}\n    arms: [ACT, PBO]\n",
    )

    assert parse_protocol(open_trial, source="demo.yaml").visits[1].arms == ("ACT",)
    assert parse_protocol(every_arm, source="demo.yaml").visits[1].arms == ("ACT", "PBO")
