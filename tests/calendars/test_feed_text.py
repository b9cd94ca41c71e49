"""Feeds assembled from cached event texts: the bytes icalendar writes for the same rows, for
the seed trials (double-blind and open), in English and Japanese, in several zones; a text is
never served stale (each input it depends on changes it); DTSTAMP is each feed's own."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.cache import cache, caches
from django.db import connection
from django.db.models import Model
from django.test import override_settings
from django.utils import translation
from django.utils.translation import gettext as _

from participants.models import Participant
from scheduler.access import site_today
from scheduler.calendars import rendered
from scheduler.calendars.events import milestone_event, participant_visit_event, site_visit_event
from scheduler.calendars.feeds import (
    feed_path,
    participant_feed_ical,
    site_feed_ical,
)
from scheduler.calendars.ical import build_calendar
from scheduler.calendars.rendered import visit_event_text
from scheduler.models import ScheduledMilestone, ScheduledVisit
from scheduler.selectors import visit_glance_status
from scheduler.services import (
    participant_enroll,
    visit_book,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
)
from scheduler.sparselog import Sparse
from tests.calendars.conftest import NOW
from tests.factories import SiteFactory, participant_for, site_feed_create, site_trials
from tests.outages import Blackhole, configured
from trials.models import Arm, ProcedureDefinition, Site, Trial, VisitDefinition

pytestmark = pytest.mark.django_db

ZONES = ("America/New_York", "Asia/Tokyo", "Pacific/Chatham")
# On PostgreSQL, rows are read through a cursor planned for every row: SET and RESET around it.
CURSOR_SETTING = 2 if connection.vendor == "postgresql" else 0
SEEDS = {  # seed: anchors (the trial's blinding in the test id)
    "000": {"day1": dt.date(2026, 2, 2)},
    "001": {"psl_start": dt.date(2026, 2, 2), "day1": dt.date(2026, 2, 16)},
    "002": {"day1": dt.date(2026, 2, 2)},
}


# What feeds were before they were assembled from cached texts: every event built with
# icalendar, the reference the plain writing must match byte for byte.
def reference_participant_feed(participant: Participant, stamp: dt.datetime) -> bytes:
    visits = (
        ScheduledVisit.objects.filter(participant=participant)
        .select_related("participant__site", "participant__trial", "visit_definition")
        .prefetch_related("procedures__procedure")
        .order_by("target_date", "id")
    )
    today = site_today(participant.site)
    milestones = (
        ScheduledMilestone.objects.filter(participant=participant, rule__participant_facing=True)
        .exclude(status="cancelled")
        .select_related("rule")
        .order_by("rule__code", "sequence")
    )
    with translation.override(participant.language):
        events = [participant_visit_event(visit, today=today) for visit in visits]
        previous: dict[int, object] = {}
        for milestone in milestones:
            event = milestone_event(milestone, previous.get(milestone.rule_id))
            previous[milestone.rule_id] = milestone.dose_mg
            if event is not None:
                events.append(event)
        name = _("Study visits")
    return build_calendar(events, method="PUBLISH", stamp=stamp, name=name).to_ical()


def reference_site_feed(site: Site, stamp: dt.datetime) -> bytes:
    visits = (
        ScheduledVisit.objects.filter(participant__site=site)
        .select_related("participant__site", "participant__trial", "visit_definition")
        .order_by("target_date", "id")
    )
    today = site_today(site)
    events = [site_visit_event(visit, today=today) for visit in visits]
    return build_calendar(
        events,
        method="PUBLISH",
        stamp=stamp,
        name=_("%(site)s: study visits") % {"site": site.name},
    ).to_ical()


def visits_of(participant: Participant) -> list[ScheduledVisit]:
    return list(
        ScheduledVisit.objects.filter(participant=participant)
        .select_related("participant__site", "participant__trial", "visit_definition")
        .order_by("target_date", "id")
    )


def enroll(version, site: Site, study_id: str, language: str, anchors) -> Participant:
    participant = participant_for(
        version,
        anchors=anchors,
        site=site,
        study_id=study_id,
        language=language,
        weight_kg=Decimal(60),
        email=f"{study_id.lower()}@example.org",
    )
    participant_enroll(
        participant=participant,
        on=dt.date(2026, 1, 5),
        arm=Arm.objects.filter(version=version).order_by("code").first(),
    )
    return participant


def vary_the_states(participant: Participant, coordinator, number: int) -> None:
    """Some visits booked, one done or missed, one cancelled: every kind of event text."""
    today = site_today(participant.site)
    future = [v for v in visits_of(participant) if v.window_end > today and v.is_open]
    for visit in future[1:3]:
        day = max(visit.window_start, today + dt.timedelta(days=1))
        visit_book(
            visit=visit,
            local_date=day,
            local_time=dt.time(9, 30 if number % 2 else 0),
            by=coordinator,
            reason="booked",
        )
    first = visits_of(participant)[0]
    if first.window_start <= today and first.is_open:
        if number % 2:
            visit_mark_missed(visit=first, by=coordinator, reason="no show")
        else:
            visit_record_done(
                visit=first,
                actual_date=first.window_start,
                actual_time=dt.time(8, 45),
                by=coordinator,
                reason="" if first.window_start <= first.window_end else "late",
            )
    later = [v for v in visits_of(participant) if v.window_end > today and v.is_open]
    visit_cancel(visit=later[-1], by=coordinator, reason="unwell")


@pytest.mark.parametrize("seed", ["000", "001", "002"], ids=["000-double", "001-open", "002-dbl"])
def test_feeds_are_the_bytes_icalendar_writes_cold_and_from_the_cache(
    import_seed, coordinator, seed
) -> None:
    version = import_seed(seed)
    participants: list[Participant] = []
    for position, zone in enumerate(ZONES):
        site = SiteFactory.create(
            code=f"s{position}", name=f"Clinic, {zone}", timezone=zone, phone="+1 555 0100"
        )
        for language in ("en", "ja"):
            participant = enroll(version, site, f"{zone[:3]}-{language}", language, SEEDS[seed])
            vary_the_states(participant, coordinator, len(participants))
            participants.append(participant)
    cache.clear()
    first, second = NOW, NOW + dt.timedelta(minutes=7)

    for stamp in (first, second):  # rendered and kept, then read back and stamped anew
        for participant in participants:
            assert participant_feed_ical(participant, stamp=stamp) == (
                reference_participant_feed(participant, stamp)
            ), participant.study_id
        for site in Site.objects.filter(code__in=["s0", "s1", "s2"]):
            for language in ("en", "ja"):
                with translation.override(language):
                    assert site_feed_ical(
                        site, trials=site_trials(site), stamp=stamp
                    ) == reference_site_feed(site, stamp)
    assert len(participants) == 6


@pytest.fixture
def niams_participant(import_seed) -> Participant:
    site = SiteFactory.create(
        code="nih", name="NIH CC", timezone="America/New_York", phone="+1 301", email="v@nih.x"
    )
    return enroll(import_seed("000"), site, "NIH-001", "en", SEEDS["000"])


def text_of(visit: ScheduledVisit, kind: rendered.Kind, language: str = "en") -> str:
    return visit_event_text(visit, kind=kind, language=language)


def fresh_text(visit: ScheduledVisit, kind: rendered.Kind, language: str = "en") -> str:
    """The text rendered now from the visit as the database holds it, bypassing the cache."""
    loaded = rendered._loaded([visit.pk], kind)[visit.pk]
    with translation.override(language):
        return rendered.render_text(loaded, kind=kind, today=site_today(loaded.participant.site))


def _update(model: type[Model], owner: str, **values: object) -> Callable[[ScheduledVisit], None]:
    """A change of one row the visit's text is made from, written to the database."""

    def change(visit: ScheduledVisit) -> None:
        target: Any = visit
        for part in owner.split(".") if owner else ():
            target = getattr(target, part)
        model.objects.filter(pk=target.pk).update(**values)  # type: ignore[attr-defined]

    return change


