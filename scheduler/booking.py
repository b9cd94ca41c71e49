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

from django.db.models import prefetch_related_objects
from django.utils import translation
from django.utils.translation import gettext as _

from scheduler.engine.localtime import read_local_time
from scheduler.engine.slots import (
    Closure,
    Hold,
    Hours,
    Need,
    OutOfService,
    Resource,
    SiteCalendar,
    Slot,
    SlotSearch,
    StaffShift,
    Step,
    VisitPlan,
    find_slots,
    index_holds,
)
from scheduler.models import BookingHold, ScheduledVisit
from scheduler.sitecalendar import closures_between, holiday_language
from scheduler.slotwords import obstacles_words, search_words
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
    public = closures_between(
        site.country,
        first,
        last,
        subdivision=site.subdivision or None,
        language=holiday_language(site.country, translation.get_language()),
    )
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
        closed = "; ".join(closures.get(day, [])) or ("" if hours else _("no opening hours"))
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
    return BookingCalendar(
        tuple(days), tuple(slot.start for slot in search.slots), search_words(search, first, last)
    )


# ----------------------------------------------------------------------------------------
# Slots and the site's calendar as data (the REST API: scheduler/api/booking.py)

# How far around a window the slots endpoint looks for deviations when nothing fits inside.
SLOT_HORIZON_DAYS = 14


def visit_slot_plan(visit: ScheduledVisit, calendar: SiteCalendar) -> VisitPlan | None:
    """The plan slots are found for: the visit's own (`visit_plan`), or for a visit whose
    definition has none one step of its stated length holding nothing, so a slot still lies in
    opening hours on an open day (booking such a visit holds nothing, as it always did). None
    for a visit without a definition (an unscheduled visit has no stated length)."""
    plan = visit_plan(visit, calendar)
    definition = visit.visit_definition
    if plan is not None or definition is None or definition.duration_minutes < 1:
        return plan
    return VisitPlan(
        visit=f"{visit.code} ({definition.name})",
        steps=(Step(visit.code, definition.duration_minutes),),
        max_minutes=definition.duration_minutes,
    )


@dataclass(frozen=True)
class VisitSlots:
    """The slots endpoint's answer for one visit.

    slots: inside the window (and the asked days), best first. deviations: only when nothing
    fits inside the whole window, the nearest starts outside it. reason: '' when there are
    slots, else why not in the reader's words. first/last: the site-local days searched.
    """

    first: dt.date
    last: dt.date
    slots: tuple[Slot, ...] = ()
    deviations: tuple[Slot, ...] = ()
    search: SlotSearch | None = None
    reason: str = ""


def _bookable_problem(visit: ScheduledVisit) -> str:
    participant = visit.participant
    if not visit.is_open:
        return _(
            "%(visit)s is %(status)s: only planned or booked visits can be booked "
            "(completed, missed and cancelled visits are history)"
        ) % {"visit": visit.code, "status": _(visit.get_status_display())}
    if participant.status not in (participant.Status.SCREENING, participant.Status.ENROLLED):
        return _("the participant is %(status)s: the calendar is closed") % {
            "status": _(participant.get_status_display())
        }
    return ""


def _nameable(slots: Iterable[Slot], zone: str) -> tuple[Slot, ...]:
    """The slots a booking can name. A booking names a local date and time, and a time the
    clocks repeat (they go back) names its first run: a slot in the second run was offered
    and then refused by every booking (scheduler/api/booking.py), so it is not offered."""
    return tuple(
        slot
        for slot in slots
        if read_local_time(slot.start.date(), slot.start.time().replace(tzinfo=None), zone).used
        == slot.start_utc
    )


