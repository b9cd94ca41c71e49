"""Rendered event text, cached per (visit, sequence) and everything else the text depends on.

A visit's VEVENT is written once and kept in Django's cache (Redis in production) under a key
that names the visit and its SEQUENCE and ends in a digest of every input the text is made
from, so a text can never be served stale: a change to any input is a new key, and an old
text is simply never asked for again (it expires after CACHE_SECONDS). The inputs:

- the reader: the feed kind (participant or site) and the language;
- the visit: UID, SEQUENCE, status, its status at a glance (computed with the site's today,
  so a visit turning overdue at the site's midnight is a new text), booking, actual date and
  time, window, target, deviation, name (in the language), code, duration, procedures and how
  to prepare for them (participant kind);
- the participant: trial code and study id (site kind), own time zone (participant kind);
- the site: name, address, time zone; phone and organizer address (participant kind);
- the code and data that shape texts (`render_mark`): this module's, events.py's, ical.py's
  and the models' and selectors' source, the compiled translation catalogs, and the versions
  of babel (dates in words) and tzdata (wall clocks), and DEFAULT_FROM_EMAIL (the organizer of
  a site without an address). A deploy or a translation update is a new mark, hence new keys.

Keys are computed from `.values_list()` rows, one query per chunk of visits: model instances
cost most of a feed, so only visits whose text is not cached are loaded (and rendered by
`scheduler.calendars.events`); a text is kept under the key of the instance it was rendered
from, so a visit changed between the two reads cannot leave a text under an older key.

DTSTAMP is not an input: the text holds `ical.STAMP_MARK` in its place, and whoever assembles a
calendar stamps it (`ical.stamp_text`) with the moment that calendar is written (RFC 5545
3.8.7.2). Nothing about treatment arms is read, so nothing about them is in a text or a key.

Why Django's cache rather than a column on the visit: serving a feed (a GET) would otherwise
write to the visits table, a text per language and feed kind would need several columns, and
every change to a visit, participant, site or translation would have to clear them; the cache
needs no invalidation (keys name their inputs), is shared by every web process, and evicts
texts of feeds nobody polls. If the cache is unreachable, texts are rendered and served anyway.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import logging
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Literal, NamedTuple

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import translation

import scheduler.models
import scheduler.selectors
import trials.models
from scheduler.access import site_today
from scheduler.calendars import events, ical
from scheduler.calendars.events import participant_visit_event, site_visit_event
from scheduler.calendars.ical import Person, event_text
from scheduler.models import ScheduledProcedure, ScheduledVisit
from scheduler.selectors import visit_glance_status
from scheduler.sparselog import Sparse
from trials.models import Site

logger = logging.getLogger(__name__)

Kind = Literal["participant", "site"]
# How long an unused text is kept. Feed clients poll every few hours, and at a site's midnight
# some visits' status at a glance changes anyway, so three days covers a weekend of polls.
CACHE_SECONDS = 3 * 24 * 3600
# Visits rendered (and looked up in the cache) together: one round trip to the cache each.
CHUNK_SIZE = 500


@functools.cache
def render_mark() -> str:
    """A digest of the code and data every text depends on, once per process."""
    digest = hashlib.blake2b(digest_size=8)
    for module in (
        sys.modules[__name__],
        events,
        ical,
        scheduler.models,
        scheduler.selectors,
        trials.models,
    ):
        digest.update(Path(str(module.__file__)).read_bytes())
    for catalog in sorted(Path(settings.BASE_DIR).glob("*/locale/*/LC_MESSAGES/*.mo")):
        digest.update(catalog.read_bytes())
    digest.update(settings.DEFAULT_FROM_EMAIL.encode())  # the organizer of a site without one
    for package in ("babel", "tzdata", "icalendar"):
        try:
            digest.update(f"{package} {importlib.metadata.version(package)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(package.encode())
    return digest.hexdigest()


# The columns a visit's text is made from, read with `.values_list()` (no model instances: they
# cost most of a feed) to key its text; rendering reads the same fields from model instances
# (`_row_of`, checked equal to these rows by tests/calendars/test_feed_text.py).
COMMON_COLUMNS = (
    "id",
    "ical_uid",
    "ical_sequence",
    "status",
    "booked_start",
    "booked_date",
    "actual_start",
    "actual_date",
    "window_start",
    "window_end",
    "deviation_days",
    "visit_definition_id",
    "visit_definition__name",
    "visit_definition__name_ja",
    "visit_definition__duration_minutes",
    "participant__site__name",
    "participant__site__address",
    "participant__site__timezone",
)
COLUMNS: dict[Kind, tuple[str, ...]] = {
    "site": (
        *COMMON_COLUMNS,
        "target_date",
        "occurrence",
        "visit_definition__code",
        "visit_definition__repeat_count",
        "participant__study_id",
        "participant__trial__code",
    ),
    "participant": (
        *COMMON_COLUMNS,
        "participant__timezone",
        "participant__site__phone",
        "participant__site__email",
    ),
}
PROCEDURE_COLUMNS = (
    "procedure__name",
    "procedure__name_ja",
    "procedure__preparation",
    "procedure__preparation_ja",
)
Row = tuple[Any, ...]


class _Glance(NamedTuple):
    """What a visit's status at a glance is computed from (`visit_glance_status`)."""

    status: str
    booked_date: dt.date | None
    window_start: dt.date
    window_end: dt.date
    deviation_days: int | None


