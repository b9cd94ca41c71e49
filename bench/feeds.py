"""Feed latency and memory, against the same text written by plain string formatting.

    .venv/bin/python bench/feeds.py [--site-participants 2000] [--runs 20]

Builds, in a throw-away SQLite database under a temporary VAR_DIR (or DATABASE_URL if set):
- a participant with 60 visits (a 60-occurrence weekly visit) and
- a site growing to N participants of the NIAMS protocol (12 visits each), measured at N/20,
  N/4 and N participants (100, 500 and 2,000 by default),
then fetches their feeds through Django's test client (the whole response, streamed or not)
and prints the median latency of:
- the participant feed with its event texts cached, with nothing cached, and answered 304;
- the site feed, cached and with nothing cached (the cache emptied before each run), answered
  304 (a calendar app polling with the ETag it has), and as it was built before (every event
  through icalendar), for comparison;
- baseline: the very same bytes written by plain string formatting from the same rows read
  with `.values_list()` (checked equal to the feed's bytes, DTSTAMP included, before anything
  is timed): what any feed must at least do. Target: a feed at most 3x its baseline (the
  participant feed, and site feeds from TARGET_FROM participants on).
It also measures the peak memory (tracemalloc) of serving the site feed at two sizes, against
the size of the feed's body: streaming keeps it flat.
The cache is Django's (Redis with REDIS_URL or CACHE_REDIS_URL; else this process's memory).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import peak_kib, progress, report, streamed_size  # noqa: E402

WEEKLY_60 = """\
format: 1
trial: {code: bench-weekly, title: Weekly benchmark trial, phase: "3", sponsor: Bench,
        blinding: open}
version: {label: "1"}
anchors: [{code: day1, name: Day 1}]
epochs: [{code: TRT, name: Treatment}]
procedures:
  - {code: INJ, name: Injection, duration_minutes: 15, preparation: Eat normally.}
visits:
  - code: W
    name: Weekly visit
    epoch: TRT
    anchor: day1
    offset_days: 0
    repeat: {every_days: 7, count: 60}
    window: {before: 2, after: 2}
    duration_minutes: 60
    procedures: [INJ]