def visit_slots(
    visit: ScheduledVisit,
    *,
    now: dt.datetime,
    count: int = 5,
    per_day: int | None = None,
    first: dt.date | None = None,
    last: dt.date | None = None,
) -> VisitSlots:
    """The earliest feasible starts of `visit` from `now` on, inside its window and the
    site-local days `first` to `last` (each optional; the caller checks they meet the
    window), with what each would hold; or why none, and the nearest deviations.

    Days the caller narrowed the search to that have no slot do not give deviations while
    other days of the window do (a deviation is a start outside the window, never a start
    on a day the caller left out).
    """
    window_start, window_end = visit.window_start, visit.window_end
    lo = max(window_start, first) if first else window_start
    hi = min(window_end, last) if last else window_end
    problem = _bookable_problem(visit)
    if problem:
        return VisitSlots(lo, hi, reason=problem)
    site = visit.participant.site
    horizon = dt.timedelta(days=SLOT_HORIZON_DAYS)
    calendar = site_calendar(site, window_start - horizon, window_end + horizon)
    if not calendar.hours and not calendar.resources:
        return VisitSlots(
            lo,
            hi,
            reason=_(
                "%(site)s keeps no opening hours or resources in the scheduler, so there are "
                "no slots to offer: book %(visit)s by its local date and time"
            )
            % {"site": site.name, "visit": visit.code},
        )
    plan = visit_slot_plan(visit, calendar)
    if plan is None:
        return VisitSlots(
            lo,
            hi,
            reason=_(
                "%(visit)s is an unscheduled visit with no stated length, so there are no "
                "slots to offer: book it by its local date and time"
            )
            % {"visit": visit.code},
        )
    holds = index_holds(
        site_holds(site, window_start - horizon, window_end + horizon, excluding=visit)
    )

    def search(start: dt.date, end: dt.date) -> SlotSearch:
        return find_slots(
            plan,
            calendar,
            holds,
            window_start=start,
            window_end=end,
            target=min(max(visit.target_date, start), end),
            count=count,
            per_day=per_day,
            horizon_days=SLOT_HORIZON_DAYS,
            not_before=now,
        )

    found = search(lo, hi)
    if slots := _nameable(found.slots, site.timezone):
        return VisitSlots(lo, hi, slots, search=found)
    if (lo, hi) == (window_start, window_end):
        return VisitSlots(
            lo,
            hi,
            deviations=found.deviations,
            search=found,
            reason=search_words(found, lo, hi, horizon_days=SLOT_HORIZON_DAYS),
        )
    asked = _("%(start)s to %(end)s: %(why)s") % {
        "start": lo.isoformat(),
        "end": hi.isoformat(),
        "why": obstacles_words(found.obstacles),
    }
    whole = search(window_start, window_end)
    if whole.slots:
        return VisitSlots(
            lo,
            hi,
            search=found,
            reason=asked
            + _("; other days of the window (%(start)s to %(end)s) have slots")
            % {"start": window_start.isoformat(), "end": window_end.isoformat()},
        )
    return VisitSlots(
        lo,
        hi,
        deviations=whole.deviations,
        search=whole,
        reason=search_words(whole, window_start, window_end, horizon_days=SLOT_HORIZON_DAYS),
    )


def slot_state(
    visit: ScheduledVisit, start: dt.datetime
) -> Literal["free", "taken", "never", "none"]:
    """Whether the visit can start at the instant `start` (whole minutes) now: "free", "taken"
    (it would fit the site with nothing booked, but bookings fill it), "never" (closed or
    outside the hours then) or "none" (a site without a calendar, or a visit without a
    length: no slots at all). The past is not judged here: `visit_book` refuses it in its own
    words."""
    site = visit.participant.site
    zone = ZoneInfo(site.timezone)
    day = start.astimezone(zone).date()
    calendar = site_calendar(site, day - dt.timedelta(days=1), day + dt.timedelta(days=1))
    if not calendar.hours and not calendar.resources:
        return "none"
    plan = visit_slot_plan(visit, calendar)
    if plan is None:
        return "none"

    def starts_at(holds: list[Hold]) -> bool:
        found = find_slots(
            plan,
            calendar,
            holds,
            window_start=day,
            window_end=day,
            target=day,
            step_minutes=1,
            count=1,
            not_before=start,
        ).slots
        return bool(found) and found[0].start_utc == start

    if starts_at(site_holds(site, day, day, excluding=visit)):
        return "free"
    return "taken" if starts_at([]) else "never"


# The site's calendar as data


@dataclass(frozen=True)
class CalendarClosure:
    day: dt.date
    reason: str
    source: Literal["site", "public holiday"]


@dataclass(frozen=True)
class CalendarPeriod:
    start: dt.datetime
    end: dt.datetime
    reason: str


@dataclass(frozen=True)
class CalendarBooking:
    """A hold of a booked or done visit: `visit` is its row, for the face to decide what of it
    the reader may see (another trial's booking at the site is only busy time)."""

    start: dt.datetime
    end: dt.datetime
    count: int
    procedure: str
    visit: ScheduledVisit


class CalendarLane:
    """What a resource and a staff kind have in common: the bookings that hold them."""

    bookings: tuple[CalendarBooking, ...]


@dataclass(frozen=True)
class CalendarResource(CalendarLane):
    name: str
    kind: str
    capacity: int
    hours: tuple[Hours, ...]  # empty: the clinic's hours
    out_of_service: tuple[CalendarPeriod, ...]
    bookings: tuple[CalendarBooking, ...]


@dataclass(frozen=True)
class CalendarStaff(CalendarLane):
    kind: str
    shifts: tuple[StaffShift, ...]
    bookings: tuple[CalendarBooking, ...]


@dataclass(frozen=True)
class SiteCalendarData:
    site: Site
    first: dt.date
    last: dt.date
    hours: tuple[Hours, ...]
    closures: tuple[CalendarClosure, ...]
    resources: tuple[CalendarResource, ...]
    staff: tuple[CalendarStaff, ...]


