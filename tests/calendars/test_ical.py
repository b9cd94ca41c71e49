"""The iCalendar builder, checked by icalendar itself and by two independent Python parsers
(vobject, ics). ical.js, and calendars built from the database, are in test_readers.py."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from scheduler.calendars.ical import (
    STAMP_MARK,
    CalendarEvent,
    Person,
    build_calendar,
    calendar_text,
    escape_text,
    event_text,
    fold,
)
from tests.calendars.reading import PYTHON_READERS
from tests.conftest import bounded

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


# Texts that exercise every escape and fold: the characters TEXT and parameter values escape,
# CR and LF, the RFC 6868 caret, quotes, 2-, 3- and 4-byte UTF-8 (a fold never splits one), and
# long runs of them, so folds land next to escapes.
TRICKY = st.lists(
    st.sampled_from(list("aZ 9:;,\\^\"'’\n\r\tN·é日本語🙂-") + ["\\N", "\\,", "^n", "x" * 70]),
    max_size=40,
).map("".join)
# Where our writing differs from icalendar's on purpose: a backslash before N is kept as
# typed (icalendar turns the two characters into a line break; see `escape_text`).
TRICKY_TEXT = TRICKY.filter(lambda text: "\\N" not in text)
ZONES = ("UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "Asia/Tokyo")


@st.composite
def events(draw: st.DrawFn) -> CalendarEvent:
    day = draw(st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2060, 12, 31)))
    start: dt.datetime | dt.date
    end: dt.datetime | dt.date
    if draw(st.booleans()):
        moment = dt.datetime.combine(
            day,
            dt.time(draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))),
            tzinfo=ZoneInfo(draw(st.sampled_from(ZONES))),
        )
        start, end = moment, moment + dt.timedelta(minutes=draw(st.integers(1, 600)))
    else:
        start, end = day, day + dt.timedelta(days=draw(st.integers(1, 30)))
    people = st.builds(Person, st.emails(), TRICKY)
    return CalendarEvent(
        uid=draw(st.sampled_from(["visit-1@x", "milestone-2@trial-visit-scheduler", "a,b;c"])),
        sequence=draw(st.integers(0, 1000)),
        summary=draw(TRICKY_TEXT.filter(bool)),
        description=draw(TRICKY_TEXT),
        location=draw(TRICKY_TEXT),
        status=draw(st.sampled_from(["CONFIRMED", "TENTATIVE", "CANCELLED"])),
        start=start,
        end=end,
        organizer=draw(st.none() | people),
        attendees=tuple(draw(st.lists(people, max_size=2))),
    )


@settings(max_examples=bounded(1_000), deadline=None)
@given(
    st.lists(events(), max_size=3),
    st.sampled_from(["REQUEST", "CANCEL", "PUBLISH", None]),
    # icalendar fails on a line break in a name (see the test below).
    st.none() | TRICKY.filter(lambda name: not any(c in name for c in "\r\n")),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2050, 1, 1)),
)
def test_plain_text_writing_gives_icalendars_bytes(calendar, method, name, stamp) -> None:
    stamp = stamp.replace(tzinfo=dt.UTC)

    written = calendar_text(calendar, method=method, stamp=stamp, name=name)

    assert written == build_calendar(calendar, method=method, stamp=stamp, name=name).to_ical()


@pytest.mark.parametrize(
    ("line", "folded"),
    [
        ("x" * 74, "x" * 74),
        ("x" * 75, "x" * 74 + "\r\n x"),
        ("x" * 73 + "\\," + "y", "x" * 73 + "\r\n \\,y"),  # an escape stays whole
        ("x" * 73 + "日", "x" * 73 + "\r\n 日"),  # 3 octets do not fit in the 74th
        ("x" * 148 + "z", "x" * 74 + "\r\n " + "x" * 74 + "\r\n z"),
    ],
)
def test_fold_keeps_lines_within_75_octets(line, folded) -> None:
    assert fold(line) == folded


def test_an_event_text_holds_a_stamp_mark_and_no_stamp() -> None:
    text = event_text(booked(at("Asia/Tokyo", dt.date(2026, 3, 9))), rsvp=True)

    assert text.count(STAMP_MARK) == 1
    assert "DTSTAMP:" not in text
    assert text.startswith("BEGIN:VEVENT\r\nSUMMARY:") and text.endswith("END:VEVENT\r\n")


def test_a_calendar_name_is_written_as_icalendar_writes_it_and_a_line_break_is_a_space() -> None:
    head = calendar_text([], method="PUBLISH", stamp=STAMP, name="Clinic; Berlin,\nMitte\\2")

    assert head.decode().splitlines()[4:6] == [
        "NAME:Clinic; Berlin, Mitte\\2",
        "X-WR-CALNAME:Clinic; Berlin, Mitte\\2",
    ]
    assert str(Calendar.from_ical(head)["X-WR-CALNAME"]) == "Clinic; Berlin, Mitte\\2"


def test_a_backslash_before_a_capital_n_is_written_as_typed() -> None:
    """icalendar reads `\\N` in the text it is given as an escaped line break; a site's
    network share `\\\\NAS01\\Neurology` then became three lines in every reader."""
    assert escape_text("Share \\\\NAS01\\Neurology") == "Share \\\\\\\\NAS01\\\\Neurology"


def test_no_control_character_is_written_and_a_paragraph_break_stays_a_line_break() -> None:
    """RFC 5545 3.3.11: TEXT holds no control character but HTAB. Word's line break inside a
    paragraph (U+000B) and page break (U+000C) read as line breaks; the rest go."""
    text = "Building 2\x0bFloor 3\x0cRoom 7\x00\x08\x1b\x7f\tdesk"

    assert escape_text(text) == "Building 2\\nFloor 3\\nRoom 7\tdesk"
    head = calendar_text([], method="PUBLISH", stamp=STAMP, name="Clinic\x0bBerlin\x07")
    assert head.decode().splitlines()[4] == "NAME:Clinic Berlin"
