"""Hypothesis fuzzes the protocol format, knowing its structure: it builds protocol documents
(anchors, epochs, procedures, visits anchored to anchors or to each other, repeats, arms,
milestones, reminders), then mutates them the way files go wrong (a wrong type, a key missing
or unknown, a number out of range, unicode anywhere, a long chain, a byte changed) and asserts
that the file either imports or is refused with a located error: never another exception,
never a half-written version.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import bounded
from tests.review_summary import record
from trials.models import ProtocolVersion, ScheduledActivity, Trial, VisitDefinition
from trials.protocol_file import MAX_FILE_BYTES, ProtocolFileError, parse_protocol
from trials.services import ProtocolImportError, protocol_import

codes = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,6}\Z")
names = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
unicode_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=40)


@st.composite
def protocol_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A protocol document as the YAML's Python value: valid in shape, often valid in full."""
    anchor_codes = draw(st.lists(codes, min_size=1, max_size=3, unique=True))
    epoch_codes = draw(st.lists(codes, min_size=1, max_size=2, unique=True))
    procedure_codes = draw(st.lists(codes, min_size=0, max_size=3, unique=True))
    arm_codes = draw(st.lists(codes, min_size=0, max_size=2, unique=True))
    visit_count = draw(st.integers(min_value=1, max_value=8))
    visit_codes = [f"V{i}" for i in range(visit_count)]
    visits = []
    for index, code in enumerate(visit_codes):
        # Anchored to an anchor, or to any visit (earlier, later, itself: cycles included).
        anchor: Any = draw(
            st.one_of(
                st.sampled_from(anchor_codes),
                st.builds(lambda v: {"visit": v}, st.sampled_from(visit_codes)),
            )
        )
        visit: dict[str, Any] = {
            "code": code,
            "name": draw(names),
            "epoch": draw(st.sampled_from(epoch_codes)),
            "anchor": anchor,
            "offset_days": draw(st.integers(min_value=-30, max_value=400)) + 60 * index,
            "window": {
                "before": draw(st.integers(min_value=0, max_value=5)),
                "after": draw(st.integers(min_value=0, max_value=5)),
            },
            "duration_minutes": draw(st.integers(min_value=1, max_value=600)),
        }
        if draw(st.booleans()):
            visit["repeat"] = {
                "every_days": draw(st.integers(min_value=7, max_value=28)),
                "count": draw(st.integers(min_value=2, max_value=6)),
            }
        carries_procedures: bool = draw(st.booleans())
        if procedure_codes and carries_procedures:
            visit["procedures"] = draw(
                st.lists(st.sampled_from(procedure_codes), max_size=3, unique=True)
            )
        visits.append(visit)
    document: dict[str, Any] = {
        "format": 1,
        "trial": {
            "code": draw(codes),
            "title": draw(names.filter(lambda s: len(s.strip()) >= 3)),
            "phase": draw(st.sampled_from(["1", "2", "3", "2/3"])),
            "sponsor": draw(names.filter(lambda s: len(s) >= 2)),
            "blinding": draw(st.sampled_from(["open", "double"])),
        },
        "version": {"label": draw(codes)},
        "anchors": [{"code": code, "name": draw(names)} for code in anchor_codes],
        "epochs": [{"code": code, "name": draw(names)} for code in epoch_codes],
        "visits": visits,
    }
    if procedure_codes:
        document["procedures"] = [
            {
                "code": code,
                "name": draw(names),
                "duration_minutes": draw(st.integers(min_value=1, max_value=120)),
            }
            for code in procedure_codes
        ]
    if arm_codes:
        document["arms"] = [{"code": code, "name": draw(names)} for code in arm_codes]
    if draw(st.booleans()):
        document["milestones"] = [
            {
                "code": "M1",
                "name": draw(names),
                "kind": draw(st.sampled_from(["date", "endpoint"])),
                "anchor": draw(st.sampled_from(anchor_codes)),
                "offset_days": draw(st.integers(min_value=0, max_value=400)),
            }
        ]
    if draw(st.booleans()):
        document["reminders"] = [
            {
                "code": "R1",
                "event": "before_visit",
                "days": draw(st.integers(min_value=0, max_value=14)),
                "at": "09:00",
                "channels": draw(
                    st.lists(st.sampled_from(["email", "sms"]), min_size=1, unique=True)
                ),
            }
        ]
    return document


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path inside a document (iteratively: documents are small, but stay safe)."""
    found: list[tuple[Any, ...]] = []
    pending = [(value, path)]
    while pending:
        current, where = pending.pop()
        found.append(where)
        if isinstance(current, dict):
            pending.extend((item, (*where, key)) for key, item in current.items())
        elif isinstance(current, list):
            pending.extend((item, (*where, index)) for index, item in enumerate(current))
    return found


wrong_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 366, 3661, 2**31, 2**63, -(2**31) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    unicode_text,
    st.text(min_size=300, max_size=12_000),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.dates(),
    st.sampled_from(["2023-02-30", "0000-01-01", "9999-12-31", "19:00", "NaN", "-.inf"]),
)


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document with 1 to 3 of the faults files have: a value replaced by a wrong one, a key
    dropped, an unknown key added."""
    document = draw(protocol_documents())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = [place for place in _places(document) if place]
        place = draw(st.sampled_from(places))
        parent: Any = document
        for part in place[:-1]:
            parent = parent[part]
        kind = draw(st.sampled_from(["replace", "drop", "extra"]))
        if kind == "replace":
            parent[place[-1]] = draw(wrong_values)
        elif kind == "drop" and isinstance(parent, dict):
            del parent[place[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["ofset_days", "wndow", "x", "名前"]))] = draw(wrong_values)
    return document