def _first_procedure(visit: ScheduledVisit) -> None:
    procedure = visit.procedures.all()[0].procedure
    ProcedureDefinition.objects.filter(pk=procedure.pk).update(
        preparation=f"{procedure.preparation} Bring your glasses."
    )


BOOKED = {
    "booked_start": dt.datetime(2026, 2, 2, 14, tzinfo=dt.UTC),
    "booked_date": dt.date(2026, 2, 2),
    "status": "booked",
}
# Every input of a visit's text, changed in the database: (the change, the feed kinds whose
# text shows it, the language it is read in). The rest of each text's key is the code and
# translations (render_mark), the language and the status at a glance (tested below).
INPUTS: dict[str, tuple[Callable[[ScheduledVisit], object], tuple[rendered.Kind, ...], str]] = {
    "sequence and booking": (
        _update(ScheduledVisit, "", ical_sequence=1, **BOOKED),
        ("participant", "site"),
        "en",
    ),
    "status": (_update(ScheduledVisit, "", status="cancelled"), ("participant", "site"), "en"),
    "window": (
        _update(ScheduledVisit, "", window_end=dt.date(2026, 2, 9)),
        ("participant", "site"),
        "en",
    ),
    "target": (_update(ScheduledVisit, "", target_date=dt.date(2026, 2, 3)), ("site",), "en"),
    "deviation": (_update(ScheduledVisit, "", deviation_days=3, reason="late"), ("site",), "en"),
    "done": (
        _update(ScheduledVisit, "", status="done", actual_date=dt.date(2026, 1, 19)),
        ("participant", "site"),
        "en",
    ),
    "visit name": (
        _update(VisitDefinition, "visit_definition", name="Infusion"),
        ("participant", "site"),
        "en",
    ),
    "visit name in Japanese": (
        _update(VisitDefinition, "visit_definition", name_ja="点滴"),
        ("participant", "site"),
        "ja",
    ),
    "visit code": (_update(VisitDefinition, "visit_definition", code="V2X"), ("site",), "en"),
    "duration": (
        _update(VisitDefinition, "visit_definition", duration_minutes=30),
        ("participant",),
        "en",
    ),
    "study id": (_update(Participant, "participant", study_id="NIH-009"), ("site",), "en"),
    "trial code": (_update(Trial, "participant.trial", code="other-trial"), ("site",), "en"),
    "participant's zone": (
        _update(Participant, "participant", timezone="Asia/Tokyo"),
        ("participant",),
        "en",
    ),
    "site name": (
        _update(Site, "participant.site", name="NIH Clinical Center"),
        ("participant", "site"),
        "en",
    ),
    "site address": (
        _update(Site, "participant.site", address="10 Center Dr"),
        ("participant", "site"),
        "en",
    ),
    "site phone": (_update(Site, "participant.site", phone="+1 302"), ("participant",), "en"),
    "site email": (_update(Site, "participant.site", email="w@nih.x"), ("participant",), "en"),
    "site zone": (
        _update(Site, "participant.site", timezone="America/Chicago"),
        ("participant",),
        "en",
    ),
    "preparation": (_first_procedure, ("participant",), "en"),
}