def _glance(row: Row, today: dt.date) -> str:
    # COMMON_COLUMNS' positions of status, booked_date, window_start, window_end, deviation_days
    return visit_glance_status(
        _Glance(row[3], row[5], row[8], row[9], row[10]),  # type: ignore[arg-type]
        today=today,
    )


def _row_of(visit: ScheduledVisit, kind: Kind) -> Row:
    """A loaded visit's values of COLUMNS[kind], as `.values_list()` reads them."""
    row = []
    for path in _PATHS[kind]:
        value: Any = visit
        for part in path:
            value = None if value is None else getattr(value, part)
        row.append(value)
    return tuple(row)


_PATHS = {kind: [column.split("__") for column in columns] for kind, columns in COLUMNS.items()}


def _procedures_of(visit: ScheduledVisit) -> tuple[Row, ...]:
    return tuple(
        tuple(getattr(procedure.procedure, column.split("__")[1]) for column in PROCEDURE_COLUMNS)
        for procedure in visit.procedures.all()
    )


def _inputs(row: Row, *, glance: str, procedures: tuple[Row, ...] = ()) -> str:
    """A visit's own inputs, as text (repr of dates, datetimes, UUIDs and str is stable)."""
    return repr((glance, row, procedures))


def _digest(*parts: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode())
    return digest.hexdigest()


def text_key(
    row: Row,
    *,
    kind: Kind,
    glance: str,
    language: str,
    procedures: tuple[Row, ...] = (),
) -> str:
    """The cache key of a visit's text: visit id, SEQUENCE and a digest of all its inputs."""
    return _key(row, kind, language, _inputs(row, glance=glance, procedures=procedures))


def _key(row: Row, kind: Kind, language: str, inputs: str) -> str:
    return f"ics:{kind}:{row[0]}:{row[2]}:{_digest(render_mark(), kind, language, inputs)}"


def render_text(
    visit: ScheduledVisit,
    *,
    kind: Kind,
    today: dt.date,
    attendee: Person | None = None,
    rsvp: bool = False,
) -> str:
    """The visit's VEVENT, rendered now (no cache); call inside the reader's language."""
    if kind == "site":
        return event_text(site_visit_event(visit, today=today), rsvp=rsvp)
    event = participant_visit_event(visit, attendee=attendee, today=today)
    return event_text(event, rsvp=rsvp)


def _loaded(ids: list[int], kind: Kind) -> dict[int, ScheduledVisit]:
    visits = ScheduledVisit.objects.select_related(
        "participant__site", "participant__trial", "visit_definition"
    )
    if kind == "participant":
        visits = visits.prefetch_related("procedures__procedure")
    return visits.in_bulk(ids)


def visit_texts(
    visits: QuerySet[ScheduledVisit],
    *,
    kind: Kind,
    today: dt.date,
    language: str,
    texts_cache: FeedCache | None = None,
) -> Iterator[str]:
    """The visits' VEVENTs in the queryset's order, CHUNK_SIZE at a time (one string each),
    from the cache, or rendered and cached; each holds `ical.STAMP_MARK` for its DTSTAMP.

    A chunk's text is cached too, under a digest of all its visits' inputs in order: a feed
    nothing changed in is one cache read a chunk. Otherwise each visit's text is looked up,
    and those not cached are rendered. Per chunk: one query for the rows (a second for
    procedures, participant kind), and for texts not cached one more to load those visits
    (two more with procedures). `texts_cache`: the request's (see `FeedCache`).
    """
    mark = render_mark()
    texts_cache = texts_cache or FeedCache()
    columns = visits.values_list(*COLUMNS[kind])
    rows = scheduler.selectors.rows_streamed(columns, chunk_size=CHUNK_SIZE)
    while chunk := list(islice(rows, CHUNK_SIZE)):
        procedures: dict[int, tuple[Row, ...]] = {}
        if kind == "participant":
            for visit_id, *procedure in (
                ScheduledProcedure.objects.filter(visit_id__in=[row[0] for row in chunk])
                .order_by("visit", "procedure__order")
                .values_list("visit_id", *PROCEDURE_COLUMNS)
            ):
                procedures[visit_id] = (*procedures.get(visit_id, ()), tuple(procedure))
        inputs = [
            _inputs(row, glance=_glance(row, today), procedures=procedures.get(row[0], ()))
            for row in chunk
        ]
        chunk_key = f"ics:{kind}:chunk:{_digest(mark, kind, language, *inputs)}"
        text = texts_cache.get([chunk_key]).get(chunk_key)
        if text is None:
            text, complete = _chunk_text(
                chunk, inputs, kind=kind, today=today, language=language, texts_cache=texts_cache
            )
            if complete:
                texts_cache.keep({chunk_key: text})
        yield text


