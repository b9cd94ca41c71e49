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
