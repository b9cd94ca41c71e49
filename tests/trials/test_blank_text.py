"""Text a person reads in a protocol file (a name, a title, a label, a criterion) must have
something to read: only spaces (the ideographic space too) or invisible format characters
(zero-width spaces and joiners, bidi marks) would name a visit with a blank label in every
calendar, invite and list. Each is refused at its place; nothing is stored."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import seed_path
from trials.models import ProcedureDefinition, ProtocolVersion, Trial, VisitDefinition
from trials.protocol_file import ProtocolFileError, parse_protocol
from trials.services import protocol_import

TSUKUBA = seed_path("001").read_text(encoding="utf-8")
NIAMS = seed_path("000").read_text(encoding="utf-8")
READ = "expected text to read, not only spaces or invisible characters"
OPTIONAL = READ + "; leave the field out when there is none"
# Three characters each: past the shortest length any of these fields asks (a title's 3).
BLANKS = {
    "spaces": "'   '",
    "zero-width spaces": '"\\u200b\\u200b\\u200b"',
    "ideographic spaces": '"\\u3000\\u3000\\u3000"',
    "bidi marks and a word joiner": '"\\u200e\\u200f\\u2060"',
    "byte order marks": '"\\ufeff\\ufeff\\ufeff"',
}
# (seed, the line as the seed writes it, the path it is refused at, the message)
PLACES = [
    (TSUKUBA, "  sponsor: University of Tsukuba Hospital", "trial.sponsor", READ),
    (TSUKUBA, "  conditions: [Systemic lupus erythematosus]", "trial.conditions[0]", READ),
    (TSUKUBA, '  label: "1.0"', "version.label", READ),
    (TSUKUBA, "    name: Prednisolone (PSL) start", "anchors[0].name", READ),
    (TSUKUBA, "    name: Treatment period", "epochs[0].name", READ),
    (TSUKUBA, "    name: Anifrolumab 300 mg infusion (IV)", "procedures[0].name", READ),
    (TSUKUBA, "    resource: Infusion chair", "procedures[0].resource", OPTIONAL),
    (TSUKUBA, "    name: Anifrolumab infusion visit", "visits[0].name", READ),
    (TSUKUBA, "    name_ja: アニフロルマブ点滴の来院", "visits[0].name_ja", OPTIONAL),
    (TSUKUBA, "      drug: prednisolone", "milestones[0].taper.drug", READ),
    (
        TSUKUBA,
        "    text: SLEDAI-2K score of 4 or higher, indicating active disease.",
        "eligibility[3].text",
        READ,
    ),
    (NIAMS, "    name: Anifrolumab", "arms[0].name", READ),
]


@pytest.mark.parametrize("blank", BLANKS.values(), ids=BLANKS.keys())
@pytest.mark.parametrize(
    ("seed", "line", "path", "message"), PLACES, ids=[place[2] for place in PLACES]
)
def test_a_text_with_nothing_to_read_is_refused_at_its_place(
    seed: str, line: str, path: str, message: str, blank: str
) -> None:
    with pytest.raises(ProtocolFileError) as caught:
        parse_protocol(blanked(seed, line, blank), source="blank.yaml")

    problems = str(caught.value).splitlines()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"blank.yaml: {path} (line ")
    assert f"): {message} (got " in problems[0]


@pytest.mark.django_db
def test_importing_a_file_with_a_blank_name_stores_nothing() -> None:
    before = (Trial.objects.count(), ProtocolVersion.objects.count())
    text = blanked(TSUKUBA, "    name: Anifrolumab infusion visit", BLANKS["zero-width spaces"])

    with pytest.raises(ProtocolFileError, match=r"visits\[0\]\.name \(line \d+\): expected text"):
        protocol_import(text=text, source="blank.yaml")

    assert (Trial.objects.count(), ProtocolVersion.objects.count()) == before


def blanked(seed: str, line: str, blank: str) -> str:
    """`seed` with `line`'s value replaced by `blank` (in a list for `conditions`)."""
    assert seed.count(line + "\n") == 1, line
    key = line.split(":")[0]
    value = f"[{blank}]" if "conditions" in key else blank
    return seed.replace(line + "\n", f"{key}: {value}\n")


@pytest.mark.parametrize(
    "name",
    [
        '"Ani\\u200dfrolumab infusion visit"',  # a joiner inside a word: still readable
        '"\\u200fزيارة التسريب"',  # a right-to-left mark before Arabic text
        '"\\u3000点滴の来院"',
        '"  V1  "',
    ],
)
@pytest.mark.django_db
def test_a_text_with_something_to_read_is_taken_as_written(name: str) -> None:
    text = TSUKUBA.replace("    name: Anifrolumab infusion visit\n", f"    name: {name}\n")

    version = protocol_import(text=text, source="readable.yaml")

    assert (
        VisitDefinition.objects.get(version=version, code="INF").name
        == yaml.safe_load(f"x: {name}")["x"]
    )


@pytest.mark.django_db
def test_an_empty_resource_still_means_none() -> None:
    text = TSUKUBA.replace("    resource: Infusion chair\n", '    resource: ""\n')

    version = protocol_import(text=text, source="no-resource.yaml")

    assert ProcedureDefinition.objects.get(version=version, code="INFUSION").resource == ""
