"""Every text marked for translation in the translated parts of the product has its Japanese.

The catalog (scheduler/locale/ja/LC_MESSAGES/django.po) is written by hand: there are no
gettext tools on this machine, so these tests are the extraction. They read the marked texts
the way `makemessages` would (Django's own template-to-Python step, Babel's Python extractor)
and fail with the list of English texts that have no Japanese yet: add each to the .po and run
`make messages`. Django's own texts ("Cancel", "Log out") come from Django's catalog.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.extract import extract_python
from babel.messages.pofile import read_po
from django.contrib import admin
from django.utils import translation
from django.utils.translation.template import templatize

ROOT = Path(__file__).resolve().parents[2]
PO_FILE = ROOT / "scheduler" / "locale" / "ja" / "LC_MESSAGES" / "django.po"
KEYWORDS = {
    "_": None,
    "gettext": None,
    "gettext_lazy": None,
    "gettext_noop": None,
    "ngettext": (1, 2),
    "ngettext_lazy": (1, 2),
    "pgettext": ((1, "c"), 2),
}
# What is translated so far; a page joins this list when its texts are marked and in the .po.
TRANSLATED_TEMPLATES = [
    "scheduler/templates/admin/base_site.html",
    "scheduler/templates/registration/locked_out.html",
    *sorted(
        str(path.relative_to(ROOT))
        for folder in (
            "lifecycle",
            "enroll",
            "feeds",
            "notices",
            "workspace",
            "timeline",
            "screening",
            "unblinding",
            "two_factor",
        )
        for path in (ROOT / "scheduler" / "templates" / "admin" / folder).glob("*.html")
    ),
]
# Every module of ours that marks text for translation: found, not listed, so a new module is
# checked the day it marks its first text.
TRANSLATED_MODULES = sorted(
    str(path.relative_to(ROOT))
    for package in ("config", "participants", "scheduler", "trials")
    for path in (ROOT / package).rglob("*.py")
    if "migrations" not in path.parts and "gettext" in path.read_text(encoding="utf-8")
)


def marked(path: str) -> set[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    source = text
    if path.endswith(".html"):
        # Django's Python-like rendering of the template, one call a line; Babel's tokenizer
        # wants no indentation where xgettext would not care.
        source = "\n".join(line.strip() for line in templatize(text, origin=path).splitlines())
    found: set[str] = set()
    for _line, _function, message, _comments in extract_python(
        io.BytesIO(source.encode("utf-8")), KEYWORDS, [], {}
    ):
        first = singular(message)
        if first:
            found.add(first)
    return found


def singular(message: object) -> str:
    """A message's msgid: the singular of a plural one."""
    if isinstance(message, tuple | list):
        return str(message[0] or "")
    return str(message or "")


def ours() -> set[str]:
    with PO_FILE.open("rb") as handle:
        return {singular(m.id) for m in read_po(handle, locale="ja") if m.string}


def untranslated(messages: set[str]) -> list[str]:
    """Texts neither in our catalog nor translated by another (Django's admin, say)."""
    in_ours = ours()
    with translation.override("ja"):
        return sorted(m for m in messages if m not in in_ours and translation.gettext(m) == m)


@pytest.mark.parametrize("path", TRANSLATED_TEMPLATES + TRANSLATED_MODULES)
def test_every_marked_text_has_its_japanese(path: str) -> None:
    assert untranslated(marked(path)) == []


def test_the_catalog_has_no_empty_or_fuzzy_entry() -> None:
    with PO_FILE.open("rb") as handle:
        catalog = read_po(handle, locale="ja")

    empty = [
        m.id
        for m in catalog
        if m.id and not all(m.string if isinstance(m.string, tuple | list) else [m.string or ""])
    ]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert empty == []
    assert fuzzy == []


def test_every_lifecycle_action_reads_in_japanese(db) -> None:
    # Their titles and buttons reach the pages as English constants, which the lifecycle
    # templates show through {% translate %}.
    texts = {
        text
        for model_admin in admin.site._registry.values()
        for action in getattr(model_admin, "lifecycle", ())
        for text in (action.title, action.confirm_label, action.submit_label)
    }

    assert len(texts) > 10
    assert untranslated(texts) == []
