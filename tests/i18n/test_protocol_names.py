"""Protocol-defined names in Japanese: the file's optional `name_ja` (and `title_ja`,
`preparation_ja`) beside the English, validated where it stands, stored, exported again, and
shown to whoever reads Japanese; the English name otherwise."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import translation

from scheduler.calendars.events import participant_visit_event, visit_name
from scheduler.calendars.imip import invite_message
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll
from tests.conftest import seed_path
from tests.factories import SiteFactory, participant_for
from trials.models import ProcedureDefinition, VisitDefinition, localized_name
from trials.protocol_file import ProtocolFileError, parse_protocol
from trials.services import protocol_export, protocol_import

TSUKUBA_INFUSION_JA = "アニフロルマブ点滴の来院"


@pytest.fixture
def tsukuba(db):
    return SiteFactory.create(
        code="tsukuba",
        name="筑波大学附属病院",
        timezone="Asia/Tokyo",
        phone="029-853-3186",
        email="visits@tsukuba.example",
    )


def enrolled(version, site, language: str, study_id: str):
    participant = participant_for(
        version,
        anchors={"psl_start": dt.date(2026, 3, 2), "day1": dt.date(2026, 3, 16)},
        weight_kg=Decimal(60),
        site=site,
        study_id=study_id,
        language=language,
        email=f"{study_id}@example.jp",
    )
    participant_enroll(participant=participant, on=dt.date(2026, 3, 1))
    return participant


def first_infusion(participant) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("participant__site", "visit_definition").get(
        participant=participant, visit_definition__code="INF", occurrence=1
    )


def test_a_japanese_reader_gets_the_japanese_visit_name_in_invite_and_feed(
    import_seed, tsukuba
) -> None:
    version = import_seed("001")
    visit = first_infusion(enrolled(version, tsukuba, "ja", "TSU-001"))

    message = invite_message(visit, method="REQUEST")
    with translation.override("ja"):
        event = participant_visit_event(visit)

    assert message is not None
    assert message.subject == f"予約待ち: {TSUKUBA_INFUSION_JA}（2026年3月13日(金)～19日(木)）"
    assert event.summary == f"予約待ち: {TSUKUBA_INFUSION_JA}"


def test_an_english_reader_of_the_same_protocol_gets_the_english_name(import_seed, tsukuba) -> None:
    version = import_seed("001")
    visit = first_infusion(enrolled(version, tsukuba, "en", "TSU-002"))

    message = invite_message(visit, method="REQUEST")

    assert message is not None
    assert message.subject == (
        "To book: Anifrolumab infusion visit, Fri, Mar 13\u2009–\u2009Thu, Mar 19, 2026"
    )


def test_without_a_japanese_name_in_the_file_a_japanese_reader_gets_the_english_one(
    import_seed,
) -> None:
    version = import_seed("000")  # NIAMS: no name_ja anywhere
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 2, 2)},
        language="ja",
        email="p@example.jp",
        study_id="NIH-JA",
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    visit = ScheduledVisit.objects.select_related("participant__site", "visit_definition").get(
        participant=participant, visit_definition__code="V2"
    )

    with translation.override("ja"):
        event = participant_visit_event(visit)

    assert visit.visit_definition is not None
    assert event.summary == f"予約待ち: {visit.visit_definition.name}"


def test_preparation_text_follows_the_reader(import_seed) -> None:
    text = seed_path("000").read_text(encoding="utf-8")
    document = parse_protocol(text, source="000")
    procedure = next(p for p in document.procedures if p.preparation)
    version = protocol_import(text=text, source="000")
    stored = ProcedureDefinition.objects.get(version=version, code=procedure.code)
    stored.name_ja, stored.preparation_ja = "検査", "前日の夜から絶食してください。"

    with translation.override("ja"):
        assert localized_name(stored) == "検査"
    assert localized_name(stored, "en") == procedure.name
    assert localized_name(stored, "ja") == "検査"


def test_the_admin_names_a_visit_definition_in_the_readers_language(import_seed) -> None:
    version = import_seed("001")
    infusion = VisitDefinition.objects.get(version=version, code="INF")

    assert str(infusion) == "INF Anifrolumab infusion visit"
    with translation.override("ja"):
        assert str(infusion) == f"INF {TSUKUBA_INFUSION_JA}"
        assert localized_name(version.trial).startswith("全身性エリテマトーデス")
    assert visit_name.__doc__  # the one helper participant texts use


def test_export_round_trips_every_japanese_name(import_seed) -> None:
    version = import_seed("001")
    exported = protocol_export(version=version)
    original = parse_protocol(seed_path("001").read_text(encoding="utf-8"), source="001")

    again = parse_protocol(exported, source="export")

    assert "  name_ja: アニフロルマブ点滴の来院\n" in exported
    assert again == original
    assert again.trial.title_ja == original.trial.title_ja
    assert [v.name_ja for v in again.visits] == [TSUKUBA_INFUSION_JA]
    assert [p.name_ja for p in again.procedures] == [p.name_ja for p in original.procedures]


MINIMAL = """\
format: 1
trial:
  code: tiny
  title: A tiny trial
  phase: "2"
  sponsor: Someone
  blinding: open
version:
  label: "1"
anchors:
  - code: day1
    name: Day 1
epochs:
  - code: TRT
    name: Treatment
procedures:
  - code: LAB
    name: Blood test
    duration_minutes: 10
{procedure_extra}visits:
  - code: V1
    name: Screening
{visit_extra}    epoch: TRT
    anchor: day1
    offset_days: 0
    window: {{before: 0, after: 0}}
    duration_minutes: 30
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ProtocolFileError) as caught:
        parse_protocol(text, source="tiny.yaml")
    return str(caught.value).splitlines()


def test_a_japanese_name_longer_than_a_name_may_be_is_refused_at_its_place() -> None:
    text = MINIMAL.format(procedure_extra="", visit_extra="    name_ja: " + "長" * 201 + "\n")

    assert problems_of(text) == [
        "tiny.yaml: visits[0].name_ja (line 23): string should have at most 200 characters "
        f"(got '{'長' * 201}')"
    ]


def test_a_blank_japanese_name_is_refused() -> None:
    text = MINIMAL.format(procedure_extra="", visit_extra='    name_ja: "  "\n')

    assert problems_of(text) == [
        "tiny.yaml: visits[0].name_ja (line 23): expected text to read, not only spaces or "
        "invisible characters; leave the field out when there is none (got '  ')"
    ]


def test_a_japanese_preparation_needs_the_english_one() -> None:
    text = MINIMAL.format(procedure_extra="    preparation_ja: 絶食\n", visit_extra="")

    assert problems_of(text) == [
        "tiny.yaml: procedures[0].preparation_ja (line 20): a Japanese preparation translates "
        "'preparation', which this procedure does not have"
    ]


def test_a_valid_japanese_name_is_read() -> None:
    text = MINIMAL.format(
        procedure_extra="    name_ja: 採血\n", visit_extra="    name_ja: スクリーニング\n"
    )

    document = parse_protocol(text, source="tiny.yaml")

    assert document.visits[0].name_ja == "スクリーニング"
    assert document.procedures[0].name_ja == "採血"
