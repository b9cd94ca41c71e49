"""REST API throughput and latency over HTTP, with a baseline measured in the same run.

    .venv/bin/python bench/api.py [--site-participants 500] [--requests 300] [--seconds 20]
                                  [--clients 4] [--rounds 5] [--workers N]
                                  [--threads N]

Builds, in a throw-away SQLite database under a temporary VAR_DIR (or, when DATABASE_URL is on
Postgres, a throw-away database created beside it and dropped at the end):
- a participant with 60 visits (a 60-occurrence weekly visit) and
- a site with N participants of the NIAMS protocol (12 visits each),
issues a site system OAuth2 token over HTTP, starts gunicorn on 127.0.0.1 as deployed (its
settings from config/gunicorn.py: threaded workers, so connections persist; --workers and
--threads override them), and drives it from `--clients` threads, each with its own keep-alive
`requests.Session`, for at most `--requests` requests or `--seconds` per target and round:
- GET /api/v1/participants/{id}/calendar/     (the 60-visit calendar)
- GET /api/v1/visits/?site=…&page_size=200     (a page of the 500-participant site's visits)
- baselines, served by the same gunicorn in the same run, from minimal Django views (`.values()`
  and orjson; no authentication, scoping, throttling, audit or serializer):
  - the same body: the API's JSON for the same rows, field for field (procedures, status at a
    glance from the site's today, codes, ETags), which the script checks before it measures:
    the issue's baseline ("the same work with the fastest plain means");
  - 12 columns: the rows' own columns only (what earlier runs measured against).
Every target is first warmed (each of the server's threads has opened its database and Redis
connections and served the view before anything is timed; the API, measured first, used to
pay for the connections the baselines then reused), then the targets are measured in turn,
`--rounds` times, and each figure is the median of its rounds.
Prints requests/s and p50/p99 per target and the ratios to both baselines, and reports each
target's requests/s to `make bench` with both (the target: at least half the same-body
baseline's rate, i.e. a ratio of at most 2). Loopback only.

Run as a gunicorn app this module is also the urlconf: the API's URLs plus the baselines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import runpy
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import on_postgres, progress, report, throwaway_postgres  # noqa: E402

# The API must serve at least half the minimal view's requests per second.
RATE_SHARE = 0.5

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
BASELINE_FIELDS = (
    "id",
    "participant_id",
    "participant__study_id",
    "visit_definition__code",
    "occurrence",
    "target_date",
    "window_start",
    "window_end",
    "status",
    "booked_start",
    "actual_date",
    "deviation_days",
    "version",
)


# ----------------------------------------------------------------------------------------
# The gunicorn side: this module as the urlconf (the API plus the two baselines)


# What the API's visit body holds, read as plain columns (the same-body baselines).
VISIT_COLUMNS = (
    "id",
    "participant_id",
    "participant__study_id",
    "participant__trial__code",
    "participant__site__code",
    "visit_definition__code",
    "visit_definition__repeat_count",
    "visit_definition__name",
    "occurrence",
    "unscheduled_reason",
    "protocol_version__label",
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
)
PROCEDURE_COLUMNS = (
    "visit_id",
    "procedure__code",
    "procedure__name",
    "procedure__duration_minutes",
    "status",
    "not_done_reason",
)
MILESTONE_COLUMNS = (
    "id",
    "rule__code",
    "rule__name",
    "rule__kind",
    "sequence",
    "due_date",
    "dose_mg",
    "estimated",
    "flag",
    "status",
)


def _same_body_visits(rows: list[dict[str, Any]], *, today: Any) -> list[dict[str, Any]]:
    """The API's visit bodies from plain rows: its procedures read in one more query, its
    status at a glance, code and ETag from the plain values by the app's own functions."""
    from types import SimpleNamespace

    from scheduler.api.preconditions import visit_etag
    from scheduler.models import ScheduledProcedure, visit_code
    from scheduler.selectors import visit_glance_status

    procedures: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    for procedure in (
        ScheduledProcedure.objects.filter(visit_id__in=list(procedures))
        .order_by("procedure__order", "id")
        .values_list(*PROCEDURE_COLUMNS)
    ):
        visit_id, code, name, minutes, status, not_done_reason = procedure
        procedures[visit_id].append(
            {
                "code": code,
                "name": name,
                "duration_minutes": minutes,
                "status": status,
                "not_done_reason": not_done_reason,
            }
        )
    bodies = []
    for row in rows:
        definition = None
        name = "Unscheduled visit"
        if row["visit_definition__code"] is not None:
            definition = SimpleNamespace(
                code=row["visit_definition__code"],
                repeat_count=row["visit_definition__repeat_count"],
            )
            name = row["visit_definition__name"]
        code = visit_code(cast(Any, definition), row["occurrence"])
        bodies.append(
            {
                "id": row["id"],
                "participant": row["participant_id"],
                "study_id": row["participant__study_id"],
                "trial": row["participant__trial__code"],
                "site": row["participant__site__code"],
                "code": code,
                "name": name,
                "occurrence": row["occurrence"],
                "unscheduled_reason": row["unscheduled_reason"],
                "protocol_version": row["protocol_version__label"],
                "target_date": row["target_date"],
                "window": {"start": row["window_start"], "end": row["window_end"]},
                "estimated": row["estimated"],
                "status": row["status"],
                "glance_status": visit_glance_status(
                    cast(Any, SimpleNamespace(**row)), today=today
                ),
                "booked_start": row["booked_start"],
                "booked_date": row["booked_date"],
                "actual_start": row["actual_start"],
                "actual_date": row["actual_date"],
                "deviation_days": row["deviation_days"],
                "reason": row["reason"],
                "procedures": procedures[row["id"]],
                "version": row["version"],
                "etag": visit_etag(
                    cast(Any, SimpleNamespace(pk=row["id"], version=row["version"]))
                ),
            }
        )
    return bodies


