"""Public holidays as site closures, from the `holidays` package. No Django, no database.

It lives outside `scheduler/engine` because the engine imports the standard library only
(DESIGN.md); it turns a country (ISO 3166-1 alpha-2, as `Site.country`) and an optional
subdivision into the engine's `Closure`s, which `engine.slots.SiteCalendar.closures` takes.

- United States without a subdivision: the federal holidays (what NIH/NIAMS closes on), with
  the observed day when one falls on a weekend ("Independence Day (observed)" on a Friday).
- Japan: the national holidays (国民の祝日) including substitute holidays (振替休日).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable

import holidays

from scheduler.engine.slots import Closure


def public_holidays(
    country: str,
    years: Iterable[int],
    *,
    subdivision: str | None = None,
    language: str | None = None,
) -> tuple[Closure, ...]:
    """The public holidays of a country (and subdivision) in the given years, by date.

    language: the names' language where the package has it ("ja" for Japan, "en_US"); None is
    the package's default (English for the United States and Japan). Two holidays on one day
    share a closure, their names joined by "; ".
    """
    try:
        calendar = holidays.country_holidays(
            country.upper(),
            subdiv=subdivision,
            years=sorted(set(years)),
            language=language,
            categories=("public",),
        )
    except NotImplementedError:
        # A country (or subdivision) the package does not know has no public holidays here:
        # the site's own closures still apply. Site.clean refuses such a site when it is saved
        # through a form, so this is a site stored before that check, or written in code.
        return ()
    return tuple(Closure(day, str(name)) for day, name in sorted(calendar.items()))


def holiday_language(country: str, reader: str | None) -> str | None:
    """The language to name a country's holidays in for a reader of `reader` (a Django
    language code): Japanese for a Japanese reader where the package has Japanese names (Japan
    does), else None, the package's default."""
    if not (reader or "").startswith("ja"):
        return None
    return "ja" if "ja" in _languages_of(country.upper()) else None


@functools.cache
def _languages_of(country: str) -> tuple[str, ...]:
    # Read once a process: every booking page asks.
    try:
        entity = holidays.country_holidays(country)
    except NotImplementedError:
        return ()
    return tuple(getattr(entity, "supported_languages", ()))


def closures_between(
    country: str,
    first: dt.date,
    last: dt.date,
    *,
    subdivision: str | None = None,
    language: str | None = None,
) -> tuple[Closure, ...]:
    """The public holidays from `first` to `last` (both included): what a search needs, e.g.
    a window plus the horizon for deviations."""
    return tuple(
        closure
        for closure in public_holidays(
            country,
            range(first.year, last.year + 1),
            subdivision=subdivision,
            language=language,
        )
        if first <= closure.day <= last
    )