@pytest.mark.parametrize("kind", ["participant", "site"])
@pytest.mark.parametrize("name", list(INPUTS))
def test_a_cached_text_follows_every_input_it_depends_on(
    niams_participant, kind: rendered.Kind, name: str
) -> None:
    change, shown_in, language = INPUTS[name]
    visit = ScheduledVisit.objects.select_related(
        "participant__site", "participant__trial", "visit_definition"
    ).get(participant=niams_participant, visit_definition__code="V2")
    if "zone" in name:  # zones show in a booked visit's text
        _update(ScheduledVisit, "", **BOOKED)(visit)
    if name == "target":  # V2's window is its target day: room for another
        _update(ScheduledVisit, "", window_end=dt.date(2026, 2, 9))(visit)
    before = text_of(visit, kind, language)
    assert before == fresh_text(visit, kind, language)

    change(visit)

    after = text_of(visit, kind, language)
    assert after == fresh_text(visit, kind, language)
    assert (after != before) == (kind in shown_in)


@pytest.mark.parametrize("kind", ["participant", "site"])
def test_the_rows_a_text_is_keyed_on_are_the_fields_it_is_rendered_from(
    import_seed, niams_participant, coordinator, kind: rendered.Kind
) -> None:
    vary_the_states(niams_participant, coordinator, 0)
    visits = ScheduledVisit.objects.filter(participant=niams_participant)

    rows = list(visits.order_by("id").values_list(*rendered.COLUMNS[kind]))
    loaded = rendered._loaded([row[0] for row in rows], kind)

    assert rows == [rendered._row_of(loaded[row[0]], kind) for row in rows]
    assert len({row[3] for row in rows}) == 4  # planned, booked, done, cancelled