def _baseline_urls() -> list[Any]:
    import zoneinfo

    import orjson
    from django.http import HttpRequest, HttpResponse
    from django.urls import include, path
    from django.utils import timezone

    from participants.models import Participant
    from scheduler.models import ScheduledMilestone, ScheduledVisit
    from trials.models import Site

    def as_json(data: object) -> HttpResponse:
        return HttpResponse(
            orjson.dumps(data, default=str, option=orjson.OPT_UTC_Z),
            content_type="application/json",
        )

    def site_today(zone: str) -> Any:
        return timezone.now().astimezone(zoneinfo.ZoneInfo(zone)).date()

    def calendar(request: HttpRequest, pk: int) -> HttpResponse:
        rows = (
            ScheduledVisit.objects.filter(participant_id=pk)
            .order_by("target_date", "id")
            .values(*BASELINE_FIELDS)
        )
        return as_json({"visits": list(rows)})

    def visits(request: HttpRequest) -> HttpResponse:
        # In the API's order (by id: what paging through a changing list needs).
        rows = (
            ScheduledVisit.objects.filter(participant__site__code=request.GET["site"])
            .order_by("id")
            .values(*BASELINE_FIELDS)[: int(request.GET.get("page_size", 50))]
        )
        return as_json({"results": list(rows)})

    def same_calendar(request: HttpRequest, pk: int) -> HttpResponse:
        participant = Participant.objects.values(
            "id", "study_id", "site__code", "site__timezone"
        ).get(pk=pk)
        today = site_today(participant["site__timezone"])
        rows = list(
            ScheduledVisit.objects.filter(participant_id=pk)
            .order_by("target_date", "id")
            .values(*VISIT_COLUMNS)
        )
        milestones = [
            {
                "id": m["id"],
                "code": m["rule__code"],
                "name": m["rule__name"],
                "kind": m["rule__kind"],
                "sequence": m["sequence"],
                "due_date": m["due_date"],
                "dose_mg": m["dose_mg"],
                "estimated": m["estimated"],
                "flag": m["flag"],
                "status": m["status"],
            }
            for m in ScheduledMilestone.objects.filter(participant_id=pk)
            .order_by("due_date", "sequence", "id")
            .values(*MILESTONE_COLUMNS)
        ]
        return as_json(
            {
                "participant": participant["id"],
                "study_id": participant["study_id"],
                "site": participant["site__code"],
                "site_today": today,
                "visits": _same_body_visits(rows, today=today),
                "milestones": milestones,
                "taper_doses": [m for m in milestones if m["dose_mg"] is not None],
            }
        )

    def same_visits(request: HttpRequest) -> HttpResponse:
        site = Site.objects.values("timezone").get(code=request.GET["site"])
        rows = list(
            ScheduledVisit.objects.filter(
                participant__site__code=request.GET["site"],
                participant__trial__code=request.GET["trial"],
            )
            .order_by("id")
            .values(*VISIT_COLUMNS)[: int(request.GET.get("page_size", 50))]
        )
        return as_json({"results": _same_body_visits(rows, today=site_today(site["timezone"]))})

    return [
        path("bench/calendar/<int:pk>/", calendar),
        path("bench/visits/", visits),
        path("bench/same/calendar/<int:pk>/", same_calendar),
        path("bench/same/visits/", same_visits),
        path("", include("config.urls")),
    ]


if os.environ.get("BENCH_API_URLCONF") == "1":
    import django
    from django.conf import settings

    settings.ROOT_URLCONF = __name__
    django.setup()
    urlpatterns = _baseline_urls()
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()


