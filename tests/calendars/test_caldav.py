"""Round trip through a real CalDAV server (Radicale on 127.0.0.1, started by the test)."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import caldav
import pytest
from django.utils import timezone, translation
from icalendar import Calendar

from scheduler.calendars.events import participant_visit_event, visit_uid
from scheduler.calendars.ical import build_calendar
from scheduler.models import ScheduledVisit
from scheduler.services import visit_book, visit_cancel
from tests.calendars.conftest import visit_at

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - a fixed local test server
        [
            sys.executable,
            "-m",
            "radicale",
            "--server-hosts",
            f"127.0.0.1:{port}",
            "--storage-filesystem-folder",
            str(tmp_path / "collections"),
            "--auth-type",
            "none",
            "--logging-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.terminate()
    server.wait(timeout=10)


def resource(visit: ScheduledVisit) -> str:
    """The visit as a CalDAV calendar object resource (no METHOD)."""
    visit = ScheduledVisit.objects.select_related("participant__site", "visit_definition").get(
        pk=visit.pk
    )
    with translation.override(visit.participant.language):
        event = participant_visit_event(visit)
    return build_calendar([event], method=None, stamp=timezone.now()).to_ical().decode()


def put(calendar: Any, visit: ScheduledVisit) -> None:
    # The client library would otherwise raise SEQUENCE itself on every save; the scheduler
    # owns SEQUENCE, so what is stored must be exactly what it produced.
    calendar.save_event(resource(visit), increase_seqno=False)


def stored(calendar: Any, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    found = []
    for item in calendar.search(start=start, end=end, event=True):
        [event] = Calendar.from_ical(item.data).walk("VEVENT")
        start_value = event.decoded("dtstart")
        if isinstance(start_value, dt.datetime):
            start_value = start_value.astimezone(dt.UTC)
        found.append(
            (str(event["UID"]), start_value, event.decoded("SEQUENCE"), str(event["STATUS"]))
        )
    return sorted(found)


def test_events_round_trip_through_caldav_and_follow_reschedules_and_cancellations(
    radicale, enroll_niams, coordinator
) -> None:
    participant = enroll_niams()
    client: Any = caldav.DAVClient(url=radicale, username="coordinator", password="unused")  # type: ignore[operator]
    calendar: Any = client.principal().make_calendar(name="NIH-001 visits")
    visits = list(ScheduledVisit.objects.filter(participant=participant).order_by("target_date"))
    for visit in visits:
        put(calendar, visit)

    window = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    first = stored(calendar, *window)
    v4 = visit_at(participant, "V4")
    visit_book(visit=v4, local_date=dt.date(2026, 3, 30), local_time=dt.time(9, 30), by=coordinator)
    put(calendar, v4)
    booked = stored(calendar, *window)
    visit_book(
        visit=v4,
        local_date=dt.date(2026, 3, 31),
        local_time=dt.time(11, 0),
        by=coordinator,
        reason="participant asked",
    )
    put(calendar, v4)
    rescheduled = stored(calendar, *window)
    visit_cancel(visit=v4, by=coordinator, reason="participant unwell")
    put(calendar, v4)
    cancelled = stored(calendar, *window)

    in_window = [v for v in visits if v.window_start < dt.date(2026, 4, 1)]
    assert first == sorted((visit_uid(v), v.window_start, 0, "TENTATIVE") for v in in_window)
    uid = visit_uid(v4)
    assert [e for e in booked if e[0] == uid] == [
        (uid, dt.datetime(2026, 3, 30, 13, 30, tzinfo=dt.UTC), 1, "CONFIRMED")
    ]
    assert [e for e in rescheduled if e[0] == uid] == [
        (uid, dt.datetime(2026, 3, 31, 15, 0, tzinfo=dt.UTC), 2, "CONFIRMED")
    ]
    assert [e for e in cancelled if e[0] == uid] == [
        (uid, dt.datetime(2026, 3, 31, 15, 0, tzinfo=dt.UTC), 3, "CANCELLED")
    ]
    assert len(cancelled) == len(first)
