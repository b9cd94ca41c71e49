"""Site-local wall time <-> UTC instants, with one stated rule for clock changes. Pure."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def local_to_utc(day: dt.date, at: dt.time, zone: str) -> dt.datetime:
    """The UTC instant of a local date and time in an IANA zone.

    Rule at clock changes (PEP 495, fold=0): a local time that does not exist because the
    clocks jump forward is read with the offset before the jump, i.e. it lands that much later
    (02:30 on the spring-forward night in New York is 03:30 EDT, 07:30Z); a local time that
    happens twice because the clocks fall back is its first occurrence (01:30 on the
    fall-back night in New York is 01:30 EDT, 05:30Z).
    """
    return dt.datetime.combine(day, at.replace(tzinfo=None), tzinfo=ZoneInfo(zone)).astimezone(
        dt.UTC
    )


def local_date_of(instant: dt.datetime, zone: str) -> dt.date:
    """The calendar date at the site when `instant` happens."""
    return instant.astimezone(ZoneInfo(zone)).date()
