"""Protocol files that cannot hurt: each malformed file is refused with the file, the path in
the document and the line, nothing is stored, and no file costs more than its size.

Timings are measured in bench/protocol_files.py, not asserted here.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import models

from tests.review_summary import record
from tests.trials.test_protocol_file import BASE
from trials import protocol_limits
from trials.models import (
    Anchor,
    Arm,
    EligibilityCriterion,
    Epoch,
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    ReminderRule,
    ScheduledActivity,
    Trial,
    TrialRegistration,
    VisitDefinition,
)
from trials.protocol_file import (
    MAX_ANCHOR_CHAIN,
    MAX_FILE_BYTES,
    MAX_VISITS,
    ProtocolFileError,
    parse_protocol,
)
from trials.services import protocol_import

IMPORTED_MODELS = (
    Trial,
    TrialRegistration,
    ProtocolVersion,
    Anchor,
    Arm,
    Epoch,
    ProcedureDefinition,
    VisitDefinition,
    ScheduledActivity,
    MilestoneRule,
    EligibilityCriterion,
    ReminderRule,
)
HEAD = BASE.split("visits:\n")[0] + "visits:\n"


def chained(count: int, *, backwards: bool = False, every: int = 7) -> str:
    """`count` visits, each anchored to the one before it (the first to day1), `every` days
    after it."""
    items = [
        f"  - {{code: V{i}, name: Visit {i}, epoch: TRT, "
        f"anchor: {'day1' if i == 0 else f'{{visit: V{i - 1}}}'}, offset_days: {every}, "
        "window: {before: 1, after: 1}, duration_minutes: 30}\n"
        for i in range(count)
    ]
    if backwards:
        items.reverse()
    return HEAD + "".join(items)


def alias_bomb() -> str:
    # The "billion laughs": nine levels of ten aliases each, 10^9 strings once expanded.
    lines = ['lol0: &l0 "lol"']
    lines += [f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 10)]
    return BASE.replace("trial: {code: demo,", "\n".join(lines) + "\ntrial: {code: demo,").replace(
        "title: Demo trial", "title: Demo trial"
    )


def refusal(text: str | bytes, source: str = "demo.yaml") -> list[str]:
    """The lines of the refusal of importing `text`; asserts nothing was stored."""
    record("bad inputs tried: protocol files")
    with pytest.raises(ProtocolFileError) as caught:
        protocol_import(text=text, source=source)
    record("bad inputs refused: protocol files")
    assert (Trial.objects.count(), ProtocolVersion.objects.count()) == (0, 0)
    assert VisitDefinition.objects.count() == 0
    return str(caught.value).splitlines()


# One case per fault the review found, and the others the reading refuses. Each: the file's
# text (or bytes) and the exact refusal.
CASES: dict[str, tuple[str | bytes, list[str]]] = {
    "alias bomb": (
        alias_bomb(),
        [
            "demo.yaml: lol0 (line 2): YAML anchors (&l0) are not allowed in a protocol file; "
            "write the value out where it is needed"
        ],
    ),
    "alias of a value": (
        BASE.replace("title: Demo trial", "title: Demo trial, sponsor2: *x"),
        [
            "demo.yaml: trial.sponsor2 (line 2): YAML aliases (*x) are not allowed in a "
            "protocol file; write the value out where it is needed"
        ],
    ),
    "duplicate key": (
        BASE.replace(
            "    window: {before: 3, after: 3}",
            "    window: {before: 3, after: 3}\n    window: {before: 1, after: 1}",
        ),
        [
            "demo.yaml: visits[1].window (line 25): duplicate key 'window' (first at line 24); "
            "a key appears once in a mapping"
        ],
    ),
    "duplicate key in a flow mapping": (
        BASE.replace("{before: 0, after: 2}", "{before: 0, after: 2, before: 1}"),
        [
            "demo.yaml: visits[0].window.before (line 16): duplicate key 'before' (first at "
            "line 16); a key appears once in a mapping"
        ],
    ),
    "latin-1": (
        BASE.replace("Visit 2", "Visité 2").encode("latin-1"),
        [
            "demo.yaml: (top level) (line 20): not UTF-8: byte 0xE9 at column 16 is not UTF-8 "
            "text (a Latin-1 or Windows-1252 file?); protocol files are UTF-8: save it as UTF-8"
        ],
    ),
    "utf-16 with a byte-order mark": (
        BASE.encode("utf-16"),
        [
            "demo.yaml: (top level) (line 1): the file is UTF-16 (it starts with a UTF-16 "
            "byte-order mark); protocol files are UTF-8: save it as UTF-8"
        ],
    ),
    "utf-16 without a byte-order mark": (
        BASE.encode("utf-16-le"),
        [
            "demo.yaml: (top level) (line 1): the file contains NUL bytes: it is UTF-16 or "
            "UTF-32 without a byte-order mark, or not a text file; protocol files are UTF-8: "
            "save it as UTF-8"
        ],
    ),
    "utf-32": (
        BASE.encode("utf-32"),
        [
            "demo.yaml: (top level) (line 1): the file is UTF-32 (it starts with a UTF-32 "
            "byte-order mark); protocol files are UTF-8: save it as UTF-8"
        ],
    ),
    "impossible date": (
        BASE.replace('version: {label: "1"}', 'version: {label: "1", date: 2023-02-30}'),
        [
            "demo.yaml: version.date (line 3): '2023-02-30' is not a date that exists "
            "(expected YYYY-MM-DD)"
        ],
    ),
    "year 0": (
        BASE.replace('version: {label: "1"}', 'version: {label: "1", date: 0000-01-01}'),
        [
            "demo.yaml: version.date (line 3): '0000-01-01' is not a date that exists "
            "(expected YYYY-MM-DD)"
        ],
    ),
    "year 1": (
        BASE.replace('version: {label: "1"}', 'version: {label: "1", date: 0001-01-01}'),
        [
            "demo.yaml: version.date (line 3): input should be greater than or equal to "
            "1900-01-01 (got 0001-01-01)"
        ],
    ),
    "impossible date in quotes": (
        BASE.replace('version: {label: "1"}', 'version: {label: "1", date: "2023-02-30"}'),
        [
            "demo.yaml: version.date (line 3): input should be a valid date or datetime, day "
            "value is outside expected range (got '2023-02-30')"
        ],
    ),
    "number past the column's range": (
        BASE.replace(
            "  - {code: day1, name: Day 1}",
            "  - {code: day1, name: Day 1}\n"
            "  - {code: psl, name: PSL, relative_to: day1, min_days: 3000000000}",
        ),
        [
            "demo.yaml: anchors[1].min_days (line 6): input should be less than or equal to "
            "3660 (got 3000000000)"
        ],
    ),
    "a number of 5,000 digits": (
        BASE.replace("offset_days: 7", "offset_days: " + "9" * 5000),
        [
            "demo.yaml: visits[1].offset_days (line 23): a number of 5,000 characters is out "
            "of range"
        ],
    ),
    "the same procedure twice in a visit": (
        BASE.replace("procedures: [LABS]", "procedures: [LABS, LABS]"),
        [
            "demo.yaml: visits[0].procedures[1] (line 18): procedure 'LABS' is already listed "
            "for visit V1 (at procedures[0]); list it once, with the occurrences it is done at"
        ],
    ),
    "a 20,000-character description": (
        BASE + "arms:\n  - {code: A, name: A, description: '" + "x" * 20_000 + "'}\n",
        [
            "demo.yaml: arms[0].description (line 27): string should have at most 10000 "
            f"characters (got {'x' * 60!r}… (20,000 characters))"
        ],
    ),
    "a file over the size limit (a 50 MB description)": (
        BASE + "arms:\n  - {code: A, name: A, description: '" + "x" * 50_000_000 + "'}\n",
        [
            "demo.yaml: (top level): the file is 50,000,631 bytes; a protocol file is at most "
            "4,194,304 bytes"
        ],
    ),
    "nesting 2,000 deep": (
        BASE + "extra: " + "[" * 2000 + "]" * 2000 + "\n",
        [
            "demo.yaml: extra[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0] (line 26): nested "
            "more than 16 levels deep; a protocol needs at most 6"
        ],
    ),
    "a merge key": (
        BASE.replace(
            "    window: {before: 3, after: 3}", "    <<: {window: {before: 3, after: 3}}"
        ),
        [
            "demo.yaml: visits[1].<< (line 24): YAML merge keys (<<) are not allowed in a "
            "protocol file; write the keys out"
        ],
    ),
    "two documents": (
        BASE + "---\nformat: 1\n",
        [
            "demo.yaml: (top level) (line 26): a protocol file is one YAML document; found a "
            "second one"
        ],
    ),
    "a python object tag": (
        BASE.replace("sponsor: Demo sponsor", "sponsor: !!python/object:os.system echo"),
        [
            "demo.yaml: trial.sponsor (line 2): YAML tags (tag:yaml.org,2002:python/object:os."
            "syst…) are not used in protocol files; write the plain value"
        ],
    ),
    "a list as a key": (
        BASE.replace("title: Demo trial", "[a, b]: Demo trial"),
        ["demo.yaml: trial (line 2): a key is a single value (a name), not a list or mapping"],
    ),
    "a list of 10,001 conditions": (
        BASE.replace("blinding: open}", "blinding: open, conditions: [" + "x, " * 10_001 + "]}"),
        ["demo.yaml: trial.conditions[10000] (line 2): a list here has more than 10,000 items"],
    ),
    "a mapping of 240,000 keys": (
        BASE + "".join(f"k{i}: 1\n" for i in range(240_000)),
        [
            "demo.yaml: k93 (line 119): a mapping here has more than 100 keys; the format's "
            "largest (a visit) has 14"
        ],
    ),
    "visits 150 years from their anchor": (
        BASE.replace(
            "offset_days: 7", "offset_days: 3650\n    repeat: {every_days: 366, count: 200}"
        ),
        [
            "demo.yaml: visits[1].offset_days (line 23): V2 occurrence 92 falls 36,956 days "
            "from day1; a protocol's visits lie within 36,600 days (100 years) of their anchor"
        ],
    ),
    "the same registration twice": (
        BASE.replace(
            "blinding: open}",
            "blinding: open,\n  registrations: [{registry: NCT, identifier: NCT01},"
            " {registry: NCT, identifier: NCT01}]}",
        ),
        [
            "demo.yaml: trial.registrations[1] (line 3): NCT NCT01 is already listed (at "
            "trial.registrations[0])"
        ],
    ),
    "a NUL escape in a quoted string": (
        BASE.replace("name: Visit 2", 'name: "Visit \\0 2"'),
        [
            "demo.yaml: visits[1].name (line 20): a NUL character (\\0) is not allowed in a "
            "protocol file; remove it"
        ],
    ),
    "an escape that names no character": (
        BASE.replace("name: Visit 2", 'name: "Visit \\U99999999 2"'),
        [
            "demo.yaml: (top level) (line 20): not valid YAML: found invalid Unicode character "
            "escape code (while parsing a quoted scalar)"
        ],
    ),
    "a control character": (
        BASE.replace("Visit 2", "Visit \x07 2"),
        [
            "demo.yaml: (top level) (line 20): not valid YAML: the character U+0007 is not "
            "allowed in YAML text (a control character)"
        ],
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_malformed_file_is_refused_with_file_path_and_line_and_stores_nothing(case: str) -> None:
    text, expected = CASES[case]

    assert refusal(text) == expected


@pytest.mark.django_db
def test_a_registry_number_another_trial_has_is_refused_at_its_line() -> None:
    registered = BASE.replace(
        "blinding: open}",
        "blinding: open,\n  registrations: [{registry: NCT, identifier: NCT0001}]}",
    )
    protocol_import(text=registered, source="first.yaml")
    other = registered.replace("code: demo", "code: other")
    record("bad inputs tried: protocol files")

    with pytest.raises(ProtocolFileError) as caught:
        protocol_import(text=other, source="other.yaml")

    record("bad inputs refused: protocol files")
    assert str(caught.value) == (
        "other.yaml: trial.registrations[0].identifier (line 3): NCT NCT0001 is the "
        "registration of trial demo; a registry number belongs to one trial"
    )
    assert list(Trial.objects.values_list("code", flat=True)) == ["demo"]
    assert ProtocolVersion.objects.count() == 1


@pytest.mark.django_db
def test_a_long_file_path_is_stored_by_its_end() -> None:
    source = "/very/" + "long/" * 80 + "protocol.yaml"

    version = protocol_import(text=BASE, source=source)

    assert len(source) == 419
    assert version.source_name == "…" + source[-199:]
    assert len(version.source_name) == 200


@pytest.mark.django_db
def test_a_utf8_byte_order_mark_is_read_as_utf8() -> None:
    version = protocol_import(text=b"\xef\xbb\xbf" + BASE.encode(), source="bom.yaml")

    assert version.trial.title == "Demo trial"


@pytest.mark.django_db
def test_a_10000_deep_chain_listed_backwards_is_imported_with_each_visit_after_its_anchor() -> None:
    # Every visit a file may have in one chain (9,999 deep), each listed before the visit it
    # is counted from; 3 days apart, so the last lies 30,000 days out, within MAX_SPAN_DAYS.
    assert MAX_ANCHOR_CHAIN >= MAX_VISITS - 1
    version = protocol_import(
        text=chained(MAX_VISITS, backwards=True, every=3), source="chain.yaml"
    )

    stored = VisitDefinition.objects.filter(version=version)
    last = stored.select_related("anchor_visit").get(code="V9999")
    assert last.anchor_visit is not None
    assert last.anchor_visit.code == "V9998"
    assert last.order == 0
    assert stored.count() == 10_000
    assert stored.filter(anchor_visit__isnull=True).values_list("code", flat=True).get() == "V0"


@pytest.mark.django_db
def test_import_protocol_command_refuses_a_latin1_file_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(BASE.replace("Visit 2", "Visité 2").encode("latin-1"))
    stderr = io.StringIO()
    record("bad inputs tried: protocol files")

    with pytest.raises(CommandError):
        call_command("import_protocol", str(bad), stderr=stderr)

    record("bad inputs refused: protocol files")
    assert stderr.getvalue().splitlines() == [
        f"{bad}: (top level) (line 20): not UTF-8: byte 0xE9 at column 16 is not UTF-8 text "
        "(a Latin-1 or Windows-1252 file?); protocol files are UTF-8: save it as UTF-8"
    ]
    assert Trial.objects.count() == 0


@pytest.mark.django_db
def test_import_protocol_command_reads_no_more_of_a_huge_file_than_the_limit(
    tmp_path: Path,
) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as file:
        file.write(BASE.encode())
        file.seek(200 * 1024 * 1024)  # a sparse 200 MB file: nothing of it is read past 4 MB
        file.write(b"\n")
    stderr = io.StringIO()

    with pytest.raises(CommandError):
        call_command("import_protocol", str(huge), stderr=stderr)

    assert stderr.getvalue().splitlines() == [
        f"{huge}: (top level): the file is {MAX_FILE_BYTES + 1:,} bytes; a protocol file is at "
        f"most {MAX_FILE_BYTES:,} bytes"
    ]


# ----------------------------------------------------------------------------------------
# The checker mirrors the database: every field and constraint of what the import writes.


def _stored_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return [
        field
        for field in model._meta.concrete_fields
        if not field.primary_key and not field.is_relation
    ]


def test_the_checker_knows_every_field_the_import_writes() -> None:
    unknown = [
        f"{model.__name__}.{field.name}"
        for model in IMPORTED_MODELS
        for field in _stored_fields(model)
        if field.name not in protocol_limits.STORED[model]
        and field.name not in protocol_limits.SET_BY_IMPORT[model]
    ]

    assert unknown == []
    assert set(protocol_limits.STORED) == set(IMPORTED_MODELS)


def test_the_checker_knows_every_constraint_the_import_meets() -> None:
    constraints = {
        constraint.name for model in IMPORTED_MODELS for constraint in model._meta.constraints
    }
    unique_fields = {
        (model, field.name)
        for model in IMPORTED_MODELS
        for field in _stored_fields(model)
        if field.unique
    }

    assert constraints == set(protocol_limits.CONSTRAINTS)
    assert unique_fields == set(protocol_limits.UNIQUE_FIELDS)


def test_each_text_column_refuses_one_character_more_than_it_holds() -> None:
    checked = 0
    for model, fields in protocol_limits.STORED.items():
        for name in fields:
            field = model._meta.get_field(name)
            assert isinstance(field, models.Field)
            if field.get_internal_type() not in {"CharField", "SlugField"} or field.choices:
                continue
            limit = field.max_length
            assert limit is not None
            assert protocol_limits._problem(field, "x" * limit) is None
            assert protocol_limits._problem(field, "x" * (limit + 1)) == (
                f"at most {limit} characters are stored here (got {limit + 1:,})"
            ), f"{model.__name__}.{name}"
            checked += 1
    assert checked == 32


def test_each_integer_column_refuses_a_number_past_its_range() -> None:
    checked = 0
    for model, fields in protocol_limits.STORED.items():
        for name in fields:
            field = model._meta.get_field(name)
            assert isinstance(field, models.Field)
            if not isinstance(field, models.IntegerField):
                continue
            low, high = protocol_limits._integer_range(field)
            assert (low, high) in {(-2147483648, 2147483647), (0, 2147483647)}
            assert low is not None and high is not None
            assert protocol_limits._problem(field, high) is None
            assert protocol_limits._problem(field, high + 1) == (
                f"expected a whole number from {low:,} to {high:,} (got {high + 1:,})"
            )
            checked += 1
    assert checked == 16


def test_a_decimal_past_its_column_is_refused_at_its_place() -> None:
    document = parse_protocol(
        BASE + "eligibility:\n  - {code: AGE, kind: inclusion, text: Adults, "
        "check: {attribute: age_years, min: 18}}\n",
        source="demo.yaml",
    )
    criterion = document.eligibility[0]
    assert criterion.check is not None
    wide = criterion.check.model_copy(update={"min": Decimal("1234567.5"), "max": Decimal("1.005")})
    document = document.model_copy(
        update={"eligibility": (criterion.model_copy(update={"check": wide}),)}
    )

    assert protocol_limits.database_fit(document) == [
        (
            ("eligibility", 0, "check", "min"),
            "ensure that there are no more than 6 digits before the decimal point",
        ),
        (("eligibility", 0, "check", "max"), "ensure that there are no more than 2 decimal places"),
    ]


def test_a_name_longer_than_its_column_is_refused_at_its_place() -> None:
    document = parse_protocol(BASE, source="demo.yaml")
    epoch = document.epochs[0].model_copy(update={"name": "E" * 121})
    document = document.model_copy(update={"epochs": (epoch,)})

    assert protocol_limits.database_fit(document) == [
        (("epochs", 0, "name"), "at most 120 characters are stored here (got 121)")
    ]


def test_a_10000_deep_chain_listed_backwards_is_planned_with_exact_dates() -> None:
    # The planner orders the visits topologically once per plan: no recursion, however deep
    # the chain, even called from deep inside a request. No database: the parsed document.
    import datetime as dt
    import sys

    from scheduler.engine import ParticipantFacts, plan
    from scheduler.snapshot import snapshot_from_document

    document = parse_protocol(chained(MAX_VISITS, backwards=True, every=3), source="chain.yaml")
    facts = ParticipantFacts(anchors={"day1": dt.date(2026, 1, 5)})

    snapshot = snapshot_from_document(document)

    def at_depth(frames: int) -> Any:
        # As if called from a request: Django, middleware and a view take ~150 frames.
        return plan(snapshot, facts) if frames == 0 else at_depth(frames - 1)

    calendar = at_depth(250)

    assert sys.getrecursionlimit() == 1000
    assert len(calendar.visits) == 10_000
    first, fifth_thousandth, last = (calendar.visits[i] for i in (0, 4_999, 9_999))
    assert (first.visit_code, first.target) == ("V0", dt.date(2026, 1, 8))
    assert (fifth_thousandth.visit_code, fifth_thousandth.target) == ("V4999", dt.date(2067, 1, 30))
    assert (last.visit_code, last.target) == ("V9999", dt.date(2108, 2, 25))
    assert (last.window_start, last.window_end) == (dt.date(2108, 2, 24), dt.date(2108, 2, 26))
    assert not last.estimated


def test_a_chain_past_the_limit_is_refused_at_its_deepest_visit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No file of at most MAX_VISITS visits reaches MAX_ANCHOR_CHAIN; the check still guards a
    # lower limit (or a higher MAX_VISITS), with its place and line.
    monkeypatch.setattr("trials.protocol_file.MAX_ANCHOR_CHAIN", 250)

    with pytest.raises(ProtocolFileError) as caught:
        parse_protocol(chained(1_200, backwards=True), source="demo.yaml")

    assert str(caught.value).splitlines() == [
        "demo.yaml: visits[0].anchor (line 11): visit V1199 is anchored through a chain of "
        "1,199 visits (the longest chain has 1,199); a chain of visits anchored to earlier "
        "visits is at most 250 long: anchor later visits to a participant anchor, or use repeat"
    ]