def _chunk_text(
    chunk: list[Row],
    inputs: list[str],
    *,
    kind: Kind,
    today: dt.date,
    language: str,
    texts_cache: FeedCache,
) -> tuple[str, bool]:
    """The chunk's text from its visits' texts, cached or rendered now; and whether each was
    made from the very row read (else the chunk's text is not kept: see below)."""
    keys = [_key(row, kind, language, own) for row, own in zip(chunk, inputs, strict=True)]
    found = texts_cache.get(keys)
    texts = {row[0]: found[key] for row, key in zip(chunk, keys, strict=True) if key in found}
    wanted = dict(zip((row[0] for row in chunk), keys, strict=True))
    complete = True
    missing = [row[0] for row in chunk if row[0] not in texts]
    if missing:
        rendered = {}
        with translation.override(language):
            loaded = _loaded(missing, kind)
            for visit in loaded.values():
                texts[visit.pk] = text = render_text(visit, kind=kind, today=today)
                # Kept under the key of what it was rendered from: the visit may have
                # changed since its row was read (served all the same: it is newer).
                row = _row_of(visit, kind)
                key = text_key(
                    row,
                    kind=kind,
                    glance=_glance(row, today),
                    language=language,
                    procedures=_procedures_of(visit) if kind == "participant" else (),
                )
                rendered[key] = text
                complete = complete and key == wanted[visit.pk]
        complete = complete and len(loaded) == len(missing)
        texts_cache.keep(rendered)
    # A visit deleted since its row was read is left out.
    return "".join(texts.get(row[0], "") for row in chunk), complete


def visit_event_text(
    visit: ScheduledVisit | int,
    *,
    kind: Kind = "participant",
    today: dt.date | None = None,
    language: str | None = None,
) -> str:
    """One visit's VEVENT text as feeds show it, through the cache: read fresh from the
    database, in `language` (default the active one; a participant's text is in theirs).
    Stamp it with `ical.stamp_text(text, stamp)` and put it between `ical.calendar_head(...)`
    and `ical.CALENDAR_TAIL`. `today` is the site's (computed when not given)."""
    pk = visit if isinstance(visit, int) else visit.pk
    visits = ScheduledVisit.objects.filter(pk=pk)
    if today is None:
        today = site_today(Site.objects.get(participants__visits=pk))
    language = language or translation.get_language() or "en"
    return "".join(visit_texts(visits, kind=kind, today=today, language=language))


class FeedCache:
    """The cache as one feed request uses it (its version's first-served time, then its
    texts): after the first failure (a cache away, or silent for REDIS_CACHE_TIMEOUT_SECONDS)
    the rest of the request goes without it, instead of waiting on it again for every chunk;
    the log says so once a minute per process."""

    def __init__(self) -> None:
        self.away = False

    def first(self, key: str, value: float, *, timeout: int) -> float | None:
        """The value kept under `key`, keeping `value` there if none is; None if the cache
        cannot say."""
        if self.away:
            return None
        try:
            cache.add(key, value, timeout=timeout)
            return cache.get(key)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - see get
            self._lost(exc)
            return None

    def get(self, keys: list[str]) -> dict[str, str]:
        if self.away:
            return {}
        try:
            return cache.get_many(keys)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - an unreachable cache means rendering, not failing
            self._lost(exc)
            return {}

    def keep(self, texts: dict[str, str]) -> None:
        if self.away or not texts:
            return
        try:
            cache.set_many(texts, timeout=CACHE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - see get
            self._lost(exc)

    def _lost(self, exc: Exception) -> None:
        self.away = True
        if CACHE_LOST_SAID.due():
            logger.warning(
                "calendar text cache unavailable (%s): feeds render without it", type(exc).__name__
            )


# Once a minute per process, not once a feed.
CACHE_LOST_SAID = Sparse(60.0)