def test_a_cached_text_follows_the_language_and_the_sites_today(niams_participant) -> None:
    v1 = visits_of(niams_participant)[0]  # window 2026-01-05 to 2026-01-19: overdue today
    assert visit_glance_status(v1, today=dt.date(2026, 1, 19)) == "due"
    english, japanese = text_of(v1, "participant"), text_of(v1, "participant", "ja")

    with time_machine.travel(dt.datetime(2026, 1, 19, 15, tzinfo=dt.UTC), tick=False):
        yesterday = text_of(v1, "participant")
        yesterday_fresh = fresh_text(v1, "participant")

    assert "Status: overdue" in english and "Status: due" in yesterday
    assert japanese == fresh_text(v1, "participant", "ja") != english
    assert yesterday == yesterday_fresh != english


def test_a_second_feed_renders_nothing_and_a_change_renders_only_what_it_changed(
    niams_participant, coordinator, monkeypatch
) -> None:
    cache.clear()
    calls: list[int] = []
    render = rendered.render_text

    def counting(visit, **kwargs):
        calls.append(visit.pk)
        return render(visit, **kwargs)

    monkeypatch.setattr(rendered, "render_text", counting)
    site = niams_participant.site
    visits = visits_of(niams_participant)

    participant_feed_ical(niams_participant, stamp=NOW)
    site_feed_ical(site, trials=site_trials(site), stamp=NOW)
    assert len(calls) == 2 * len(visits) == 24
    calls.clear()

    participant_feed_ical(niams_participant, stamp=NOW)
    site_feed_ical(site, trials=site_trials(site), stamp=NOW)
    assert calls == []

    Site.objects.filter(pk=site.pk).update(phone="+1 999")  # not in site feeds
    participant_feed_ical(Participant.objects.get(pk=niams_participant.pk), stamp=NOW)
    site_feed_ical(
        Site.objects.get(pk=site.pk), trials=site_trials(Site.objects.get(pk=site.pk)), stamp=NOW
    )
    assert len(calls) == len(visits)
    calls.clear()

    v4 = next(v for v in visits if v.code == "V4")
    visit_cancel(visit=v4, by=coordinator, reason="unwell")
    participant_feed_ical(niams_participant, stamp=NOW)
    assert calls == [v4.pk]


def test_each_feed_carries_its_own_dtstamp_from_cached_texts(niams_participant) -> None:
    earlier, later = NOW, NOW + dt.timedelta(hours=1, seconds=1)
    cache.clear()

    first = participant_feed_ical(niams_participant, stamp=earlier).decode()
    second = participant_feed_ical(niams_participant, stamp=later).decode()

    assert first.count("DTSTAMP:20260120T150000Z") == first.count("BEGIN:VEVENT") == 13
    assert second.count("DTSTAMP:20260120T160001Z") == 13
    assert second.replace("20260120T160001Z", "20260120T150000Z") == first
    assert "\r\nDTSTAMP\r\n" not in first + second


def test_a_feed_is_served_when_the_cache_is_unreachable(
    niams_participant, client, monkeypatch
) -> None:
    def unreachable(*args, **kwargs):
        raise ConnectionError("cache down")

    # The cache object itself, not the `cache` proxy (whose target a settings change swaps).
    monkeypatch.setattr(caches["default"], "get_many", unreachable)
    monkeypatch.setattr(caches["default"], "set_many", unreachable)
    monkeypatch.setattr(caches["default"], "add", unreachable)
    feed, token = site_feed_create(site=niams_participant.site)

    response = client.get(feed_path(feed=feed, token=token))

    body = b"".join(response.streaming_content)
    assert body == reference_site_feed(niams_participant.site, NOW)


def test_a_streamed_site_feed_answers_conditional_requests(niams_participant, client) -> None:
    feed, token = site_feed_create(site=niams_participant.site)
    url = feed_path(feed=feed, token=token)

    full = client.get(url)
    unchanged = client.get(url, headers={"if_none_match": full["ETag"]})

    assert (full.status_code, full.streaming, unchanged.status_code) == (200, True, 304)
    assert b"".join(full.streaming_content).count(b"BEGIN:VEVENT") == 12
    assert unchanged.content == b""
    assert unchanged["ETag"] == full["ETag"]


