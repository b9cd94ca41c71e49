from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import PROTOCOL_DIR
from trials.models import ProtocolVersion, Trial, VisitDefinition
from trials.protocol_file import ProtocolFileError, parse_protocol
from trials.services import (
    ProtocolImportError,
    protocol_document,
    protocol_export,
    protocol_import,
    protocol_version_publish,
)

SEED_FILES = sorted(PROTOCOL_DIR.glob("*.yaml"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.stem)
def test_protocol_export_reimports_to_an_identical_version(path: Path) -> None:
    original = parse_protocol(path.read_text(encoding="utf-8"), source=str(path))
    version = protocol_import(text=path.read_text(encoding="utf-8"), source=path.name)
    exported = protocol_export(version=version)

    assert parse_protocol(exported, source="exported.yaml") == original

    # Importing the export as a new version of the same trial stores the same content.
    relabelled = exported.replace(f"label: '{original.version.label}'", "label: round-trip", 1)
    again = protocol_import(text=relabelled, source="exported.yaml")
    assert (
        protocol_document(version=again).model_copy(update={"version": original.version})
        == original
    )


@pytest.mark.django_db
def test_protocol_import_refuses_to_change_a_published_version(import_seed) -> None:
    version = import_seed("000")
    text = (PROTOCOL_DIR / "000_niams_vascular.yaml").read_text(encoding="utf-8")

    with pytest.raises(ProtocolImportError) as caught:
        protocol_import(text=text.replace("offset_days: 224", "offset_days: 225"), source="x.yaml")

    assert str(caught.value) == (
        "x.yaml: version.label: niams-ani-vascular version '1.0' is already published and "
        "cannot change; an amendment needs a new version label"
    )
    assert VisitDefinition.objects.get(version=version, code="V10").offset_days == 224
    assert ProtocolVersion.objects.count() == 1


@pytest.mark.django_db
def test_protocol_import_replaces_a_draft_as_a_whole() -> None:
    text = (PROTOCOL_DIR / "000_niams_vascular.yaml").read_text(encoding="utf-8")
    draft = text.replace("status: published", "status: draft")
    protocol_import(text=draft, source="draft.yaml")

    replaced = protocol_import(
        text=draft.replace("offset_days: 224", "offset_days: 223"), source="draft.yaml"
    )

    assert ProtocolVersion.objects.count() == 1
    assert replaced.status == "draft"
    assert VisitDefinition.objects.get(version=replaced, code="V10").offset_days == 223


@pytest.mark.django_db
def test_protocol_import_of_an_invalid_file_stores_nothing() -> None:
    text = (PROTOCOL_DIR / "000_niams_vascular.yaml").read_text(encoding="utf-8")

    with pytest.raises(ProtocolFileError):
        protocol_import(
            text=text.replace("procedures: [EXAM, LABS]\n", "procedures: [EKG]\n"),
            source="bad.yaml",
        )

    assert Trial.objects.count() == 0
    assert ProtocolVersion.objects.count() == 0


@pytest.mark.django_db
def test_import_protocol_command_prints_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (PROTOCOL_DIR / "002_jasmine_myositis.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("anchor: {visit: TRT}", "anchor: {visit: TREAT}"))
    stderr = io.StringIO()

    with pytest.raises(CommandError):
        call_command("import_protocol", str(bad), stderr=stderr)

    assert stderr.getvalue() == (
        f"{bad}: visits[2].anchor.visit (line 83): unknown visit 'TREAT'; expected one of: "
        "FU, SCR, TRT\n"
    )
    assert ProtocolVersion.objects.count() == 0


@pytest.mark.django_db
def test_export_protocol_command_writes_reimportable_yaml(import_seed) -> None:
    import_seed("001")
    stdout = io.StringIO()

    call_command("export_protocol", "tsukuba-early-ani", "1.0", stdout=stdout)

    original = parse_protocol(
        (PROTOCOL_DIR / "001_tsukuba_early_anifrolumab.yaml").read_text(encoding="utf-8")
    )
    assert parse_protocol(stdout.getvalue()) == original


@pytest.mark.django_db
def test_export_protocol_command_names_the_versions_that_exist(import_seed) -> None:
    import_seed("001")

    with pytest.raises(CommandError) as caught:
        call_command("export_protocol", "tsukuba-early-ani", "9.9")

    assert (
        str(caught.value) == "no version '9.9' of trial 'tsukuba-early-ani'; its versions are 1.0"
    )


@pytest.mark.django_db
def test_protocol_document_takes_the_same_queries_for_small_and_large_protocols(
    import_seed, django_assert_num_queries
) -> None:
    small = import_seed("001")  # 1 visit definition
    large = import_seed("000")  # 11 visit definitions

    with django_assert_num_queries(12):
        protocol_document(version=small)
    with django_assert_num_queries(12):
        protocol_document(version=large)


@pytest.mark.django_db
def test_protocol_version_publish_turns_a_draft_into_an_immutable_version(
    django_user_model,
) -> None:
    text = (PROTOCOL_DIR / "000_niams_vascular.yaml").read_text(encoding="utf-8")
    draft = protocol_import(
        text=text.replace("status: published", "status: draft"), source="draft.yaml"
    )
    editor = django_user_model.objects.create_user("editor")

    published = protocol_version_publish(version=draft, by=editor)

    assert (published.status, published.published_at is not None) == ("published", True)
    assert [
        (h.history_user.username, h.history_change_reason)
        for h in published.history.filter(history_type="~")
    ] == [("editor", "published")]
    with pytest.raises(ProtocolImportError) as again:
        protocol_version_publish(version=published)
    assert str(again.value) == "niams-ani-vascular v1.0 is already published"
    with pytest.raises(ProtocolImportError):
        protocol_import(text=text, source="x.yaml")
