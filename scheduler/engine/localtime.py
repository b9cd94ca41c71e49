"""Site-local wall time <-> UTC instants, with one stated rule for clock changes. Pure."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from scheduler.engine.types import within_calendar


@within_calendar
def local_to_utc(day: dt.date, at: dt.time, zone: str) -> dt.datetime:
    """The UTC instant of a local date and time in an IANA zone.

    Rule at clock changes (PEP 495, fold=0): a local time that does not exist because the
    clocks jump forward is read with the offset before the jump, i.e. it lands that much later
    (02:30 on the spring-forward night in New York is 03:30 EDT, 07:30Z); a local time that
    happens twice because the clocks fall back is its first occurrence (01:30 on the
    fall-back night in New York is 01:30 EDT, 05:30Z).
    """
    # The fold is a key of its own: times that differ only in it are equal, and hash alike.
    return _local_to_utc(day, at if at.tzinfo is None else at.replace(tzinfo=None), at.fold, zone)


# A cohort's reminder plans ask for the same few hundred (day, time, zone) again and again
# (every participant enrolled on a day has visits on the same days): an answer is a pure
# function of them, and an aware datetime cannot be changed by whoever holds it.
@functools.lru_cache(maxsize=1 << 16)
def _local_to_utc(day: dt.date, at: dt.time, fold: int, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, at.replace(fold=fold), tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)


@within_calendar
def local_date_of(instant: dt.datetime, zone: str) -> dt.date:
    """The calendar date at the site when `instant` happens."""
    return instant.astimezone(ZoneInfo(zone)).date()


@dataclass(frozen=True)
class LocalTimeReading:
    """What a site-local date and time means in its zone, for a person to confirm.

    kind: "normal" (one instant), "nonexistent" (the clocks jumped over it: both offsets give
    an instant that the clock never showed) or "ambiguous" (it happens twice as the clocks go
    back). `candidates` are the UTC instants it could mean, earliest first; `used` is the one
    `local_to_utc` stores (fold=0: the offset before the change).
    """

    kind: str
    used: dt.datetime
    candidates: tuple[dt.datetime, ...]


@within_calendar
def read_local_time(day: dt.date, at: dt.time, zone: str) -> LocalTimeReading:
    """Classify a local date and time in an IANA zone (see `local_to_utc` for the rule)."""
    wall = dt.datetime.combine(day, at.replace(tzinfo=None))
    tz = ZoneInfo(zone)
    first, second = (wall.replace(tzinfo=tz, fold=fold).astimezone(dt.UTC) for fold in (0, 1))
    if first == second:
        return LocalTimeReading("normal", first, (first,))
    shown = first.astimezone(tz).replace(tzinfo=None)
    kind = "ambiguous" if shown == wall else "nonexistent"
    return LocalTimeReading(kind, first, tuple(sorted((first, second))))