def test_feeds_cost_the_same_queries_at_any_size_cached_or_not(
    import_seed, django_assert_num_queries
) -> None:
    version = import_seed("000")
    site = SiteFactory.create(code="big", timezone="Europe/Berlin")
    for number in range(3):
        participant = enroll(version, site, f"B-{number}", "en", SEEDS["000"])
        cache.clear()
        trials = list(site_trials(site))
        # Rows; then the visits whose texts are not cached, loaded to render them.
        with django_assert_num_queries(CURSOR_SETTING + 2):
            site_feed_ical(site, trials=trials, stamp=NOW)
        with django_assert_num_queries(CURSOR_SETTING + 1):
            site_feed_ical(site, trials=trials, stamp=NOW)
        # Rows and their procedures; the uncached visits and their procedures (2 prefetches);
        # milestones.
        with django_assert_num_queries(CURSOR_SETTING + 6):
            participant_feed_ical(participant, stamp=NOW)
        with django_assert_num_queries(CURSOR_SETTING + 3):
            participant_feed_ical(participant, stamp=NOW)


def test_a_visit_changed_between_reading_its_row_and_rendering_it_leaves_no_stale_text(
    niams_participant, monkeypatch
) -> None:
    cache.clear()
    v4 = next(v for v in visits_of(niams_participant) if v.code == "V4")
    load = rendered._loaded

    def changed_meanwhile(ids, kind):
        ScheduledVisit.objects.filter(pk=v4.pk).update(status="cancelled")
        return load(ids, kind)

    monkeypatch.setattr(rendered, "_loaded", changed_meanwhile)
    served = participant_feed_ical(niams_participant, stamp=NOW)
    monkeypatch.setattr(rendered, "_loaded", load)
    ScheduledVisit.objects.filter(pk=v4.pk).update(status="planned")

    assert served.count(b"SUMMARY:Cancelled:") == 1  # the newer state, served at once
    # Back as its row was first read: neither the visit's key nor the chunk's holds the
    # cancelled text.
    assert participant_feed_ical(niams_participant, stamp=NOW) == (
        reference_participant_feed(niams_participant, NOW)
    )
    assert b"Cancelled" not in participant_feed_ical(niams_participant, stamp=NOW)


def test_a_site_feed_is_streamed_a_chunk_of_visits_at_a_time(
    niams_participant, client, monkeypatch
) -> None:
    monkeypatch.setattr(rendered, "CHUNK_SIZE", 5)
    feed, token = site_feed_create(site=niams_participant.site)

    pieces = list(client.get(feed_path(feed=feed, token=token)).streaming_content)

    # The head, 12 visits in chunks of 5, 5 and 2, the tail.
    assert [piece.count(b"BEGIN:VEVENT") for piece in pieces] == [0, 5, 5, 2, 0]
    assert b"".join(pieces) == reference_site_feed(niams_participant.site, NOW)


def test_a_silent_cache_costs_a_feed_one_timeout_not_one_a_chunk(
    niams_participant, client, monkeypatch, caplog
) -> None:
    """The cache configured as deployed (0.5 s), pointed at a server that never answers: the
    first lookup waits for it, the rest of the feed renders without it."""
    monkeypatch.setattr(rendered, "CHUNK_SIZE", 5)  # 12 visits: 3 chunks
    monkeypatch.setattr(rendered, "CACHE_LOST_SAID", Sparse(60.0))
    deployed = configured("CACHES", REDIS_URL="redis://127.0.0.1:6379/0")["default"]
    feed, token = site_feed_create(site=niams_participant.site)

    with Blackhole() as silent:
        caches = {"default": {**deployed, "LOCATION": silent.url(1)}}
        with override_settings(CACHES=caches):
            started = time.perf_counter()
            body = b"".join(client.get(feed_path(feed=feed, token=token)).streaming_content)
            took = time.perf_counter() - started
            again = b"".join(client.get(feed_path(feed=feed, token=token)).streaming_content)
        reached = silent.accepted

    assert body == again == reference_site_feed(niams_participant.site, NOW)
    assert reached == 2  # once a feed: a chunk's lookup, then none
    assert took < 2  # one 0.5 s wait (the old code waited three times a chunk: 4.5 s)
    assert [r.getMessage() for r in caplog.records if r.name == rendered.__name__] == [
        "calendar text cache unavailable (TimeoutError): feeds render without it"
    ]
