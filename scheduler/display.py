"""How instants read to the people of a site: on the site's clock, with its zone's abbreviation.

Instants (a booking, a reminder's moment, an audit entry) are stored in UTC; the server's zone
is UTC too, so anything Django renders by itself reads "12:30 a.m." for a Tokyo booking at
09:30. Every face shows an instant through `site_time` (or `zone_time` when only the zone is at
hand), one format everywhere: "Tue 8 Dec 2026 09:30 JST" ("2026年12月8日(火) 09:30 JST" for a
Japanese reader). Dates (visit days, windows) are already the site's and are shown as they are.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.utils import translation

from scheduler.engine.localtime import LocalTimeReading
from trials.models import Site

EMPTY = "—"


# Monday first, as `datetime.weekday()` counts.
JAPANESE_WEEKDAYS = "月火水木金土日"


def _clock(instant: dt.datetime) -> str:
    # A Japanese reader (the admin follows each user's language) reads the date the Japanese
    # way; the time and the zone's abbreviation are the same for everyone.
    if (translation.get_language() or "").startswith("ja"):
        weekday = JAPANESE_WEEKDAYS[instant.weekday()]
        return f"{instant.year}年{instant.month}月{instant.day}日({weekday}) {instant:%H:%M %Z}"
    return f"{instant:%a} {instant.day} {instant:%b %Y %H:%M %Z}"


def zone_time(instant: dt.datetime | None, zone: str) -> str:
    """An instant on an IANA zone's clock: 'Tue 8 Dec 2026 09:30 JST'."""
    if instant is None:
        return EMPTY
    return _clock(instant.astimezone(ZoneInfo(zone)))


def site_time(instant: dt.datetime | None, site: Site) -> str:
    """An instant on the site's clock: 'Tue 8 Dec 2026 09:30 JST'."""
    return zone_time(instant, site.timezone)


def utc_time(instant: dt.datetime | None) -> str:
    """The same instant in UTC, for a coordinator checking what is stored."""
    if instant is None:
        return EMPTY
    return _clock(instant.astimezone(dt.UTC))


def clock_change_text(reading: LocalTimeReading, day: dt.date, at: dt.time, zone: str) -> str:
    """A booking's local time that the clocks skip or repeat, in plain words, with the instant
    that will be stored; empty for an ordinary time."""
    if reading.kind == "normal":
        return ""
    tz = ZoneInfo(zone)
    used = reading.used.astimezone(tz)
    typed = f"{at:%H:%M}"
    on = f"{day.day} {day:%B %Y}"
    stored = f"{used:%H:%M %Z} ({reading.used.astimezone(dt.UTC):%H:%M} UTC)"
    if reading.kind == "nonexistent":
        return (
            f"{typed} does not exist on {on} in {zone} (clocks go forward); "
            f"the visit will be booked for {stored}"
        )
    return (
        f"{typed} happens twice on {on} in {zone} (clocks go back); "
        f"the first, {stored}, will be used"
    )
