"""The coordinator's workspace at scale: the start page, a timeline and the lists with 10,000
participants and 600,000 visits, against the admin's cheapest page measured in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python bench/workspace.py [--participants 10000] [--sites 10] [--runs 7]

Needs Postgres (the scale is the point): it creates a throw-away database beside DATABASE_URL's
(its name starts with that database's, see bench/harness.py), and drops it at the end unless
--keep. Builds one trial with a 60-visit weekly protocol at `--sites` sites; one participant
is enrolled through the services, the rest are written with COPY as the same calendar shifted
day by day (Day 1 spread over a year), so today has visits done, missed, booked, due and
overdue at every site (visits more than 3 days past are recorded, done or 1 in 17 missed,
except 1 in 20 left overdue). Then, in process with Django's test client (templates
rendered, no network):
- as the coordinator of one site (a tenth of the participants) and as the sponsor monitor
  (every site), each page's median of `--runs` requests after one warm-up;
- the baseline: the admin's password-change form, the cheapest page with the admin's chrome.
Prints milliseconds, queries, and the ratio to the baseline; the issue's target is 300 ms.
Then the visit list's CSV export, streamed, for the coordinator (one site's visits) and the
monitor (every site's, ten times as many rows): its time once, and its peak Python memory
(tracemalloc, a second run) against the kilobytes it sent, which must stay flat as the rows
grow tenfold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import peak_kib, report, streamed_size, throwaway_postgres  # noqa: E402

TARGET_MS = 300.0


def _copy(cursor: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def build(participants: int, sites: int) -> dict[str, Any]:
    """The data, the coordinator and the monitor; returns what the pages need."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.api import WEEKLY_60
    from participants.models import Participant
    from participants.services import participant_register
    from scheduler.models import Membership, ScheduledProcedure, ScheduledVisit
    from scheduler.services import participant_enroll
    from trials.models import Site, TrialSite
    from trials.services import protocol_import

    version = protocol_import(text=WEEKLY_60, source="bench-weekly.yaml")
    trial = version.trial
    zones = ["America/New_York", "Asia/Tokyo", "Europe/Berlin", "Australia/Sydney"]
    site_rows = [
        Site.objects.create(
            code=f"site-{n:02d}", name=f"Site {n}", timezone=zones[n % len(zones)], country="US"
        )
        for n in range(sites)
    ]
    for site in site_rows:
        TrialSite.objects.create(trial=trial, site=site)
    users = get_user_model().objects
    coordinator = users.create_user("bench-coordinator", is_staff=True)
    monitor = users.create_user("bench-monitor", is_staff=True)
    Membership.objects.create(user=coordinator, trial=trial, site=site_rows[0], role="coordinator")
    Membership.objects.create(user=monitor, trial=trial, site=None, role="sponsor_monitor")

    today = timezone.now().date()
    first_day1 = today - dt.timedelta(days=300)
    template = participant_register(
        trial=trial,
        site=site_rows[0],
        study_id="T-00000",
        birth_date=dt.date(1980, 1, 1),
        anchors={"day1": first_day1},
    )
    participant_enroll(participant=template, on=first_day1 - dt.timedelta(days=1))
    visits = list(ScheduledVisit.objects.filter(participant=template).order_by("target_date", "id"))
    procedure_of = dict(
        ScheduledProcedure.objects.filter(visit__participant=template).values_list(
            "visit__occurrence", "procedure_id"
        )
    )
    now = timezone.now()
    people = []
    for n in range(1, participants):
        people.append(
            Participant(
                trial=trial,
                site=site_rows[n % sites],
                study_id=f"T-{n:05d}",
                status=Participant.Status.ENROLLED,
                protocol_version=version,
                birth_date=dt.date(1980, 1, 1),
                timezone=site_rows[n % sites].timezone,
                enrolled_at=now,
            )
        )
    with transaction.atomic():
        created = Participant.objects.bulk_create(people, batch_size=2000)
        visit_rows: list[tuple[Any, ...]] = []
        for n, person in enumerate(created, start=1):
            shift = dt.timedelta(days=n % 365)
            for visit in visits:
                target = visit.target_date + shift
                status, booked_start, booked_date, actual_date = "planned", None, None, None
                days_ahead = (target - today).days
                if days_ahead < -3:
                    # Recorded within a few days, as sites do: done, or missed for 1 in 17;
                    # 1 in 20 left unrecorded (overdue on the start page).
                    if (n + visit.occurrence) % 20 == 0:
                        pass
                    elif n % 17 == 0:
                        status = "missed"
                    else:
                        status, actual_date = "done", target
                elif 0 <= days_ahead <= 7 and n % 3 == 0:
                    status, booked_date = "booked", target
                    booked_start = dt.datetime.combine(target, dt.time(14, 0), dt.UTC)
                visit_rows.append(
                    (
                        person.pk,
                        visit.visit_definition_id,
                        visit.occurrence,
                        "",
                        version.pk,
                        target,
                        visit.window_start + shift,
                        visit.window_end + shift,
                        False,
                        status,
                        booked_start,
                        booked_date,
                        None,
                        actual_date,
                        0 if status in ("done", "booked") else None,
                        "",
                        1,
                        uuid.uuid4(),
                        0,
                    )
                )
        with connection.cursor() as cursor:
            _copy(
                cursor.cursor,
                ScheduledVisit._meta.db_table,
                [
                    "participant_id",
                    "visit_definition_id",
                    "occurrence",
                    "unscheduled_reason",
                    "protocol_version_id",
                    "target_date",
                    "window_start",
                    "window_end",
                    "estimated",
                    "status",
                    "booked_start",
                    "booked_date",
                    "actual_start",
                    "actual_date",
                    "deviation_days",
                    "reason",
                    "version",
                    "ical_uid",
                    "ical_sequence",
                ],
                visit_rows,
            )
            cursor.execute(  # table names from the models, values as parameters
                f"""
                INSERT INTO {ScheduledProcedure._meta.db_table} (visit_id, procedure_id, status,
                    not_done_reason)
                SELECT v.id, %s, CASE WHEN v.status = 'done' THEN 'done' ELSE 'planned' END, ''
                FROM {ScheduledVisit._meta.db_table} v WHERE v.participant_id <> %s
                """,  # noqa: S608
                [next(iter(procedure_of.values())), template.pk],
            )
            cursor.execute("ANALYZE")
    return {
        "coordinator": coordinator,
        "monitor": monitor,
        # One of the coordinator's own (site 0), so both users may open its timeline.
        "participant": created[sites - 1] if len(created) >= sites else template,
        "visits": ScheduledVisit.objects.count(),
        "participants": Participant.objects.count(),
    }


