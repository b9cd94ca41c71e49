"""The django-scheduler peer of bench/engine.py, in a process of its own.

    .venv/bin/python bench/peer_django_scheduler.py < calendar.json > timings.json

django-scheduler (the PyPI package `django-scheduler`, app `schedule`) keeps its calendars in
its own models, so it runs here under its own minimal settings (its app, auth and contenttypes,
an in-memory SQLite database), never inside the project's. Reads on stdin the JASMINE calendar
bench/engine.py planned, as numbers: Day 1, the screening visit's offset, the weekly visit's
offset, period and count, the follow-up's offset from the last weekly visit, and each visit's
duration. Stores it as django-scheduler stores a calendar: a Calendar, a weekly Rule
(count:52) and three Events (screening and follow-up once, the treatment visit recurring). Then
times, as a median of --samples samples of --runs calendars each:
- period: `Period(events, start, end).get_occurrences()`, how its views and feeds list a
  calendar's occurrences (the events, their rules and persisted occurrences read from its
  database, then dateutil's rrule expanded per event);
- generation: `Event._get_occurrence_list(start, end)` on events already loaded with their rule,
  i.e. its occurrence generation alone, no database.
Writes JSON on stdout: the occurrence dates (ISO, sorted) and both medians in microseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from typing import Any


def configure() -> None:
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-peer-django-scheduler",  # noqa: S106 - a throw-away process
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "schedule",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    import django

    django.setup()


def median_us(work: Any, runs: int, samples: int) -> float:
    medians = []
    for _ in range(samples):
        started = time.perf_counter()
        for _ in range(runs):
            work()
        medians.append((time.perf_counter() - started) / runs * 1e6)
    return statistics.median(medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="calendars per sample")
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    spec = json.load(sys.stdin)
    configure()
    from django.core.management import call_command
    from schedule.models import Calendar, Event, Rule
    from schedule.periods import Period

    call_command("migrate", verbosity=0)
    day1 = dt.datetime.combine(dt.date.fromisoformat(spec["day1"]), dt.time(9, 0), dt.UTC)
    weekly = dt.timedelta(days=spec["every_days"])
    calendar = Calendar.objects.create(name="JASMINE participant", slug="jasmine")
    rule = Rule.objects.create(
        name="Weekly x52",
        description="52 weekly injection visits",
        frequency="WEEKLY",
        params=f"count:{spec['count']}",
    )
    assert spec["every_days"] == 7, "a WEEKLY rule repeats every 7 days"

    def event(title: str, start: dt.datetime, minutes: int, **more: Any) -> Event:
        return Event.objects.create(
            calendar=calendar,
            title=title,
            start=start,
            end=start + dt.timedelta(minutes=minutes),
            **more,
        )

    treatment_start = day1 + dt.timedelta(days=spec["treatment_offset_days"])
    last_treatment = treatment_start + (spec["count"] - 1) * weekly
    event("SCR", day1 + dt.timedelta(days=spec["screening_offset_days"]), spec["screening_minutes"])
    event("TRT", treatment_start, spec["treatment_minutes"], rule=rule)
    event(
        "FU",
        last_treatment + dt.timedelta(days=spec["follow_up_offset_days"]),
        spec["follow_up_minutes"],
    )
    start = day1 - dt.timedelta(days=120)
    end = last_treatment + dt.timedelta(days=120)

    def period() -> list[Any]:
        return list(Period(Event.objects.filter(calendar=calendar), start, end).get_occurrences())

    loaded = list(Event.objects.filter(calendar=calendar).select_related("rule"))

    def generation() -> list[Any]:
        occurrences = []
        for each in loaded:
            occurrences += each._get_occurrence_list(start, end)
        return occurrences

    dates = sorted(occurrence.start.date().isoformat() for occurrence in period())
    generated = sorted(occurrence.start.date().isoformat() for occurrence in generation())
    assert dates == generated, "Period and generation disagree"
    json.dump(
        {
            "dates": dates,
            "period_us": median_us(period, args.runs, args.samples),
            "generation_us": median_us(generation, args.runs, args.samples),
            "runs": args.runs,
            "samples": args.samples,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
