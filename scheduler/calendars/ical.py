"""iCalendar (RFC 5545) and iMIP (RFC 6047/5546) building. Pure: no Django, no database.

One VEVENT per visit or milestone, never an RRULE (visits move one by one). Times carry the
site's TZID and every TZID used gets its VTIMEZONE; unbooked visits are all-day, tentative
events spanning their window.
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
    # An aware datetime in the site's zone (a booked visit) or a date (all day).
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
        start=event.start,
        end=event.end,
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
    """A VCALENDAR with one VEVENT per event and a VTIMEZONE for every TZID used.

    `method=None` is for calendar object resources stored on a CalDAV server, which must not
    carry METHOD (RFC 4791 4.1).
    """
    calendar = Calendar.new(prodid=PRODID, method=method, name=name)
    # Calendar.new adds a random calendar UID; the output must be a function of its input
    # (feeds are compared by ETag), and iMIP messages identify events, not calendars.
    calendar.pop("UID", None)
    for event in events:
        calendar.add_component(build_event(event, stamp=stamp, rsvp=method == "REQUEST"))
    if any(isinstance(event.start, dt.datetime) for event in events):
        # Whole years around the events, so every VTIMEZONE states both its standard and its
        # daylight rule rather than a fragment some clients misread.
        first = min(_as_date(event.start) for event in events)
        last = max(_as_date(event.end) for event in events)
        calendar.add_missing_timezones(
            first_date=dt.date(first.year - 1, 1, 1), last_date=dt.date(last.year + 1, 12, 31)
        )
    if events:
        # RFC 5545 wants at least one component; a feed with nothing to show yet (a participant
        # still in screening) is still served, as an empty calendar clients accept.
        calendar.validate()
    return calendar


def _as_date(value: dt.datetime | dt.date) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value