"""


TARGET = 3.0  # a feed at most 3x the same text by plain string formatting (issue 13)
# Below this many participants a site feed is a few milliseconds, mostly the request itself
# (token, version, middleware), which the baseline does not do: no target there.
TARGET_FROM = 100
STAMP = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def median_ms(run: Callable[[], Any], runs: int, before: Callable[[], Any] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def medians_ms(
    runs: int, *measured: tuple[Callable[[], Any], Callable[[], Any] | None]
) -> list[float]:
    """Median milliseconds of each (run, before) pair, taking turns run by run so that a
    feed and its baseline see the same load on a shared machine."""
    times: list[list[float]] = [[] for _ in measured]
    for _ in range(runs):
        for position, (run, before) in enumerate(measured):
            if before is not None:
                before()
            started = time.perf_counter()
            run()
            times[position].append((time.perf_counter() - started) * 1000)
    return [statistics.median(each) for each in times]


def body(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


# The baselines: the feed's bytes from `.values_list()` rows by f-strings, `ical.escape_text`
# and `ical.fold` (plain str operations every writer of the text needs), handling the states
# the benchmark's visits are in (open, unbooked or booked); the check before timing proves
# they write what the feed serves.
GLANCE_FIELDS = ("status", "deviation_days", "booked_date", "window_start", "window_end")


def glance(status, deviation, booked_date, window_start, window_end, today) -> str:
    if status in ("cancelled", "missed"):
        return status
    off = deviation not in (None, 0)
    if status == "done":
        return "out_of_window" if off else "done"
    if status == "booked":
        if booked_date is not None and booked_date < today:
            return "overdue"
        return "out_of_window" if off else "booked"
    if window_end < today:
        return "overdue"
    return "due" if window_start <= today else "upcoming"


def span(start: Any, minutes: int, window_start: dt.date, window_end: dt.date) -> tuple[str, str]:
    if start is not None:
        start = start.astimezone(dt.UTC)
        end = start + dt.timedelta(minutes=minutes)
        return f":{start:%Y%m%dT%H%M%S}Z", f":{end:%Y%m%dT%H%M%S}Z"
    end_day = window_end + dt.timedelta(days=1)
    return f";VALUE=DATE:{window_start:%Y%m%d}", f";VALUE=DATE:{end_day:%Y%m%d}"


def site_baseline(site: Any, stamp: dt.datetime) -> bytes:
    from scheduler.access import site_today
    from scheduler.calendars.ical import escape_text, fold
    from scheduler.models import ScheduledVisit
    from scheduler.selectors import VISIT_GLANCE_LABELS

    today = site_today(site)
    dtstamp = f"DTSTAMP:{stamp.astimezone(dt.UTC):%Y%m%dT%H%M%S}Z"
    location = fold("LOCATION:" + escape_text(", ".join(p for p in (site.name, site.address) if p)))
    rows = (
        ScheduledVisit.objects.filter(participant__site=site)
        .order_by("target_date", "id")
        .values_list(
            *GLANCE_FIELDS,
            "ical_uid",
            "ical_sequence",
            "booked_start",
            "target_date",
            "occurrence",
            "visit_definition__code",
            "visit_definition__name",
            "visit_definition__repeat_count",
            "visit_definition__duration_minutes",
            "participant__study_id",
            "participant__trial__code",
        )
    )
    out = [
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Trial visit scheduler//EN\r\n"
        f"METHOD:PUBLISH\r\nNAME:{site.name}: study visits\r\n"
        f"X-WR-CALNAME:{site.name}: study visits\r\n"
    ]
    for row in rows:
        status, deviation, booked_date, first, last = row[:5]
        uid, sequence, booked, target, occurrence, code, name, repeat, minutes, study, trial = row[
            5:
        ]
        if status not in ("planned", "booked"):
            raise NotImplementedError(status)
        seen = glance(status, deviation, booked_date, first, last, today)
        label = VISIT_GLANCE_LABELS[seen]
        suffix = "" if seen == "booked" else "to book" if seen in ("upcoming", "due") else label
        code = f"{code}#{occurrence}" if repeat > 1 else code
        title = f"{trial} {study} · {code} {name}"
        start, end = span(booked, minutes, first, last)
        description = (
            f"Status: {label}\nTarget {target.isoformat()}, window {first.isoformat()} "
            f"to {last.isoformat()}"
        )
        if deviation:
            description += f"\nOut of window by {deviation} day(s)"
        summary = f"{title} ({suffix})" if suffix else title
        out.append(
            f"BEGIN:VEVENT\r\n{fold('SUMMARY:' + escape_text(summary))}"
            f"\r\nDTSTART{start}\r\nDTEND{end}\r\n{dtstamp}\r\n"
            f"UID:visit-{uid}@trial-visit-scheduler\r\nSEQUENCE:{sequence}\r\n"
            f"{fold('DESCRIPTION:' + escape_text(description))}\r\n{location}\r\n"
            + (
                "STATUS:CONFIRMED\r\nEND:VEVENT\r\n"
                if booked
                else "STATUS:TENTATIVE\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\n"
            )
        )
    out.append("END:VCALENDAR\r\n")
    return "".join(out).encode()


def participant_baseline(participant: Any, stamp: dt.datetime) -> bytes:
    from babel.dates import format_date
    from django.conf import settings
    from django.utils import translation
    from django.utils.translation import gettext as _
    from django.utils.translation import ngettext

    from scheduler.access import site_today
    from scheduler.calendars.ical import escape_text, fold
    from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
    from scheduler.selectors import VISIT_GLANCE_LABELS

    site = participant.site
    today = site_today(site)
    language = participant.language
    dtstamp = f"DTSTAMP:{stamp.astimezone(dt.UTC):%Y%m%dT%H%M%S}Z"
    place = ", ".join(p for p in (site.name, site.address) if p)
    organizer = f'ORGANIZER;CN="{site.name}":mailto:{site.email or settings.DEFAULT_FROM_EMAIL}'
    preparations: dict[int, list[str]] = {}
    for visit_id, name, preparation in (
        ScheduledProcedure.objects.filter(visit__participant=participant)
        .order_by("visit", "procedure__order")
        .values_list("visit_id", "procedure__name", "procedure__preparation")
    ):
        if preparation:
            preparations.setdefault(visit_id, []).append(f"- {name}: {preparation}")
    rows = (
        ScheduledVisit.objects.filter(participant=participant)
        .order_by("target_date", "id")
        .values_list(
            *GLANCE_FIELDS,
            "id",
            "ical_uid",
            "ical_sequence",
            "booked_start",
            "visit_definition__name",
            "visit_definition__duration_minutes",
        )
    )
    with translation.override(language):
        out = [
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Trial visit scheduler//EN\r\n"
            f"METHOD:PUBLISH\r\nNAME:{_('Study visits')}\r\nX-WR-CALNAME:{_('Study visits')}\r\n"
        ]
        hours = ngettext("%(count)d hour", "%(count)d hours", 1) % {"count": 1}
        for row in rows:
            status, deviation, booked_date, first, last = row[:5]
            pk, uid, sequence, booked, name, minutes = row[5:]
            if status != "planned" or booked is not None or minutes != 60:
                raise NotImplementedError(status)
            seen = glance(status, deviation, booked_date, first, last, today)
            lines = [
                _(
                    "Not booked yet. The visit can take place between %(first)s and %(last)s; "
                    "the site will confirm the day and time."
                )
                % {
                    "first": format_date(first, format="full", locale=language),
                    "last": format_date(last, format="full", locale=language),
                },
                _("Status: %(status)s") % {"status": _(VISIT_GLANCE_LABELS[seen])},
                _("Expected duration: up to %(duration)s") % {"duration": hours},
                _("Where: %(place)s") % {"place": place},
            ]
            if pk in preparations:
                lines += [_("How to prepare:"), *preparations[pk]]
            start, end = span(None, minutes, first, last)
            summary = _("To book: %(name)s") % {"name": name}
            out.append(
                f"BEGIN:VEVENT\r\n{fold('SUMMARY:' + escape_text(summary))}\r\n"
                f"DTSTART{start}\r\nDTEND{end}\r\n{dtstamp}\r\n"
                f"UID:visit-{uid}@trial-visit-scheduler\r\nSEQUENCE:{sequence}\r\n"
                f"{fold('DESCRIPTION:' + escape_text(chr(10).join(lines)))}\r\n"
                f"{fold('LOCATION:' + escape_text(place))}\r\n{fold(organizer)}\r\n"
                "STATUS:TENTATIVE\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\n"
            )
    if ScheduledMilestone.objects.filter(participant=participant).exists():
        raise NotImplementedError("milestones")
    out.append("END:VCALENDAR\r\n")
    return "".join(out).encode()


def icalendar_site_feed(site: Any, stamp: dt.datetime) -> bytes:
    """The site feed as it was built before: every event through icalendar."""
    from scheduler.access import site_today
    from scheduler.calendars.events import site_visit_event
    from scheduler.calendars.ical import build_calendar
    from scheduler.models import ScheduledVisit

    visits = (
        ScheduledVisit.objects.filter(participant__site=site)
        .select_related("participant__site", "participant__trial", "visit_definition")
        .order_by("target_date", "id")
    )
    today = site_today(site)
    events = [site_visit_event(visit, today=today) for visit in visits]
    return build_calendar(
        events, method="PUBLISH", stamp=stamp, name=f"{site.name}: study visits"
    ).to_ical()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-participants", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    largest = max(args.site_participants, 2)
    sizes = sorted({max(1, largest // 20), max(1, largest // 4), largest})

    warnings.filterwarnings("ignore", message="No directory at")  # no collected static files
    os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    import django
    from django.conf import settings

    django.setup()
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        # This process's memory: room for every text (its default keeps 300).
        settings.CACHES["default"]["OPTIONS"] = {"MAX_ENTRIES": 10_000_000}
    from django.core.cache import cache
    from django.core.management import call_command
    from django.test import Client

    from config.celery import app
    from participants.services import participant_register
    from scheduler.calendars.feeds import (
        feed_create,
        feed_path,
        participant_feed_ical,
        site_feed_ical,
    )
    from scheduler.models import ScheduledVisit
    from scheduler.services import participant_enroll
    from trials.models import Site, Trial, TrialSite
    from trials.services import protocol_import

    app.conf.task_always_eager = False
    app.conf.broker_url = "memory://"  # invites are queued, not sent: only feeds are measured
    call_command("migrate", verbosity=0)
    site = Site.objects.create(
        code=f"bench-{time.time_ns()}",
        name="Bench site",
        timezone="Europe/Berlin",
        country="DE",
        address="Bench 1",
    )
    weekly = protocol_import(text=WEEKLY_60.replace("bench-weekly", site.code), source="bench")
    niams = protocol_import(
        text=(ROOT / "seeds/protocols/000_niams_vascular.yaml")
        .read_text(encoding="utf-8")
        .replace("niams-ani-vascular", f"n-{site.code}"[:40]),
        source="bench",
    )
    for version in (weekly, niams):
        TrialSite.objects.create(trial=version.trial, site=site)

    def enroll(version, study_id):
        participant = participant_register(
            trial=version.trial,
            site=site,
            study_id=study_id,
            birth_date=dt.date(1980, 1, 1),
            anchors={"day1": dt.date(2026, 3, 2)},
            weight_kg=Decimal(70),
        )
        participant_enroll(
            participant=participant, on=dt.date(2026, 2, 1), arm=version.arm_set.first()
        )
        return participant

    print(
        f"database: {django.db.connection.vendor}; cache: {settings.CACHES['default']['BACKEND']}"
    )
    client = Client()
    sixty = enroll(weekly, "W-1")
    p_feed, p_token = feed_create(participant=sixty)
    s_feed, s_token = feed_create(site=site, trials=Trial.objects.filter(trialsite__site=site))
    p_url, s_url = feed_path(feed=p_feed, token=p_token), feed_path(feed=s_feed, token=s_token)
    runs = args.runs

    # The participant feed: checked, then timed cached, with nothing cached, and answered 304.
    expected = participant_baseline(sixty, STAMP)
    assert participant_feed_ical(sixty, stamp=STAMP) == expected, "participant baseline differs"
    body(client.get(p_url))
    p_base, p_warm, p_cold = medians_ms(
        runs,
        (lambda: participant_baseline(sixty, STAMP), None),
        (lambda: body(client.get(p_url)), None),
        (lambda: body(client.get(p_url)), cache.clear),
    )
    etag = client.get(p_url)["ETag"]
    p304 = median_ms(lambda: client.get(p_url, headers={"if_none_match": etag}), runs)
    kib = len(expected) / 1024
    print(
        f"participant feed (60 visits, {kib:.1f} KiB): cached {p_warm:.1f} ms, nothing cached "
        f"{p_cold:.1f} ms, 304 {p304:.1f} ms; plain formatting {p_base:.1f} ms "
        f"({p_warm / p_base:.2f}x cached, {p_cold / p_base:.2f}x not)"
    )
    common: dict[str, Any] = {"script": "feeds", "unit": "ms", "runs": runs}
    report(
        scenario="participant feed (60 visits), texts cached",
        value=p_warm,
        baseline=p_base,
        target=round(TARGET * p_base, 3),
        **common,
    )
    report(
        scenario="participant feed (60 visits), nothing cached",
        value=p_cold,
        baseline=p_base,
        **common,
    )
    report(scenario="participant feed, answered 304", value=p304, baseline=p_base, **common)

    enrolled = 1
    site_runs = max(3, runs // 4)
    for size in sizes:
        others = range(enrolled - 1, size - 1)
        for number in progress(others, f"feeds.py: up to {size:,} participants"):
            enroll(niams, f"N-{number:05d}")
        enrolled = size
        if django.db.connection.vendor == "postgresql":
            with django.db.connection.cursor() as cursor:
                cursor.execute("ANALYZE")  # as autovacuum would have by now: fresh statistics
        visits = ScheduledVisit.objects.filter(participant__site=site).count()
        expected = site_baseline(site, STAMP)
        assert (
            site_feed_ical(site, trials=Trial.objects.filter(trialsite__site=site), stamp=STAMP)
            == expected
        ), "site baseline differs"
        body(client.get(s_url))
        base, warm = medians_ms(
            site_runs,
            (lambda: site_baseline(site, STAMP), None),
            (lambda: streamed_size(client.get(s_url)), None),
        )
        base_again, cold, before = medians_ms(
            3,
            (lambda: site_baseline(site, STAMP), None),
            (lambda: streamed_size(client.get(s_url)), cache.clear),
            (lambda: icalendar_site_feed(site, STAMP), None),
        )
        # A calendar app polling with the ETag it has: the version check alone.
        conditional = {"if_none_match": client.get(s_url)["ETag"]}
        s304 = median_ms(functools.partial(client.get, s_url, headers=conditional), site_runs)
        mib = len(expected) / 1024 / 1024
        print(
            f"site feed, {size:,} participants ({visits:,} visits, {mib:.1f} MiB): cached "
            f"{warm:.0f} ms, nothing cached {cold:.0f} ms, with icalendar (before) {before:.0f} "
            f"ms, 304 {s304:.1f} ms; plain formatting {base:.0f} ms ({warm / base:.2f}x cached, "
            f"{cold / base_again:.2f}x not, {before / base_again:.1f}x before)"
        )
        site_common = {**common, "size": size, "runs": site_runs}
        report(
            scenario="site feed, texts cached",
            value=warm,
            baseline=base,
            target=round(TARGET * base, 3) if size >= TARGET_FROM else None,
            **site_common,
        )
        report(
            scenario="site feed, nothing cached",
            value=cold,
            baseline=base_again,
            **{**site_common, "runs": 3},
        )
        report(scenario="site feed, answered 304", value=s304, baseline=base, **site_common)
        report(
            scenario="site feed built with icalendar (before)",
            value=before,
            baseline=base_again,
            **{**site_common, "runs": 3},
        )
        if size != sizes[0] or len(sizes) < 3:
            peak, served = peak_kib(lambda: streamed_size(client.get(s_url)))
            print(
                f"  serving it streamed: peak memory {peak:,.0f} KiB for {served / 1024:,.0f} "
                "KiB sent"
            )
            report(
                script="feeds",
                scenario="site feed streamed: peak memory",
                size=size,
                value=peak,
                unit="KiB",
                baseline=served / 1024,
                runs=1,
            )


if __name__ == "__main__":
    main()
