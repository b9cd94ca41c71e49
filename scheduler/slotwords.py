"""The slot finder's findings in the reader's words and language (English or Japanese).

The engine (scheduler.engine.slots) is pure and says why a window has no slot as structured
`Obstacle`s (kind, subject, days) with an English sentence for its own tests and logs. Every
face and service that shows a person why a visit cannot be placed words it here instead, in
the active language (the admin follows each user's choice, the API the Accept-Language
header): "closed on 3 Feb (building move)" / 「2月3日は休診(building move)」.

Names from outside the product stay as they come: a closure's reason typed by the site, a
resource kind as the site spells it, a holiday's name as the `holidays` package gives it in
the language asked for (booking.site_calendar asks for Japanese names for a Japanese reader
where the country has them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from scheduler.display import JAPANESE_WEEKDAYS
from scheduler.engine.slots import MONTHS, Obstacle, Slot, SlotSearch


def _japanese() -> bool:
    return (translation.get_language() or "").startswith("ja")


def days_words(days: Iterable[dt.date]) -> str:
    """'25 Nov', '25 and 27 Nov', '30 Nov, 1 and 2 Dec'; '11月25日、27日' in Japanese."""
    ordered = sorted(set(days))
    if not ordered:
        return ""
    if _japanese():
        items = []
        for index, day in enumerate(ordered):
            previous = ordered[index - 1] if index else None
            same_month = previous is not None and (previous.year, previous.month) == (
                day.year,
                day.month,
            )
            items.append(f"{day.day}日" if same_month else f"{day.month}月{day.day}日")
        return "、".join(items)
    items = []
    for index, day in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        same_month = following is not None and (following.year, following.month) == (
            day.year,
            day.month,
        )
        items.append(str(day.day) if same_month else f"{day.day} {MONTHS[day.month - 1]}")
    return f"{', '.join(items[:-1])} and {items[-1]}" if len(items) > 1 else items[0]


def _closure_reason(subject: str) -> str:
    # The engine's own two words are translated; a site's or a holiday's name is kept.
    return {"weekend": _("weekend"), "no opening hours": _("no opening hours")}.get(
        subject, subject
    )


def obstacle_words(obstacle: Obstacle) -> str:
    """One obstacle as a coordinator reads it: 'scanner full on 3 and 4 Feb'."""
    days = days_words(obstacle.days)
    kind = obstacle.subject
    if obstacle.kind == "missing":
        return _("the site has no %(kind)s") % {"kind": kind}
    if obstacle.kind == "closed":
        return _("closed on %(days)s (%(reason)s)") % {
            "days": days,
            "reason": _closure_reason(kind),
        }
    if obstacle.kind == "past":
        return _("too late to book on %(days)s") % {"days": days}
    if obstacle.kind == "short":
        return _("opening hours too short for the %(minutes)s-minute visit on %(days)s") % {
            "minutes": obstacle.minutes,
            "days": days,
        }
    if obstacle.kind == "unavailable":
        text = _("%(kind)s unavailable at the needed times on %(days)s") % {
            "kind": kind,
            "days": days,
        }
        if obstacle.out_of_service:
            reasons = "; ".join(r or _("no reason given") for r in obstacle.out_of_service)
            text += _(" (out of service: %(reasons)s)") % {"reasons": reasons}
        return text
    # "full": a resource whose bookings leave no room, or staff of a kind none of whom is free
    if obstacle.text.startswith("no "):
        return _("no %(kind)s free on %(days)s") % {"kind": kind, "days": days}
    return _("%(kind)s full on %(days)s") % {"kind": kind, "days": days}


def obstacles_words(obstacles: Sequence[Obstacle]) -> str:
    return "; ".join(obstacle_words(o) for o in obstacles)


def window_words(window_start: dt.date, window_end: dt.date) -> str:
    if window_start == window_end:
        return _("window %(day)s") % {"day": window_start.isoformat()}
    return _("window %(start)s to %(end)s") % {
        "start": window_start.isoformat(),
        "end": window_end.isoformat(),
    }


def search_words(
    search: SlotSearch,
    window_start: dt.date,
    window_end: dt.date,
    *,
    horizon_days: int = 14,
) -> str:
    """Why nothing fits inside the window ('' when something does), like the engine's
    `SlotSearch.reason` but in the reader's language."""
    if search.slots:
        return ""
    text = f"{window_words(window_start, window_end)}: {obstacles_words(search.obstacles)}"
    if not search.deviations and not any(o.kind == "missing" for o in search.obstacles):
        text += _("; nothing fits within %(days)s days either side of it either") % {
            "days": horizon_days
        }
    return text


def slot_words(slot: Slot, zone: str) -> str:
    """'Tue 2026-02-03 09:45 EST (2 days after the window)', on the site's clock."""
    local = slot.start_utc.astimezone(ZoneInfo(zone))
    if _japanese():
        when = f"{local:%Y-%m-%d}({JAPANESE_WEEKDAYS[local.weekday()]}) {local:%H:%M %Z}"
    else:
        when = f"{local:%a %Y-%m-%d %H:%M %Z}"
    if not slot.days_out:
        return when
    days = abs(slot.days_out)
    side = (
        ngettext("%(days)d day before the window", "%(days)d days before the window", days)
        if slot.days_out < 0
        else ngettext("%(days)d day after the window", "%(days)d days after the window", days)
    )
    return f"{when} ({side % {'days': days}})"


def nearest_words(search: SlotSearch, zone: str, window_start: dt.date, window_end: dt.date) -> str:
    """The nearest feasible starts, or why there are none and the nearest outside the window."""
    if search.slots:
        return _("Nearest feasible starts: %(starts)s") % {
            "starts": ", ".join(slot_words(s, zone) for s in search.slots)
        }
    why = search_words(search, window_start, window_end)
    if search.deviations:
        return _(
            "Nothing fits inside the window (%(why)s); nearest starts outside it: %(starts)s"
        ) % {
            "why": why,
            "starts": ", ".join(slot_words(s, zone) for s in search.deviations),
        }
    return _("Nothing fits near the window either (%(why)s)") % {"why": why}