def site_calendar_data(site: Site, first: dt.date, last: dt.date) -> SiteCalendarData:
    """A site's calendar from the local date `first` to `last`: opening hours, closures (the
    site's own and its public holidays), resources with their hours, out-of-service periods
    and bookings, staff shifts and the staff bookings hold; in a fixed number of queries."""
    zone = ZoneInfo(site.timezone)
    start = dt.datetime.combine(first, dt.time(0), zone).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), zone).astimezone(dt.UTC)
    hours = tuple(
        Hours(h.weekday, h.start, h.end)
        for h in SiteHours.objects.filter(site=site).order_by("weekday", "start", "end")
    )
    manual = [
        CalendarClosure(c.date, c.reason, "site")
        for c in SiteClosure.objects.filter(site=site, date__range=(first, last))
    ]
    public = [
        CalendarClosure(c.day, c.reason, "public holiday")
        for c in closures_between(
            site.country,
            first,
            last,
            subdivision=site.subdivision or None,
            language=holiday_language(site.country, translation.get_language()),
        )
    ]
    periods: dict[int, list[CalendarPeriod]] = {}
    for period in ResourceOutOfService.objects.filter(
        resource__site=site, end__gt=start, start__lt=end
    ).order_by("start", "id"):
        periods.setdefault(period.resource_id, []).append(
            CalendarPeriod(period.start, period.end, period.reason)
        )
    by_resource: dict[int, list[CalendarBooking]] = {}
    by_staff: dict[str, list[CalendarBooking]] = {}
    for row in (
        BookingHold.objects.filter(
            visit__participant__site=site,
            visit__status__in=(ScheduledVisit.Status.BOOKED, ScheduledVisit.Status.DONE),
            end__gt=start,
            start__lt=end,
        )
        .select_related("visit__visit_definition")
        .order_by("start", "id")
    ):
        booking = CalendarBooking(row.start, row.end, row.count, row.procedure, row.visit)
        if row.resource_id is not None:
            by_resource.setdefault(row.resource_id, []).append(booking)
        else:
            by_staff.setdefault(row.staff_kind, []).append(booking)
    shifts: dict[str, list[StaffShift]] = {}
    for s in StaffShiftRow.objects.filter(site=site).order_by("kind", "weekday", "start"):
        shifts.setdefault(s.kind, []).append(StaffShift(s.kind, s.weekday, s.start, s.end, s.count))
    return SiteCalendarData(
        site=site,
        first=first,
        last=last,
        hours=hours,
        closures=tuple(sorted([*manual, *public], key=lambda c: (c.day, c.source, c.reason))),
        resources=tuple(
            CalendarResource(
                name=r.name,
                kind=r.kind,
                capacity=r.capacity,
                hours=tuple(
                    Hours(h.weekday, h.start, h.end)
                    for h in sorted(r.hours.all(), key=lambda h: (h.weekday, h.start))
                ),
                out_of_service=tuple(periods.get(r.pk, ())),
                bookings=tuple(by_resource.get(r.pk, ())),
            )
            for r in SiteResource.objects.filter(site=site)
            .prefetch_related("hours")
            .order_by("kind", "name")
        ),
        staff=tuple(
            CalendarStaff(kind, tuple(shifts.get(kind, ())), tuple(by_staff.get(kind, ())))
            for kind in sorted({*shifts, *by_staff})
        ),
    )


# ----------------------------------------------------------------------------------------
# The admin's site views and slot picker (scheduler/admin/sitebookings.py)

# The picker offers starts every half hour: a week of quarter hours is too many links to read.
PICKER_STEP_MINUTES = 30
PICKER_SLOTS_MAX = 500


def site_calendar_people(data: SiteCalendarData) -> None:
    """Loads the participant and trial of every booking's visit in `data` (two queries
    whatever the number of bookings), for a face that names who holds what."""
    visits = [booking.visit for lane in (*data.resources, *data.staff) for booking in lane.bookings]
    prefetch_related_objects(visits, "participant__trial")


@dataclass(frozen=True)
class FreeStarts:
    """A visit's feasible starts on some site-local days: `slots` by start, or `reason`."""

    first: dt.date
    last: dt.date
    slots: tuple[Slot, ...]
    reason: str


def visit_free_starts(
    visit: ScheduledVisit, *, first: dt.date, last: dt.date, now: dt.datetime
) -> FreeStarts:
    """Every feasible start of `visit` from `now` on, every half hour, on the site-local days
    `first` to `last` that lie inside its window (none outside it: a deviation is booked
    through the form, with its reason), earliest first; or why there is none."""
    lo, hi = max(first, visit.window_start), min(last, visit.window_end)
    if lo > hi:
        return FreeStarts(first, last, (), _("the window is not in these days"))
    problem = _bookable_problem(visit)
    if problem:
        return FreeStarts(first, last, (), problem)
    site = visit.participant.site
    calendar = site_calendar(site, lo, hi)
    plan = visit_slot_plan(visit, calendar) if calendar.hours or calendar.resources else None
    if plan is None:
        return FreeStarts(first, last, (), _("no slots to offer: book by local date and time"))
    found = find_slots(
        plan,
        calendar,
        index_holds(site_holds(site, lo, hi, excluding=visit)),
        window_start=lo,
        window_end=hi,
        target=min(max(visit.target_date, lo), hi),
        step_minutes=PICKER_STEP_MINUTES,
        count=PICKER_SLOTS_MAX,
        not_before=now,
    )
    slots = tuple(sorted((s for s in found.slots if not s.deviation), key=lambda s: s.start_utc))
    return FreeStarts(first, last, slots, "" if slots else obstacles_words(found.obstacles))