def measure(client: Any, url: str, runs: int) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm-up: templates compiled, caches filled
    times = []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            response = client.get(url)
            if hasattr(response, "streaming_content"):
                for _chunk in response.streaming_content:
                    pass
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(queries.captured_queries), response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("bench/workspace.py needs DATABASE_URL=postgres://… (the scale is the point)")
    os.environ["DATABASE_URL"], drop_database = throwaway_postgres(url, "workspace")
    try:
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if args.keep:
            print(f"kept: {os.environ['DATABASE_URL']}")
        else:
            drop_database()


def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from config.celery import app

    setup_test_environment()
    app.conf.broker_url = "memory://"
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    data = build(args.participants, args.sites)
    print(
        f"built {data['participants']:,} participants and {data['visits']:,} visits at "
        f"{args.sites} sites in {time.perf_counter() - start:.0f} s"
    )
    participant = data["participant"]
    pages = [
        ("baseline: password change form", "/admin/password_change/"),
        ("start page", "/admin/"),
        ("participants list", "/admin/participants/participant/"),
        ("visits list", "/admin/scheduler/scheduledvisit/"),
        ("visits due now", "/admin/scheduler/scheduledvisit/?attention=due"),
        ("screening log", "/admin/participants/participant/screening-log/"),
        ("timeline (60 visits)", f"/admin/participants/participant/{participant.pk}/timeline/"),
    ]
    print(f"{'page':34} {'who':12} {'median ms':>10} {'queries':>8} {'× baseline':>11}  target")
    for who in ("coordinator", "monitor"):
        client = Client()
        client.force_login(data[who])
        baseline = None
        for label, page in pages:
            ms, queries, status = measure(client, page, args.runs)
            if status != 200:
                print(f"{label:34} {who:12} HTTP {status}")
                continue
            baseline = baseline or ms
            verdict = (
                ""
                if label.startswith("baseline")
                else ("ok" if ms < TARGET_MS else f"OVER {TARGET_MS:.0f} ms")
            )
            print(f"{label:34} {who:12} {ms:10.1f} {queries:8d} {ms / baseline:10.1f}×  {verdict}")
            if not label.startswith("baseline"):
                report(
                    script="workspace",
                    scenario=f"{label}, {who}",
                    size=args.participants,
                    value=ms,
                    unit="ms",
                    baseline=baseline,
                    target=TARGET_MS,
                    runs=args.runs,
                )
    measure_export(data)


def exported(response: Any) -> tuple[int, int]:
    """The bytes and CSV rows of a streamed export, read chunk by chunk (nothing kept)."""
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    return size, lines - 1  # the header


def export_size(client: Any, url: str) -> int:
    return streamed_size(client.get(url))


def measure_export(data: dict[str, Any]) -> None:
    from django.test import Client

    url = "/admin/scheduler/scheduledvisit/export.csv"
    print(f"{'visits export (CSV)':34} {'who':12} {'rows':>9} {'seconds':>8} {'sent':>10} peak")
    for who in ("coordinator", "monitor"):
        client = Client()
        client.force_login(data[who])
        start = time.perf_counter()
        response = client.get(url)
        assert response.status_code == 200, response.status_code
        sent, rows = exported(response)
        seconds = time.perf_counter() - start
        peak, again = peak_kib(functools.partial(export_size, client, url))
        assert again == sent, (again, sent)
        print(f"{'':34} {who:12} {rows:9,} {seconds:8.1f} {sent / 1024:8,.0f} KiB {peak:,.0f} KiB")
        common = {"script": "workspace", "size": rows, "runs": 1}
        report(scenario="visits export (CSV), streamed", value=seconds, unit="s", **common)
        report(
            scenario="visits export (CSV) streamed: peak memory",
            value=peak,
            unit="KiB",
            baseline=sent / 1024,
            **common,
        )


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    main()
