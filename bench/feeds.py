"""Feed latency and size, with a baseline measured in the same run.

    .venv/bin/python bench/feeds.py [--site-participants 500] [--runs 20]

Builds, in a throw-away SQLite database under a temporary VAR_DIR (or DATABASE_URL if set):
- a participant with 60 visits (a 60-occurrence weekly visit) and
- a site with N participants of the NIAMS protocol (12 visits each),
then fetches their feeds through Django's test client and prints median latency and size of:
- the participant feed (full response), and a conditional request answered 304;
- the site feed;
- baseline: the same visits read from the database and serialised as plain JSON (what any
  feed must at least do), so the ratio shows what iCalendar building costs on top.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import progress, report  # noqa: E402

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


def median_ms(run: Any, runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-participants", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    warnings.filterwarnings("ignore", message="No directory at")  # no collected static files
    os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from config.celery import app
    from participants.services import participant_register
    from scheduler.calendars.feeds import feed_create, feed_path
    from scheduler.models import ScheduledVisit
    from scheduler.services import participant_enroll
    from trials.models import Site, TrialSite
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

    started = time.perf_counter()
    sixty = enroll(weekly, "W-1")
    others = range(args.site_participants - 1)
    for number in progress(others, f"feeds.py: {args.site_participants:,} participants"):
        enroll(niams, f"N-{number:04d}")
    setup_s = time.perf_counter() - started

    client = Client()
    p_feed, p_token = feed_create(participant=sixty)
    s_feed, s_token = feed_create(site=site)
    p_url, s_url = feed_path(feed=p_feed, token=p_token), feed_path(feed=s_feed, token=s_token)

    p_ms, p_response = median_ms(lambda: client.get(p_url), args.runs)
    etag = p_response["ETag"]
    p304_ms, p304 = median_ms(lambda: client.get(p_url, headers={"if_none_match": etag}), args.runs)
    s_ms, s_response = median_ms(lambda: client.get(s_url), max(3, args.runs // 4))

    def baseline(scope):
        rows = list(
            ScheduledVisit.objects.filter(**scope)
            .select_related("visit_definition", "participant__site")
            .values(
                "id",
                "target_date",
                "window_start",
                "window_end",
                "status",
                "booked_start",
                "visit_definition__name",
                "participant__study_id",
            )
        )
        return json.dumps(rows, default=str).encode()

    pb_ms, pb = median_ms(lambda: baseline({"participant": sixty}), args.runs)
    sb_ms, sb = median_ms(lambda: baseline({"participant__site": site}), max(3, args.runs // 4))

    visits = ScheduledVisit.objects.filter(participant__site=site).count()
    print(
        f"database: {django.db.connection.vendor}; setup {setup_s:.1f} s "
        f"({args.site_participants} participants, {visits} visits)"
    )
    print(
        f"participant feed (60 visits): {p_ms:8.1f} ms  {len(p_response.content) / 1024:7.1f} "
        f"KiB  status {p_response.status_code}"
    )
    print(f"  conditional (If-None-Match): {p304_ms:7.1f} ms  status {p304.status_code}")
    print(
        f"  baseline JSON of the rows:   {pb_ms:7.1f} ms  {len(pb) / 1024:7.1f} KiB  "
        f"ratio {p_ms / pb_ms:5.1f}x"
    )
    print(
        f"site feed ({visits} visits): {s_ms:8.1f} ms  {len(s_response.content) / 1024:7.1f} "
        f"KiB  status {s_response.status_code}"
    )
    print(
        f"  baseline JSON of the rows:   {sb_ms:7.1f} ms  {len(sb) / 1024:7.1f} KiB  "
        f"ratio {s_ms / sb_ms:5.1f}x"
    )
    runs, site_runs = args.runs, max(3, args.runs // 4)
    report(
        script="feeds",
        scenario="participant feed (60 visits)",
        value=p_ms,
        unit="ms",
        baseline=pb_ms,
        runs=runs,
    )
    report(
        script="feeds",
        scenario="participant feed, answered 304",
        value=p304_ms,
        unit="ms",
        baseline=pb_ms,
        runs=runs,
    )
    report(
        script="feeds",
        scenario="site feed",
        size=args.site_participants,
        value=s_ms,
        unit="ms",
        baseline=sb_ms,
        runs=site_runs,
    )


if __name__ == "__main__":
    main()
