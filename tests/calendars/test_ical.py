"""The iCalendar builder, checked by icalendar itself and by two independent Python parsers
(vobject, ics). ical.js, and calendars built from the database, are in test_readers.py."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from scheduler.calendars.ical import CalendarEvent, Person, build_calendar
from tests.calendars.reading import PYTHON_READERS

STAMP = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def booked(
    start: dt.datetime, end: dt.datetime | None = None, uid: str = "visit-1@test"
) -> CalendarEvent:
    return CalendarEvent(
        uid=uid,
        sequence=2,
        summary="Study visit: Treatment visit 2",
        description="Bring ID",
        location="NIH Clinical Center",
        status="CONFIRMED",
        start=start,
        end=end or start + dt.timedelta(hours=4),
        organizer=Person("visits@nih.example", "NIH CC"),
        attendees=(Person("p1@example.org"),),
    )


def at(zone: str, day: dt.date, time: dt.time = dt.time(9, 30)) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=ZoneInfo(zone))


def time_lines(data: bytes) -> list[str]:
    return [
        line
        for line in data.decode().splitlines()
        if line.startswith(("DTSTART", "DTEND", "TZID", "BEGIN:VTIMEZONE"))
    ]


@pytest.mark.parametrize(
    ("start", "lines"),
    [
        # Clocks went forward in New York on Sunday 2026-03-08.
        (
            at("America/New_York", dt.date(2026, 3, 9)),
            ["DTSTART:20260309T133000Z", "DTEND:20260309T173000Z"],
        ),
        (
            at("America/New_York", dt.date(2026, 3, 2)),
            ["DTSTART:20260302T143000Z", "DTEND:20260302T183000Z"],
        ),
        # The reported case: more than a year ahead, in daylight time.
        (
            at("America/New_York", dt.date(2027, 3, 15), dt.time(9, 0)),
            ["DTSTART:20270315T130000Z", "DTEND:20270315T170000Z"],
        ),
        (
            at("Asia/Kathmandu", dt.date(2026, 3, 9)),
            ["DTSTART:20260309T034500Z", "DTEND:20260309T074500Z"],
        ),
        (
            at("Asia/Tokyo", dt.date(2026, 3, 9)),
            ["DTSTART:20260309T003000Z", "DTEND:20260309T043000Z"],
        ),
    ],
)
def test_build_calendar_writes_booked_times_as_utc_instants_without_vtimezone(start, lines) -> None:
    data = build_calendar([booked(start)], method="REQUEST", stamp=STAMP).to_ical()

    assert time_lines(data) == lines


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # Clocks went back at 01:00Z on Troll, from +02 to +00: a visit at 02:30 local that
        # lasts an hour ends at 01:30 local, earlier on the wall clock than it began.
        (
            dt.datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Antarctica/Troll")),
            dt.datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=ZoneInfo("Antarctica/Troll")),
        ),
        # Clocks went forward at 02:00 in New York: 01:00 EST plus 4 hours is 06:00 EDT.
        (
            dt.datetime(2027, 3, 14, 1, 0, tzinfo=ZoneInfo("America/New_York")),
            dt.datetime(2027, 3, 14, 6, 0, tzinfo=ZoneInfo("America/New_York")),
        ),
    ],
)
def test_build_calendar_visit_across_a_clock_change_reads_its_elapsed_length_everywhere(
    start, end
) -> None:
    data = build_calendar([booked(start, end)], method="PUBLISH", stamp=STAMP).to_ical()

    utc = (start.astimezone(dt.UTC), end.astimezone(dt.UTC))
    assert {reader: read(data.decode()) for reader, read in PYTHON_READERS.items()} == {
        reader: {"visit-1@test": utc} for reader in PYTHON_READERS
    }


def test_build_calendar_passes_icalendar_validation_and_three_parsers_agree() -> None:
    unbooked = CalendarEvent(
        uid="visit-2@test",
        sequence=0,
        summary="To book: Follow-up visit",
        description="",
        location="",
        status="TENTATIVE",
        start=dt.date(2026, 10, 5),
        end=dt.date(2026, 10, 20),
    )
    data = build_calendar(
        [booked(at("America/New_York", dt.date(2026, 3, 9))), unbooked],
        method="PUBLISH",
        stamp=STAMP,
    ).to_ical()

    parsed = Calendar.from_ical(data)
    parsed.validate()
    assert {reader: read(data.decode()) for reader, read in PYTHON_READERS.items()} == {
        reader: {
            "visit-1@test": (
                dt.datetime(2026, 3, 9, 13, 30, tzinfo=dt.UTC),
                dt.datetime(2026, 3, 9, 17, 30, tzinfo=dt.UTC),
            ),
            "visit-2@test": (dt.date(2026, 10, 5), dt.date(2026, 10, 20)),
        }
        for reader in PYTHON_READERS
    }
    assert [
        (str(e["UID"]), str(e["STATUS"]), e.decoded("SEQUENCE"), str(e.get("TRANSP")))
        for e in parsed.walk("VEVENT")
    ] == [("visit-1@test", "CONFIRMED", 2, "None"), ("visit-2@test", "TENTATIVE", 0, "TRANSPARENT")]
    assert (str(parsed["METHOD"]), parsed.walk("VTIMEZONE")) == ("PUBLISH", [])
    assert "RRULE" not in data.decode()


def test_build_calendar_refuses_a_naive_time() -> None:
    naive = dt.datetime(2026, 3, 9, 9, 30)

    with pytest.raises(ValueError) as refused:
        build_calendar([booked(naive)], method="REQUEST", stamp=STAMP)

    assert str(refused.value) == ("2026-03-09T09:30:00 has no time zone: event times must be aware")


def test_build_calendar_request_names_organizer_and_attendee_who_should_reply() -> None:
    data = build_calendar(
        [booked(at("America/New_York", dt.date(2026, 3, 9)))], method="REQUEST", stamp=STAMP
    ).to_ical()

    event = Calendar.from_ical(data).walk("VEVENT")[0]
    assert str(event["ORGANIZER"]) == "mailto:visits@nih.example"
    assert event["ORGANIZER"].params["CN"] == "NIH CC"
    assert str(event["ATTENDEE"]) == "mailto:p1@example.org"
    assert dict(event["ATTENDEE"].params) == {
        "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "NEEDS-ACTION",
        "RSVP": "TRUE",
    }
    assert event.decoded("dtstamp") == STAMP


def test_build_calendar_without_method_for_caldav_storage() -> None:
    data = build_calendar(
        [booked(at("Asia/Tokyo", dt.date(2026, 3, 9)))], method=None, stamp=STAMP
    ).to_ical()

    assert "METHOD" not in Calendar.from_ical(data)
