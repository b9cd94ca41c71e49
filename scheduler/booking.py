"""Reads for booking inside the day: a site's calendar, a visit's plan, what is already held.

Selectors (no writes): they turn the database's site calendar (trials.models: opening hours,
closures, resources with their hours and out-of-service periods, staff shifts) plus the public
holidays of the site's country and subdivision (`sitecalendar.closures_between`) into the slot
finder's `SiteCalendar`, a stored visit plan into its `VisitPlan`, and the holds of booked
visits into its `Hold`s. scheduler.services books with them; faces may show them.

- Opening hours, resource hours and shifts are the site's wall clock, in its IANA zone;
  out-of-service periods and holds are instants (UTC).
- A protocol names resource kinds in its own spelling ("Infusion chair"); a site's kind
  ("infusion chair") matches it whatever the letter case, and the site's spelling is used.
- A plan step whose procedure the visit does not carry at this occurrence is left out (the
  step after it then follows the one before it, and a first step starts the visit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from scheduler.engine.slots import (
    Closure,
    Hold,
    Hours,
    Need,
    OutOfService,
    Resource,
    SiteCalendar,
    StaffShift,
    Step,
    VisitPlan,
    find_slots,
    index_holds,
)
from scheduler.models import BookingHold, ScheduledVisit
from scheduler.sitecalendar import closures_between
from trials.models import (
    ProcedureDefinition,
    ResourceOutOfService,
    Site,
    SiteClosure,
    SiteHours,
    SiteResource,
)
from trials.models import StaffShift as StaffShiftRow

# Holds longer than this are not expected (a visit lasts at most a day); reading holds that
# start this long before a range is enough to find every hold that overlaps it.
LONGEST_HOLD = dt.timedelta(days=1)


def site_calendar(site: Site, first: dt.date, last: dt.date) -> SiteCalendar:
    """The slot finder's calendar of `site` for the local dates `first` to `last`, in six
    queries whatever the number of resources: hours, closures, resources (with their hours
    prefetched), out-of-service periods, staff shifts."""
    hours = tuple(
        Hours(h.weekday, h.start, h.end)
        for h in SiteHours.objects.filter(site=site).order_by("weekday", "start", "end")
    )
    manual = [
        Closure(c.date, c.reason)
        for c in SiteClosure.objects.filter(site=site, date__range=(first, last)).order_by("date")
    ]
    public = closures_between(site.country, first, last, subdivision=site.subdivision or None)
    closures = tuple(sorted([*manual, *public], key=lambda c: (c.day, c.reason)))
    resources = list(
        SiteResource.objects.filter(site=site).prefetch_related("hours").order_by("kind", "name")
    )
    periods: dict[int, list[OutOfService]] = {}
    start = dt.datetime.combine(first - dt.timedelta(days=1), dt.time(0), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=2), dt.time(0), dt.UTC)
    for period in ResourceOutOfService.objects.filter(
        resource__site=site, end__gt=start, start__lt=end
    ).order_by("start"):
        periods.setdefault(period.resource_id, []).append(
            OutOfService(period.start, period.end, period.reason)
        )
    staff = tuple(
        StaffShift(s.kind, s.weekday, s.start, s.end, s.count)
        for s in StaffShiftRow.objects.filter(site=site).order_by("kind", "weekday", "start")
    )
    return SiteCalendar(
        timezone=site.timezone,
        hours=hours,
        closures=closures,
        resources=tuple(
            Resource(
                kind=r.kind,
                name=r.name,
                capacity=r.capacity,
                hours=tuple(
                    Hours(h.weekday, h.start, h.end)
                    for h in sorted(r.hours.all(), key=lambda h: (h.weekday, h.start))
                )
                or None,
                out_of_service=tuple(periods.get(r.pk, ())),
            )
            for r in resources
        ),
        staff=staff,
    )


def _site_kind(kind: str, known: Iterable[str]) -> str:
    folded = kind.casefold()
    return next((k for k in known if k.casefold() == folded), kind)


def visit_plan(visit: ScheduledVisit, calendar: SiteCalendar | None = None) -> VisitPlan | None:
    """The plan of a scheduled visit (its definition's, for the procedures it carries), or None
    when its definition has none. With `calendar`, kinds take the site's spelling."""
    definition = visit.visit_definition
    if definition is None or definition.plan is None:
        return None
    carried = set(visit.procedures.values_list("procedure__code", flat=True))
    by_code = {
        p.code: p
        for p in ProcedureDefinition.objects.filter(
            version_id=definition.version_id, code__in=[row["procedure"] for row in definition.plan]
        )
    }
    resource_kinds = {r.kind for r in calendar.resources} if calendar else set()
    staff_kinds = {s.kind for s in calendar.staff} if calendar else set()
    steps: list[Step] = []
    for row in definition.plan:
        procedure = by_code.get(row["procedure"])
        if procedure is None or procedure.code not in carried:
            continue
        relation: Literal["after", "with", "overlap"] = (
            row.get("relation", "after") if steps else "after"
        )
        resources = (
            (Need(_site_kind(procedure.resource, resource_kinds), procedure.resource_count),)
            if procedure.resource
            else ()
        )
        staff = (
            (Need(_site_kind(procedure.staff_kind, staff_kinds), procedure.staff_count),)
            if procedure.staff_kind
            else ()
        )
        overlap = row.get("overlap_minutes", 0) if relation == "overlap" else 0
        if relation == "overlap" and steps:
            overlap = min(overlap, steps[-1].minutes)
        steps.append(
            Step(
                procedure.code,
                procedure.duration_minutes,
                resources=resources,
                staff=staff,
                relation=relation,
                overlap_minutes=overlap,
            )
        )
    if not steps:
        return None
    return VisitPlan(
        visit=f"{visit.code} ({definition.name})",
        steps=tuple(steps),
        max_minutes=definition.duration_minutes,
    )


def site_holds(
    site: Site, first: dt.date, last: dt.date, *, excluding: ScheduledVisit | None = None
) -> list[Hold]:
    """The holds of the site's booked visits around the local dates `first` to `last` (one
    query), except those of `excluding` (the visit being moved)."""
    start = dt.datetime.combine(first, dt.time(0), dt.UTC) - LONGEST_HOLD * 2
    end = dt.datetime.combine(last, dt.time(0), dt.UTC) + LONGEST_HOLD * 2
    # Only booked and done visits hold anything: a visit cancelled or missed by any path (an
    # amendment's re-plan included) never blocks a resource, even if its rows were left.
    rows = BookingHold.objects.filter(
        visit__participant__site=site,
        visit__status__in=(ScheduledVisit.Status.BOOKED, ScheduledVisit.Status.DONE),
        end__gt=start,
        start__lt=end,
    ).select_related("resource")
    if excluding is not None:
        rows = rows.exclude(visit=excluding)
    return [
        Hold(
            resource=row.resource.name if row.resource is not None else row.staff_kind,
            start=row.start,
            end=row.end,
            count=row.count,
            kind=row.resource.kind if row.resource is not None else row.staff_kind,
            procedure=row.procedure,
            staff=row.resource is None,
        )
        for row in rows.order_by("start", "id")
    ]


# ----------------------------------------------------------------------------------------
# The site's calendar beside a booking form

# A window longer than this is shown around its target (a 52-week visit has ±7 days at most).
CALENDAR_DAYS_MAX = 21


@dataclass(frozen=True)
class CalendarDay:
    """One site-local day of a visit's window, as the booking form shows it."""

    day: dt.date
    is_target: bool
    hours: str  # "08:00–16:00", several intervals joined; empty when closed
    closed: str  # why the site is closed that day ("Thanksgiving Day", "no opening hours")
    booked: tuple[str, ...]  # "09:00–10:50 PET/CT scanner", on the site's clock


@dataclass(frozen=True)
class BookingCalendar:
    days: tuple[CalendarDay, ...]
    # The first feasible starts inside the window (one a day), or why there is none.
    suggestions: tuple[dt.datetime, ...]
    reason: str


def booking_calendar(visit: ScheduledVisit, *, now: dt.datetime) -> BookingCalendar | None:
    """The site's days across the visit's window, its bookings by resource and the first
    feasible starts, for the booking form; None when the site keeps no calendar here."""
    site = visit.participant.site
    first, last = visit.window_start, visit.window_end
    if (last - first).days >= CALENDAR_DAYS_MAX:
        half = dt.timedelta(days=CALENDAR_DAYS_MAX // 2)
        first, last = max(first, visit.target_date - half), min(last, visit.target_date + half)
    calendar = site_calendar(site, first, last)
    if not calendar.hours and not calendar.resources:
        return None
    zone = ZoneInfo(site.timezone)
    holds = site_holds(site, first, last, excluding=visit)
    booked: dict[dt.date, list[str]] = {}
    for hold in sorted(holds, key=lambda h: (h.start, h.resource)):
        start, end = hold.start.astimezone(zone), hold.end.astimezone(zone)
        booked.setdefault(start.date(), []).append(
            f"{start:%H:%M}–{end:%H:%M} {hold.resource}"
            + (f" ×{hold.count}" if hold.count > 1 else "")
        )
    closures: dict[dt.date, list[str]] = {}
    for closure in calendar.closures:
        closures.setdefault(closure.day, []).append(closure.reason)
    days = []
    day = first
    while day <= last:
        hours = [h for h in calendar.hours if h.weekday == day.weekday()]
        closed = "; ".join(closures.get(day, [])) or ("" if hours else "no opening hours")
        days.append(
            CalendarDay(
                day=day,
                is_target=day == visit.target_date,
                hours="" if closed else ", ".join(f"{h.start:%H:%M}–{h.end:%H:%M}" for h in hours),
                closed=closed,
                booked=tuple(booked.get(day, ())),
            )
        )
        day += dt.timedelta(days=1)
    plan = visit_plan(visit, calendar)
    if plan is None:
        return BookingCalendar(tuple(days), (), "")
    search = find_slots(
        plan,
        calendar,
        index_holds(holds),
        window_start=first,
        window_end=last,
        target=visit.target_date,
        count=3,
        per_day=1,
        not_before=now,
    )
    return BookingCalendar(tuple(days), tuple(slot.start for slot in search.slots), search.reason)
