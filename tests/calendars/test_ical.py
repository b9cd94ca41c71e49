"""The iCalendar builder, checked by icalendar itself and by vobject, an independent parser."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import vobject
from icalendar import Calendar

from scheduler.calendars.ical import CalendarEvent, Person, build_calendar

STAMP = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def booked(zone: str, day: dt.date, uid: str = "visit-1@test") -> CalendarEvent:
    start = dt.datetime.combine(day, dt.time(9, 30), tzinfo=ZoneInfo(zone))
    return CalendarEvent(
        uid=uid,
        sequence=2,
        summary="Study visit: Treatment visit 2",
        description="Bring ID",
        location="NIH Clinical Center",
        status="CONFIRMED",
        start=start,
        end=start + dt.timedelta(hours=4),
        organizer=Person("visits@nih.example", "NIH CC"),
        attendees=(Person("p1@example.org"),),
    )


@pytest.mark.parametrize(
    ("zone", "day", "utc_start"),
    [
        # Clocks went forward in New York on Sunday 2026-03-08.
        ("America/New_York", dt.date(2026, 3, 9), dt.datetime(2026, 3, 9, 13, 30, tzinfo=dt.UTC)),
        ("America/New_York", dt.date(2026, 3, 2), dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC)),
        ("Asia/Tokyo", dt.date(2026, 3, 9), dt.datetime(2026, 3, 9, 0, 30, tzinfo=dt.UTC)),
        ("Asia/Tokyo", dt.date(2026, 3, 2), dt.datetime(2026, 3, 2, 0, 30, tzinfo=dt.UTC)),
    ],
)
def test_build_calendar_local_times_survive_both_parsers_across_dst(zone, day, utc_start) -> None:
    data = build_calendar([booked(zone, day)], method="REQUEST", stamp=STAMP).to_ical()

    parsed = Calendar.from_ical(data)
    other = vobject.readOne(data.decode())
    event = parsed.walk("VEVENT")[0]
    assert event.decoded("dtstart").astimezone(dt.UTC) == utc_start
    assert other.vevent.dtstart.value.astimezone(dt.UTC) == utc_start
    assert [tz["TZID"] for tz in parsed.walk("VTIMEZONE")] == [zone]
    assert other.vevent.dtend.value - other.vevent.dtstart.value == dt.timedelta(hours=4)


def test_build_calendar_passes_icalendar_validation_and_both_parsers_agree() -> None:
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
        [booked("America/New_York", dt.date(2026, 3, 9)), unbooked],
        method="PUBLISH",
        stamp=STAMP,
    ).to_ical()

    parsed = Calendar.from_ical(data)
    parsed.validate()
    first = [
        (
            str(e["UID"]),
            e.decoded("dtstart"),
            e.decoded("dtend"),
            str(e["STATUS"]),
            e.decoded("SEQUENCE"),
        )
        for e in parsed.walk("VEVENT")
    ]
    second = [
        (e.uid.value, e.dtstart.value, e.dtend.value, e.status.value, int(e.sequence.value))
        for e in vobject.readOne(data.decode()).vevent_list
    ]
    assert first == second
    assert first[1] == ("visit-2@test", dt.date(2026, 10, 5), dt.date(2026, 10, 20), "TENTATIVE", 0)
    assert str(parsed["METHOD"]) == "PUBLISH"
    assert "RRULE" not in data.decode()


def test_build_calendar_request_names_organizer_and_attendee_who_should_reply() -> None:
    data = build_calendar(
        [booked("America/New_York", dt.date(2026, 3, 9))], method="REQUEST", stamp=STAMP
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
        [booked("Asia/Tokyo", dt.date(2026, 3, 9))], method=None, stamp=STAMP
    ).to_ical()

    assert "METHOD" not in Calendar.from_ical(data)
