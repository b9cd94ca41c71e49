"""iCalendar (RFC 5545) and iMIP (RFC 6047/5546) building. Pure: no Django, no database.

One VEVENT per visit or milestone, never an RRULE (visits move one by one). Unbooked visits
and milestones are all-day DATE values spanning their days, in no time zone.

A booked time is a UTC instant (`DTSTART:20270315T130000Z`), with no TZID and no VTIMEZONE.
A TZID is only as right as the VTIMEZONE sent with it, and readers disagree about VTIMEZONEs:
the ones icalendar's `add_missing_timezones()` writes (onsets as one RDATE list, daylight onsets
in the new wall time) make Thunderbird's ical.js and vobject stay in standard time once a feed
spans more than a year, so a New York visit on 2027-03-15 at 09:00 read 14:00Z, not 13:00Z.
Yearly RRULEs would suit New York, but cannot say Casablanca's Ramadan changes or a rule that
was abolished (Tehran 2022) or rewritten (Mexico City 2022) inside a feed's span, so those
zones would be back to RDATE lists. What a TZID buys is recurrence across clock changes and a
wall time that survives a later rule change; our events never recur, and what we store is the
instant (`booked_start`, UTC), so a UTC event says exactly what the database holds. Every reader
agrees on UTC, clients show it in the viewer's own zone, and the description still gives the
day, the time and the site's zone in words. `tests/calendars/test_readers.py` reads every kind
of calendar the product writes with icalendar, vobject, `ics` and ical.js, for sites in zones
chosen to be hard, and checks every start and end against zoneinfo.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.utils import formataddr
from typing import Literal

from icalendar import Calendar, Event, vCalAddress, vText
from icalendar.enums import STATUS

PRODID = "-//Trial visit scheduler//EN"
Method = Literal["REQUEST", "CANCEL", "PUBLISH"]
Status = Literal["CONFIRMED", "TENTATIVE", "CANCELLED"]


@dataclass(frozen=True)
class Person:
    email: str
    name: str = ""

    def address(self) -> vCalAddress:
        address = vCalAddress(f"mailto:{self.email}")
        if self.name:
            address.params["CN"] = vText(self.name)
        return address

    def header(self) -> str:
        return formataddr((self.name, self.email))


@dataclass(frozen=True)
class CalendarEvent:
    uid: str
    sequence: int
    summary: str
    description: str
    location: str
    status: Status
    # An aware datetime, in any zone (a booked visit; written in UTC), or a date (all day).
    start: dt.datetime | dt.date
    # Exclusive: for all-day events the day after the last day.
    end: dt.datetime | dt.date
    organizer: Person | None = None
    attendees: tuple[Person, ...] = ()
    last_modified: dt.datetime | None = None


def build_event(event: CalendarEvent, *, stamp: dt.datetime, rsvp: bool) -> Event:
    component = Event.new(
        uid=event.uid,
        sequence=event.sequence,
        stamp=stamp,
        start=_on_the_time_line(event.start),
        end=_on_the_time_line(event.end),
        summary=event.summary,
        description=event.description or None,
        location=event.location or None,
        status=STATUS(event.status),
        last_modified=event.last_modified,
    )
    if not isinstance(event.start, dt.datetime):
        # A window to book in, not a time the participant is busy.
        component.add("transp", "TRANSPARENT")
    if event.organizer is not None:
        component["organizer"] = event.organizer.address()
    for person in event.attendees:
        attendee = person.address()
        attendee.params["ROLE"] = vText("REQ-PARTICIPANT")
        attendee.params["PARTSTAT"] = vText("NEEDS-ACTION")
        if rsvp:
            attendee.params["RSVP"] = vText("TRUE")
        component.add("attendee", attendee, encode=False)
    return component


def build_calendar(
    events: list[CalendarEvent],
    *,
    method: Method | None,
    stamp: dt.datetime,
    name: str | None = None,
) -> Calendar:
    """A VCALENDAR with one VEVENT per event: times in UTC, all-day events as dates.

    `method=None` is for calendar object resources stored on a CalDAV server, which must not
    carry METHOD (RFC 4791 4.1).
    """
    calendar = Calendar.new(prodid=PRODID, method=method, name=name)
    # Calendar.new adds a random calendar UID; the output must be a function of its input
    # (feeds are compared by ETag), and iMIP messages identify events, not calendars.
    calendar.pop("UID", None)
    for event in events:
        calendar.add_component(build_event(event, stamp=stamp, rsvp=method == "REQUEST"))
    if events:
        # RFC 5545 wants at least one component; a feed with nothing to show yet (a participant
        # still in screening) is still served, as an empty calendar clients accept.
        calendar.validate()
    return calendar


def _on_the_time_line(value: dt.datetime | dt.date) -> dt.datetime | dt.date:
    """A datetime as its UTC instant (see the module docstring); a date as it is."""
    if not isinstance(value, dt.datetime):
        return value
    if value.utcoffset() is None:
        # A naive datetime would be written as floating time, read in each viewer's own zone;
        # converting it would silently take the server's zone instead.
        raise ValueError(f"{value.isoformat()} has no time zone: event times must be aware")
    return value.astimezone(dt.UTC)


# Plain-text writing, byte for byte what `build_calendar(...).to_ical()` writes for the same
# events (tests/calendars/test_ical.py compares the two on every kind of value), at a fraction
# of the cost: feeds hold thousands of events. A VEVENT is written with a stamp mark in place
# of its DTSTAMP line, so its text can be kept (scheduler/calendars/rendered.py) and stamped
# when a calendar is assembled: the mark is not a content line (no colon), and a folded line's
# continuation starts with a space, so it cannot occur anywhere else in a calendar.
STAMP_MARK = "\r\nDTSTAMP\r\n"
FOLD_LIMIT = 75  # icalendar's: a line holds at most 74 octets, and a continuation a space more
# An escape is never split from what it escapes (icalendar #1501): a backslash or caret.
_FOLD_KEEP_WITH_NEXT = b"\\^"
_PARAM_QUOTABLE = ",;:’"  # noqa: RUF001 - icalendar quotes a parameter value holding these
_CN_QUOTABLE = " '"  # and a CN holding these


# Control characters RFC 5545 allows in no value (3.3.11: TEXT holds none but HTAB; 3.2:
# nor does a parameter value). A line break inside a paragraph (Word writes Shift+Enter as
# U+000B, a page break as U+000C) stays a line break; the rest are dropped. A reader that
# meets one refuses the whole calendar (the `ics` library does).
_PRINTABLE: dict[int, str | None] = {
    **dict.fromkeys([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F]),
    **dict.fromkeys([0x0B, 0x0C, 0x1C, 0x1D, 0x1E], "\n"),
}


def _printable(text: str) -> str:
    """`text` without the control characters no iCalendar value may hold."""
    return text.translate(_PRINTABLE)


def escape_text(text: str) -> str:
    """A TEXT value (RFC 5545 3.3.11), escaped as icalendar escapes it, except two things
    icalendar gets wrong: a backslash followed by N is kept as typed (icalendar reads the two
    characters as an escaped line break first, so `\\\\NAS01\\Neurology` became three
    lines), and control characters are not written (see `_printable`)."""
    return (
        _printable(text)
        .replace("\\", "\\\\")
        .replace(";", r"\;")
        .replace(",", r"\,")
        .replace("\r\n", r"\n")
        .replace("\n", r"\n")
        .replace("\r", r"\n")
    )


def fold(line: str) -> str:
    """One content line folded as icalendar folds it: at most 74 octets a line (UTF-8 never
    split inside a character), each continuation after CRLF and a space."""
    if len(line) < FOLD_LIMIT // 4 or (len(line) < FOLD_LIMIT and line.isascii()):
        return line
    data = line.encode()
    size = len(data)
    if size < FOLD_LIMIT:
        return line
    parts = []
    start = 0
    while size - start >= FOLD_LIMIT:
        end = start + FOLD_LIMIT - 1
        while 0x80 <= data[end] < 0xC0:  # inside a character: fold before it
            end -= 1
        if data[end - 1] in _FOLD_KEEP_WITH_NEXT and end - 1 > start:
            end -= 1
        parts.append(data[start:end])
        start = end
    parts.append(data[start:])
    return b"\r\n ".join(parts).decode()


def _param(value: str, *, quote_also: str = "") -> str:
    """A parameter value as icalendar writes it: RFC 6868 escapes, then quoted when it holds
    ',', ';', ':' or '’', or (before escaping) one of `quote_also`."""
    quoted = any(char in value for char in quote_also)
    value = (
        _printable(value)
        .replace("^", "^^")
        .replace("\r\n", "^n")
        .replace("\r", "^n")
        .replace("\n", "^n")
        .replace('"', "^'")
    )
    quoted = quoted or any(char in _PARAM_QUOTABLE for char in value)
    return f'"{value}"' if quoted else value


def _moment(value: dt.datetime | dt.date) -> str:
    """';VALUE=DATE:20270315' for a day, ':20270315T130000Z' for an instant (in UTC)."""
    value = _on_the_time_line(value)
    if isinstance(value, dt.datetime):
        return f":{value:%Y%m%dT%H%M%S}Z"
    return f";VALUE=DATE:{value:%Y%m%d}"


def _address(name: str, person: Person, extra: str = "") -> str:
    cn = f";CN={_param(person.name, quote_also=_CN_QUOTABLE)}" if person.name else ""
    return fold(f"{name}{cn}{extra}:mailto:{person.email}")


def event_text(event: CalendarEvent, *, rsvp: bool) -> str:
    """One VEVENT, CRLF-terminated, with STAMP_MARK for its DTSTAMP line (see `stamp_text`).

    Properties in icalendar's order: SUMMARY, DTSTART, DTEND, DTSTAMP, UID, SEQUENCE, then the
    rest alphabetically.
    """
    lines = [
        "BEGIN:VEVENT",
        fold(f"SUMMARY:{escape_text(event.summary)}"),
        fold(f"DTSTART{_moment(event.start)}"),
        fold(f"DTEND{_moment(event.end)}") + STAMP_MARK[:-2],
        fold(f"UID:{escape_text(event.uid)}"),
        f"SEQUENCE:{int(event.sequence)}",
    ]
    attendee_params = ";PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT" + (";RSVP=TRUE" if rsvp else "")
    lines += [_address("ATTENDEE", person, attendee_params) for person in event.attendees]
    if event.description:
        lines.append(fold(f"DESCRIPTION:{escape_text(event.description)}"))
    if event.last_modified is not None:
        lines.append(f"LAST-MODIFIED{_moment(event.last_modified)}")
    if event.location:
        lines.append(fold(f"LOCATION:{escape_text(event.location)}"))
    if event.organizer is not None:
        lines.append(_address("ORGANIZER", event.organizer))
    lines.append(f"STATUS:{event.status}")
    if not isinstance(event.start, dt.datetime):
        lines.append("TRANSP:TRANSPARENT")
    lines.append("END:VEVENT\r\n")
    return "\r\n".join(lines)


def stamp_text(text: str, stamp: dt.datetime) -> str:
    """Event texts with their DTSTAMP: the moment the calendar holding them is written (RFC 5545
    3.8.7.2, for a calendar with a METHOD), in UTC."""
    return text.replace(STAMP_MARK, f"\r\nDTSTAMP{_moment(stamp)}\r\n")


def calendar_head(*, method: Method | None, name: str | None = None) -> str:
    """What comes before the events: BEGIN:VCALENDAR and the calendar's own properties."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", fold(f"PRODID:{escape_text(PRODID)}")]
    if method is not None:
        lines.append(f"METHOD:{method}")
    if name is not None:
        # As icalendar writes them: unescaped, which is how icalendar and ical.js read them
        # (escaped, both showed the backslashes; vobject, Radicale's parser, reads a name with
        # a comma only up to it either way). A line break, which icalendar refuses in a name,
        # is a space; other control characters are dropped.
        name = " ".join(_printable(name).splitlines())
        lines += [fold(f"NAME:{name}"), fold(f"X-WR-CALNAME:{name}")]
    return "\r\n".join(lines) + "\r\n"


CALENDAR_TAIL = "END:VCALENDAR\r\n"


def calendar_text(
    events: list[CalendarEvent],
    *,
    method: Method | None,
    stamp: dt.datetime,
    name: str | None = None,
) -> bytes:
    """`build_calendar(...).to_ical()`'s bytes, written as plain text."""
    body = "".join(event_text(event, rsvp=method == "REQUEST") for event in events)
    return (
        calendar_head(method=method, name=name) + stamp_text(body, stamp) + CALENDAR_TAIL
    ).encode()
