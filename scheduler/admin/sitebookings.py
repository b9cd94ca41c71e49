"""A site's day and week of bookings by resource, and the slot picker.

The site page (`site-bookings/<site id>/`, URL name `admin:scheduler_site_bookings`, wired by
`WorkspaceAdminSite.get_urls` in scheduler/apps.py) shows, for a day or a week of the site's
own calendar, one lane per resource and per staff kind: its hours, the clinic's closures and
holidays with their reason, its out-of-service periods and the holds of booked and done visits
as blocks (who, which visit, from–to on the site's clock). A coordinator sees only the sites
access.py gives them; a booking of a participant they may not read (another trial at the same
site) is busy time without a name. No arm is ever shown: a block names the trial code, the
study id and the visit.

The slot picker (`slot_picker`) is the same board for one week with the visit's window shaded
and a first lane of the visit's free starts, each one click away from the booking preview
(the participant's timeline) or from filling the booking form in (the booking form).

Everything is read by scheduler/booking.py in a fixed number of queries; this module only
lays it out (positions in percent of the day's hours), so the page prints as it shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _

from scheduler import access, audittrail
from scheduler.access import site_today
from scheduler.booking import (
    CalendarBooking,
    CalendarPeriod,
    FreeStarts,
    SiteCalendarData,
    site_calendar_data,
    site_calendar_people,
    visit_free_starts,
)
from scheduler.engine.slots import Hours, StaffShift
from scheduler.models import ScheduledVisit
from trials.models import Site
from trials.protocol_file import EARLIEST_DATE, LATEST_DATE

Span = Literal["day", "week"]
# The axis when the site keeps no hours at all.
DEFAULT_AXIS = (dt.time(8), dt.time(18))


# ----------------------------------------------------------------------------------------
# The board: lanes of cells, one cell a day


@dataclass(frozen=True)
class Block:
    """Something on a lane one day: a hold, an out-of-service period, or a free start."""

    kind: Literal["hold", "out", "free"]
    start: str  # "09:00", site-local
    end: str  # "10:50"; "24:00" for a period that runs past midnight
    title: str  # "NIAMS-ANIFRO N-0001 · V2 – Week 0 · FDGPET"
    left: str  # percent of the day's axis, "12.50"
    width: str
    track: int  # the row inside the lane, so overlapping holds stay readable

    @property
    def text(self) -> str:
        return f"{self.start}–{self.end} {self.title}"


@dataclass(frozen=True)
class Cell:
    day: dt.date
    hours: str  # the lane's hours that day ("08:00–16:00"), empty when closed
    closed: str  # why the site is closed ("Presidents' Day"), else empty
    open_spans: tuple[tuple[str, str], ...]  # (left, width) of the open hours on the axis
    blocks: tuple[Block, ...]
    tracks: int
    shaded: bool = False  # a day of the visit's window (the picker)
    # The picker's free starts that day: (label "09:00", local date, local time).
    starts: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Lane:
    key: str  # "resource-PET/CT 1", "staff-infusion nurse", "free"
    name: str
    detail: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Day:
    day: dt.date
    closed: str
    shaded: bool = False
    is_today: bool = False


@dataclass(frozen=True)
class Board:
    site: Site
    span: Span
    first: dt.date
    last: dt.date
    days: tuple[Day, ...]
    axis: str  # "07:00–18:00": what a lane's width stands for
    ticks: tuple[tuple[str, str], ...]  # (label, left) every two hours
    lanes: tuple[Lane, ...]


def _hhmm(moment: dt.time) -> str:
    return f"{moment:%H:%M}"


def _minutes(moment: dt.time) -> int:
    return moment.hour * 60 + moment.minute


def _intervals(hours: Iterable[Hours], weekday: int) -> list[Hours]:
    return [h for h in hours if h.weekday == weekday]


def _axis(data: SiteCalendarData) -> tuple[int, int]:
    """The hours every lane is drawn across: whole hours around everything that opens."""
    spans: list[Hours | StaffShift] = [
        *data.hours,
        *(h for r in data.resources for h in r.hours),
        *(s for lane in data.staff for s in lane.shifts),
    ]
    if not spans:
        return _minutes(DEFAULT_AXIS[0]), _minutes(DEFAULT_AXIS[1])
    start = min(_minutes(s.start) for s in spans) // 60 * 60
    end = -(-max(_minutes(s.end) for s in spans) // 60) * 60
    return start, min(max(end, start + 60), 24 * 60)


class _Layout:
    """Places local times of one day on the axis, in percent."""

    def __init__(self, zone: ZoneInfo, axis: tuple[int, int]) -> None:
        self.zone = zone
        self.start, self.end = axis

    def span(self, start: int, end: int) -> tuple[str, str] | None:
        start, end = max(start, self.start), min(end, self.end)
        if end <= start:
            return None
        length = self.end - self.start
        return f"{(start - self.start) * 100 / length:.2f}", f"{(end - start) * 100 / length:.2f}"

    def local(self, instant: dt.datetime, day: dt.date) -> int:
        """Minutes of `instant` after the local midnight that starts `day` (clipped to the day)."""
        moment = instant.astimezone(self.zone)
        if moment.date() < day:
            return 0
        if moment.date() > day:
            return 24 * 60
        return moment.hour * 60 + moment.minute


def _tracked(
    items: list[tuple[int, int, Literal["hold", "out", "free"], str]], layout: _Layout
) -> tuple[tuple[Block, ...], int]:
    """Blocks from (start, end, kind, title), each on the first track where it overlaps
    nothing earlier: the lane grows a row for each hold running at the same time."""
    ends: list[int] = []
    blocks = []
    for start, end, kind, title in sorted(items, key=lambda item: (item[0], item[1])):
        track = next((i for i, last in enumerate(ends) if last <= start), len(ends))
        if track == len(ends):
            ends.append(end)
        else:
            ends[track] = end
        where = layout.span(start, end) or (
            ("0.00", "0.00") if start < layout.start else ("100.00", "0.00")
        )
        blocks.append(
            Block(
                kind=kind,
                start=f"{start // 60:02d}:{start % 60:02d}",
                end=f"{end // 60:02d}:{end % 60:02d}",
                title=title,
                left=where[0],
                width=where[1],
                track=track,
            )
        )
    return tuple(blocks), max(len(ends), 1)


def _booking_title(booking: CalendarBooking, readable: set[int] | None) -> str:
    visit = booking.visit
    if readable is None:  # a page that names no one (the booking form's picker)
        return _("booked")
    if visit.participant_id not in readable:
        return _("booked (a participant you do not follow)")
    participant = visit.participant
    count = f" ×{booking.count}" if booking.count > 1 else ""
    return (
        f"{participant.trial.code} {participant.study_id} · {visit.code} – {visit.name} · "
        f"{booking.procedure}{count}"
    )


def _on_day(
    items: Iterable[tuple[dt.datetime, dt.datetime, Literal["hold", "out", "free"], str]],
    day: dt.date,
    layout: _Layout,
) -> list[tuple[int, int, Literal["hold", "out", "free"], str]]:
    placed = []
    for start, end, kind, title in items:
        lo, hi = layout.local(start, day), layout.local(end, day)
        if hi > lo:
            placed.append((lo, hi, kind, title))
    return placed


def _period_title(period: CalendarPeriod) -> str:
    return _("out of service: %(reason)s") % {"reason": period.reason or "—"}


def site_board(
    data: SiteCalendarData,
    *,
    span: Span,
    readable: set[int] | None,
    today: dt.date,
    window: tuple[dt.date, dt.date] | None = None,
    free: FreeStarts | None = None,
) -> Board:
    """The board of `data` (read by `site_calendar_data`, its people loaded by
    `site_calendar_people`): a lane per resource and per staff kind, a cell per day.
    `readable`: the participants whose holds are named (None: nobody's). `window` shades
    the visit's days; `free` adds a first lane of the visit's free starts (the picker)."""
    site = data.site
    zone = ZoneInfo(site.timezone)
    axis = _axis(data)
    layout = _Layout(zone, axis)
    days: list[dt.date] = []
    day = data.first
    while day <= data.last:
        days.append(day)
        day += dt.timedelta(days=1)
    closures: dict[dt.date, list[str]] = {}
    for closure in data.closures:
        closures.setdefault(closure.day, []).append(closure.reason)

    def closed(day: dt.date) -> str:
        if day in closures:
            return "; ".join(closures[day])
        if data.hours and not _intervals(data.hours, day.weekday()):
            return _("no opening hours")
        return ""

    def shaded(day: dt.date) -> bool:
        return window is not None and window[0] <= day <= window[1]

    def cell(
        day: dt.date,
        hours: list[tuple[dt.time, dt.time, str]],
        items: list[tuple[dt.datetime, dt.datetime, Literal["hold", "out", "free"], str]],
        starts: tuple[tuple[str, str, str], ...] = (),
    ) -> Cell:
        why = closed(day)
        blocks, tracks = _tracked(_on_day(items, day, layout), layout)
        spans = (
            ()
            if why
            else tuple(
                s for s in (layout.span(_minutes(a), _minutes(b)) for a, b, _x in hours) if s
            )
        )
        return Cell(
            day=day,
            hours="" if why else ", ".join(f"{_hhmm(a)}–{_hhmm(b)}{x}" for a, b, x in hours),
            closed=why,
            open_spans=spans,
            blocks=blocks,
            tracks=tracks,
            shaded=shaded(day),
            starts=starts,
        )

    lanes: list[Lane] = []
    if free is not None:
        by_day: dict[dt.date, list[tuple[str, str, str]]] = {}
        for slot in free.slots:
            local = slot.start_utc.astimezone(zone)
            by_day.setdefault(local.date(), []).append(
                (f"{local:%H:%M}", local.date().isoformat(), f"{local:%H:%M}")
            )
        lanes.append(
            Lane(
                key="free",
                name=_("Free starts"),
                detail=free.reason,
                cells=tuple(
                    cell(
                        d,
                        [(h.start, h.end, "") for h in _intervals(data.hours, d.weekday())],
                        [],
                        tuple(by_day.get(d, ())),
                    )
                    for d in days
                ),
            )
        )
    for resource in data.resources:
        items = [(p.start, p.end, "out", _period_title(p)) for p in resource.out_of_service] + [
            (b.start, b.end, "hold", _booking_title(b, readable)) for b in resource.bookings
        ]
        own = resource.hours or data.hours
        lanes.append(
            Lane(
                key=f"resource-{resource.name}",
                name=resource.name,
                detail=_("%(kind)s, capacity %(capacity)s")
                % {"kind": resource.kind, "capacity": resource.capacity}
                + ("" if resource.hours else " · " + _("clinic hours")),
                cells=tuple(
                    cell(d, [(h.start, h.end, "") for h in _intervals(own, d.weekday())], items)  # type: ignore[arg-type]
                    for d in days
                ),
            )
        )
    for staff in data.staff:
        items = [(b.start, b.end, "hold", _booking_title(b, readable)) for b in staff.bookings]
        lanes.append(
            Lane(
                key=f"staff-{staff.kind}",
                name=staff.kind,
                detail=_("staff"),
                cells=tuple(
                    cell(
                        d,
                        [
                            (s.start, s.end, f" ×{s.count}")
                            for s in staff.shifts
                            if s.weekday == d.weekday()
                        ],
                        items,  # type: ignore[arg-type]
                    )
                    for d in days
                ),
            )
        )
    start, end = axis
    return Board(
        site=site,
        span=span,
        first=data.first,
        last=data.last,
        days=tuple(Day(d, closed(d), shaded(d), d == today) for d in days),
        axis=f"{start // 60:02d}:{start % 60:02d}–{end // 60:02d}:{end % 60:02d}",
        ticks=tuple(
            (f"{m // 60:02d}:00", f"{(m - start) * 100 / (end - start):.2f}")
            for m in range(start, end, 120)
        ),
        lanes=tuple(lanes),
    )


def readable_participants(user: object, data: SiteCalendarData) -> set[int]:
    """Of the participants holding something in `data`, those `user` may read (one query)."""
    ids = {b.visit.participant_id for lane in (*data.resources, *data.staff) for b in lane.bookings}
    if not ids:
        return set()
    return set(access.participants_for(user).filter(pk__in=ids).values_list("pk", flat=True))


def week_of(day: dt.date) -> tuple[dt.date, dt.date]:
    monday = day - dt.timedelta(days=day.weekday())
    return monday, monday + dt.timedelta(days=6)


class AskedDayRefused(ValueError):
    """The page's ?day= (or ?week=) is not a date, or not one the calendar shows: a 400."""


def _asked_day(request: HttpRequest, default: dt.date) -> dt.date:
    """The day asked for, `default` if none. The dates a protocol file may name bound it
    (as they bound the API's dates): beyond them the week around the day and its instants
    would run off the ends of the calendar (year 1, year 9999), an OverflowError."""
    name = "day" if request.GET.get("day") else "week"
    asked = request.GET.get(name) or ""
    if not asked:
        return default
    try:
        day = dt.date.fromisoformat(asked)
    except ValueError:
        reason = _("“%(day)s” is not a date (YYYY-MM-DD)") % {"day": asked}
        raise AskedDayRefused(f"{name}: {reason}") from None
    if day < EARLIEST_DATE:
        reason = _("Enter a date on or after %(limit_value)s.") % {"limit_value": EARLIEST_DATE}
        raise AskedDayRefused(f"{name}: {reason}")
    if day > LATEST_DATE:
        reason = _("Enter a date on or before %(limit_value)s.") % {"limit_value": LATEST_DATE}
        raise AskedDayRefused(f"{name}: {reason}")
    return day


# ----------------------------------------------------------------------------------------
# The site page


def site_bookings_url(site: Site, *, day: dt.date | None = None, span: Span = "week") -> str:
    query = {"span": span, **({"day": day.isoformat()} if day else {})}
    return f"{reverse('admin:scheduler_site_bookings', args=[site.pk])}?{urlencode(query)}"


def site_bookings_view(admin_site: AdminSite, request: HttpRequest, site_id: int) -> HttpResponse:
    """A site's day or week of bookings by resource; another site is a 404."""
    site = get_object_or_404(access.sites_for(request.user), pk=site_id)
    today = site_today(site)
    span: Span = "day" if request.GET.get("span") == "day" else "week"
    try:
        day = _asked_day(request, today)
    except AskedDayRefused as refusal:
        # Plain text naming the parameter, like the language switch's 400 (scheduler/views.py).
        return HttpResponseBadRequest(f"{refusal}\n", content_type="text/plain; charset=utf-8")
    first, last = (day, day) if span == "day" else week_of(day)
    data = site_calendar_data(site, first, last)
    site_calendar_people(data)
    readable = readable_participants(request.user, data)
    board = site_board(data, span=span, readable=readable, today=today)
    # The board names these participants with their visits and times: each is a read of
    # their record (another trial's bookings show only as busy and are not).
    audittrail.record_views(
        request,
        participant_ids=readable,
        surface="admin",
        page="site bookings",
        site=site.code,
        first=first.isoformat(),
        last=last.isoformat(),
    )
    step = dt.timedelta(days=1 if span == "day" else 7)
    title = (
        _("%(site)s: bookings on %(day)s")
        if span == "day"
        else _("%(site)s: bookings in the week of %(day)s")
    ) % {"site": site.name, "day": first.isoformat()}
    context = {
        **admin_site.each_context(request),
        "is_nav_sidebar_enabled": False,
        "title": title,
        "site": site,
        "board": board,
        "zone": site.timezone,
        "today": today,
        "previous_url": site_bookings_url(site, day=day - step, span=span),
        "next_url": site_bookings_url(site, day=day + step, span=span),
        "today_url": site_bookings_url(site, day=today, span=span),
        "day_url": site_bookings_url(site, day=day, span="day"),
        "week_url": site_bookings_url(site, day=day, span="week"),
        "day_links": {d.day: site_bookings_url(site, day=d.day, span="day") for d in board.days},
        "site_url": reverse("admin:trials_site_change", args=[site.pk]),
    }
    request.current_app = admin_site.name
    return TemplateResponse(request, "admin/sitebookings/site.html", context)


def site_bookings_urls(admin_site: AdminSite) -> list[URLPattern]:
    def view(request: HttpRequest, site_id: int) -> HttpResponse:
        return site_bookings_view(admin_site, request, site_id)

    return [
        path(
            "site-bookings/<int:site_id>/",
            admin_site.admin_view(view),
            name="scheduler_site_bookings",
        )
    ]


# ----------------------------------------------------------------------------------------
# The slot picker


@dataclass(frozen=True)
class Picker:
    visit: ScheduledVisit
    board: Board
    free: FreeStarts
    previous_week: dt.date | None
    next_week: dt.date | None
    zone: str
    # The participants whose holds the board names (the user reads them): each is a read.
    named: frozenset[int] = frozenset()


def picker_week(visit: ScheduledVisit, today: dt.date, asked: dt.date | None) -> dt.date:
    """The Monday of the week the picker shows: the asked one, else the target's while it is
    ahead, else today's (inside the window)."""
    if asked is not None:
        return week_of(asked)[0]
    day = visit.target_date if visit.target_date >= today else today
    return week_of(min(max(day, visit.window_start), visit.window_end))[0]


def slot_picker(
    visit: ScheduledVisit, *, user: object | None, week: dt.date, now: dt.datetime
) -> Picker:
    """The week from `week` (a Monday) of the visit's site, its window shaded and its free
    starts as the first lane; the weeks before and after while they meet the window. Holds
    are named for `user`'s participants; without a user, none is named."""
    site = visit.participant.site
    first, last = week_of(week)
    data = site_calendar_data(site, first, last)
    if user is not None:
        site_calendar_people(data)
    free = visit_free_starts(visit, first=first, last=last, now=now)
    named = None if user is None else readable_participants(user, data)
    board = site_board(
        data,
        span="week",
        readable=named,
        today=site_today(site),
        window=(visit.window_start, visit.window_end),
        free=free,
    )
    return Picker(
        visit=visit,
        board=board,
        free=free,
        previous_week=first - dt.timedelta(days=7) if first > visit.window_start else None,
        next_week=last + dt.timedelta(days=1) if last < visit.window_end else None,
        zone=site.timezone,
        named=frozenset(named or ()),
    )
