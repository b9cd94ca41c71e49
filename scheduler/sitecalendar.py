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
    calendar = holidays.country_holidays(
        country.upper(),
        subdiv=subdivision,
        years=sorted(set(years)),
        language=language,
        categories=("public",),
    )
    return tuple(Closure(day, str(name)) for day, name in sorted(calendar.items()))


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