def dumped(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def assert_located(error: ProtocolFileError, source: str) -> None:
    assert error.problems
    for problem in error.problems:
        # Every problem has its line, except one about the whole file's size.
        assert problem.line is not None or problem.message.startswith("the file is "), problem
        assert problem.line is None or problem.line >= 1
    assert str(error).startswith(f"{source}: ")


def _counts() -> tuple[int, int, int, int]:
    return (
        Trial.objects.count(),
        ProtocolVersion.objects.count(),
        VisitDefinition.objects.count(),
        ScheduledActivity.objects.count(),
    )


def check_file(text: str | bytes) -> bool:
    """Parse: True when accepted; a refusal must be located; any other exception fails."""
    try:
        parse_protocol(text, source="fuzz.yaml")
    except ProtocolFileError as error:
        assert_located(error, "fuzz.yaml")
        return False
    return True


@settings(
    max_examples=bounded(1_000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(document=protocol_documents())
def test_a_generated_document_parses_or_is_refused_with_its_place(
    document: dict[str, Any],
) -> None:
    check_file(dumped(document))


@settings(
    max_examples=bounded(3_000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(document=mutated_documents())
def test_a_mutated_document_parses_or_is_refused_with_its_place(document: dict[str, Any]) -> None:
    record("bad inputs tried: protocol files")
    if not check_file(dumped(document)):
        record("bad inputs refused: protocol files")


@settings(
    max_examples=bounded(2_000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    document=protocol_documents(),
    position=st.integers(min_value=0),
    replacement=st.binary(min_size=1, max_size=4),
)
def test_a_file_with_bytes_changed_parses_or_is_refused_with_its_place(
    document: dict[str, Any], position: int, replacement: bytes
) -> None:
    data = dumped(document).encode()
    at = position % len(data)
    record("bad inputs tried: protocol files")
    if not check_file(data[:at] + replacement + data[at + len(replacement) :]):
        record("bad inputs refused: protocol files")


@settings(
    max_examples=bounded(100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    depth=st.integers(min_value=1, max_value=2_000),
    backwards=st.booleans(),
    nesting=st.integers(min_value=0, max_value=300),
)
def test_deep_chains_and_nesting_are_checked_without_recursion(
    depth: int, backwards: bool, nesting: int
) -> None:
    head = dumped(
        {
            "format": 1,
            "trial": {
                "code": "deep",
                "title": "Deep",
                "phase": "2",
                "sponsor": "Sp",
                "blinding": "open",
            },
            "version": {"label": "1"},
            "anchors": [{"code": "day1", "name": "Day 1"}],
            "epochs": [{"code": "T", "name": "T"}],
        }
    )
    visits = [
        f"- {{code: V{i}, name: V, epoch: T, anchor: {'day1' if i == 0 else f'{{visit: V{i - 1}}}'}"
        ", offset_days: 7, window: {before: 1, after: 1}, duration_minutes: 30}\n"
        for i in range(depth)
    ]
    if backwards:
        visits.reverse()
    extra = f"extra: {'[' * nesting}{']' * nesting}\n" if nesting else ""
    record("bad inputs tried: protocol files")
    if not check_file(head + "visits:\n" + "".join(visits) + extra):
        record("bad inputs refused: protocol files")


@pytest.mark.django_db
@settings(
    max_examples=bounded(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(document=st.one_of(protocol_documents(), mutated_documents()))
def test_an_import_either_stores_the_whole_version_or_nothing(document: dict[str, Any]) -> None:
    text = dumped(document)
    assert len(text.encode()) <= MAX_FILE_BYTES
    before = _counts()
    record("bad inputs tried: protocol files")
    try:
        version = protocol_import(text=text, source="fuzz.yaml")
    except ProtocolFileError as error:
        record("bad inputs refused: protocol files")
        assert_located(error, "fuzz.yaml")
        assert _counts() == before
    except ProtocolImportError:
        record("bad inputs refused: protocol files")
        assert _counts() == before
    else:
        visits = document["visits"]
        assert VisitDefinition.objects.filter(version=version).count() == len(visits)
        assert ScheduledActivity.objects.filter(visit__version=version).count() == sum(
            len(visit.get("procedures", ())) for visit in visits
        )


def test_the_alphabet_of_codes_is_the_formats() -> None:
    # The generator's codes must be valid codes, so what it refuses is what it meant to.
    assert parse_protocol(
        dumped(
            {
                "format": 1,
                "trial": {
                    "code": "a" + string.digits,
                    "title": "Tri",
                    "phase": "2",
                    "sponsor": "Sp",
                    "blinding": "open",
                },
                "version": {"label": "1"},
                "anchors": [{"code": "day1", "name": "Day 1"}],
                "epochs": [{"code": "T", "name": "T"}],
                "visits": [
                    {
                        "code": "V0",
                        "name": "V",
                        "epoch": "T",
                        "anchor": "day1",
                        "offset_days": 0,
                        "window": {"before": 0, "after": 0},
                        "duration_minutes": 30,
                    }
                ],
            }
        ),
        source="ok.yaml",
    ).trial.code == ("a0123456789")


@pytest.mark.django_db
def test_a_plain_equals_sign_is_text_not_a_crash() -> None:
    # Found by the byte-changing fuzzer: PyYAML resolves a plain "=" to its YAML 1.1 `value`
    # tag, for which it has no constructor, and the parser raised KeyError (a 500 on upload).
    from pathlib import Path

    text = Path("seeds/protocols/000_niams_vascular.yaml").read_text(encoding="utf-8")
    changed = text.replace("\n  sponsor:", "\n  sponsor: =\n  x_sponsor:", 1)
    assert changed != text
    with pytest.raises(ProtocolFileError) as refused:
        parse_protocol(changed, source="niams.yaml")
    assert [(p.path, p.message, p.line) for p in refused.value.problems] == [
        (("trial", "sponsor"), "string should have at least 2 characters (got '=')", 10),
        (("trial", "x_sponsor"), "is not a known field here", 11),
    ]
    # The plain "=" reads exactly as the quoted one.
    quoted = text.replace("\n  sponsor:", "\n  sponsor: '='\n  x_sponsor:", 1)
    with pytest.raises(ProtocolFileError) as same:
        parse_protocol(quoted, source="niams.yaml")
    assert same.value.problems == refused.value.problems