# ----------------------------------------------------------------------------------------
# The load side


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _require_same_body(name: str, api: Any, baseline: Any, part: str | None) -> None:
    """The same-body baseline must answer what the API answers (the page of a list: its
    `results`), or the two do not do the same work."""
    if part is not None:
        api, baseline = api[part], baseline[part]
    if api != baseline:
        for where, (ours, theirs) in enumerate(
            zip(
                api if isinstance(api, list) else [api],
                baseline if isinstance(baseline, list) else [baseline],
                strict=False,  # a list of another length: said below
            )
        ):
            if ours != theirs:
                keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
                raise SystemExit(f"{name}: the baseline's body differs at {where}: {keys}")
        raise SystemExit(f"{name}: the baseline's body differs in length")


def _load(
    url: str, headers: dict[str, str], *, requests_total: int, seconds: float, clients: int
) -> dict[str, float]:
    """`clients` threads, one keep-alive session each, sharing a request budget."""
    import requests

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    budget = [requests_total]
    deadline = time.perf_counter() + seconds

    def client() -> None:
        with requests.Session() as session:
            session.headers.update(headers)
            session.get(url, timeout=30)  # warm the connection and the worker
            while time.perf_counter() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                started = time.perf_counter()
                response = session.get(url, timeout=30)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{url}: {len(errors)} failed requests, e.g. {errors[0]}")
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / wall,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (requests: all the rounds' together)."""
    return {
        key: sum(run[key] for run in runs)
        if key == "requests"
        else statistics.median(run[key] for run in runs)
        for key in runs[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-participants", type=int, default=500)
    parser.add_argument("--requests", type=int, default=300, help="per target, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="per target, at most")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="each figure is their median")
    deployed = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))
    parser.add_argument("--workers", type=int, default=deployed["workers"])
    parser.add_argument("--threads", type=int, default=deployed["threads"])
    args = parser.parse_args()
    # On Postgres, a throw-away database beside DATABASE_URL's (gunicorn inherits it): runs
    # never meet each other's rows or names.
    drop_database = None
    if on_postgres():
        os.environ["DATABASE_URL"], drop_database = throwaway_postgres(
            os.environ["DATABASE_URL"], "api"
        )
    try:
        measure(args)
    finally:
        if drop_database is not None:
            from django.db import connections

            connections.close_all()
            drop_database()


def measure(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore", message="No directory at")  # no collected static files
    os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-api-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import requests
    from django.core.management import call_command

    from config.celery import app
    from participants.services import participant_register
    from scheduler.api.credentials import site_system_credentials_create
    from scheduler.models import ScheduledVisit
    from scheduler.services import participant_enroll
    from trials.models import Site, TrialSite
    from trials.services import protocol_import

    app.conf.task_always_eager = False
    app.conf.broker_url = "memory://"  # invites are queued, not sent: only the API is measured
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

    def enroll(version: Any, study_id: str) -> Any:
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
    for number in range(args.site_participants - 1):
        enroll(niams, f"N-{number:04d}")
    setup_s = time.perf_counter() - started
    # A booked and a done visit in each calendar, so that the bodies compared carry instants
    # and local dates too (written directly: only what is read is measured here).
    niams_participant = ScheduledVisit.objects.exclude(participant=sixty).values("participant_id")
    for participant_id in (sixty.pk, niams_participant[0]["participant_id"]):
        first, second = ScheduledVisit.objects.filter(participant_id=participant_id).order_by("id")[
            :2
        ]
        at = dt.datetime(2026, 3, 2, 8, 30, tzinfo=dt.UTC)
        ScheduledVisit.objects.filter(pk=first.pk).update(
            status="done", actual_start=at, actual_date=at.date(), deviation_days=0
        )
        ScheduledVisit.objects.filter(pk=second.pk).update(
            status="booked",
            booked_start=at + dt.timedelta(days=7, microseconds=5),
            booked_date=(at + dt.timedelta(days=7)).date(),
        )
    # One site system per trial at the site: the calendar's trial and the NIAMS site list.
    weekly_system, weekly_secret = site_system_credentials_create(
        name="bench-weekly", trial=weekly.trial, sites=[site]
    )
    niams_system, niams_secret = site_system_credentials_create(
        name="bench-niams", trial=niams.trial, sites=[site]
    )
    visits_at_site = ScheduledVisit.objects.filter(participant__site=site).count()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "BENCH_API_URLCONF": "1",
        "API_RATE_PER_CREDENTIAL": "100000000/minute",  # the budget is not what is measured
        "DEBUG": "false",
        # Persistent connections, as deployed (docker-compose and Kubernetes set 60 s).
        "CONN_MAX_AGE": os.environ.get("CONN_MAX_AGE", "60"),
        "PYTHONWARNINGS": "ignore::UserWarning",  # no collected static files here
    }
    server = subprocess.Popen(  # noqa: S603 - our own gunicorn, fixed arguments
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "bench.api:application",
            "--chdir",
            str(ROOT),
            "--bind",
            f"127.0.0.1:{port}",
            "--config",
            str(ROOT / "config" / "gunicorn.py"),
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
        ],
        env=server_env,
    )
    try:
        for _ in range(300):
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.1)

        def token(application: Any, secret: str) -> dict[str, str]:
            issued = requests.post(
                f"{base}/api/v1/oauth/token/",
                data={"grant_type": "client_credentials", "scope": "read"},
                auth=(application.client_id, secret),
                timeout=10,
            )
            issued.raise_for_status()
            return {"Authorization": f"Bearer {issued.json()['access_token']}"}

        weekly_auth = token(weekly_system, weekly_secret)
        niams_auth = token(niams_system, niams_secret)
        page = 200
        targets = [
            (
                "calendar, 60 visits",
                None,
                f"{base}/api/v1/participants/{sixty.pk}/calendar/",
                weekly_auth,
                f"{base}/bench/calendar/{sixty.pk}/",
                f"{base}/bench/same/calendar/{sixty.pk}/",
                None,
            ),
            (
                f"site visit list, {page} of {visits_at_site}",
                args.site_participants,
                f"{base}/api/v1/visits/?site={site.code}&trial={niams.trial.code}&page_size={page}",
                niams_auth,
                f"{base}/bench/visits/?site={site.code}&page_size={page}",
                f"{base}/bench/same/visits/?site={site.code}&trial={niams.trial.code}"
                f"&page_size={page}",
                "results",
            ),
        ]
        load = {"requests_total": args.requests, "seconds": args.seconds, "clients": args.clients}
        # Enough clients to reach every thread of every worker, a few requests each.
        threads_in_all = args.workers * args.threads
        warm = {"requests_total": threads_in_all * 8, "seconds": 60.0, "clients": threads_in_all}
        rows = []
        for name, participants, api_url, auth, thin_url, same_url, part in targets:
            body = requests.get(api_url, headers=auth, timeout=30)
            _require_same_body(name, body.json(), requests.get(same_url, timeout=30).json(), part)
            runs: dict[str, list[dict[str, float]]] = {"api": [], "same": [], "thin": []}
            plan: tuple[tuple[str, str, dict[str, str]], ...] = (
                ("api", api_url, auth),
                ("same", same_url, {}),
                ("thin", thin_url, {}),
            )
            for _kind, url, headers in plan:
                _load(url, headers, **warm)  # type: ignore[arg-type]
            for _round in progress(range(args.rounds), f"{name.split(',')[0]}: rounds"):
                for kind, url, headers in plan:
                    runs[kind].append(_load(url, headers, **load))  # type: ignore[arg-type]
            api, same, thin = (_median_run(runs[kind]) for kind in ("api", "same", "thin"))
            rows.append((name, api, same, thin, len(body.content)))
            report(
                script="api",
                scenario=f"GET {name.split(',')[0]} (vs minimal view of the same body)",
                size=participants,
                value=api["rps"],
                unit="req/s",
                baseline=same["rps"],
                target=round(same["rps"] * RATE_SHARE, 1),
                runs=args.rounds,
            )
            report(
                script="api",
                scenario=f"GET {name.split(',')[0]} (vs minimal view of 12 columns)",
                size=participants,
                value=api["rps"],
                unit="req/s",
                baseline=thin["rps"],
                runs=args.rounds,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(
        f"database: {django.db.connection.vendor}; setup {setup_s:.1f} s "
        f"({args.site_participants} participants, {visits_at_site} visits at the site); "
        f"gunicorn gthread {args.workers}x{args.threads}, {args.clients} keep-alive clients"
    )
    header = (
        f"{'target':34} {'':11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'n':>5}  "
        f"{'API/baseline':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, api, same, thin, size in rows:
        print(
            f"{name:34} {'API':11} {api['rps']:8.1f} {api['p50']:8.1f} {api['p99']:8.1f} "
            f"{api['requests']:5.0f}  ({size / 1024:.0f} KiB)"
        )
        for label, baseline in (("same body", same), ("12 columns", thin)):
            print(
                f"{'':34} {label:11} {baseline['rps']:8.1f} {baseline['p50']:8.1f} "
                f"{baseline['p99']:8.1f} {baseline['requests']:5.0f}  "
                f"req/s {baseline['rps'] / api['rps']:5.2f}x  "
                f"p50 {api['p50'] / baseline['p50']:5.2f}x"
            )


if __name__ == "__main__":
    main()
