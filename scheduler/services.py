"""Use cases that span apps: enrollment and the life of a participant's calendar.

Every service here is one transaction. It validates, writes the change, re-plans what
depends on it, and leaves exactly one audit entry (user, time, old and new values, reason) per
changed row. Services that move dates have a `*_preview` twin that returns the same
`CalendarDiff` without writing anything, so a coordinator confirms what will happen first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import models, transaction
from django.db.models import QuerySet
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from participants.contact import contact_cleared_warning, participant_contact_gap
from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from participants.selectors import participant_anchor_dates, participant_eligibility_failures
from scheduler.access import can_confirm_eligibility, participant_today, site_now, site_today
from scheduler.booking import site_calendar, site_holds, visit_plan
from scheduler.calendar import (
    CalendarDiff,
    PendingCalendar,
    calendar_apply,
    calendar_diff,
    deviation_days,
)
from scheduler.engine import ParticipantFacts, PlanningError, ProtocolSnapshot, plan
from scheduler.engine.localtime import (
    LocalTimeReading,
    local_date_of,
    local_to_utc,
    read_local_time,
)
from scheduler.engine.slots import (
    Hold,
    Slot,
    SlotSearch,
    Step,
    VisitPlan,
    find_slots,
    plan_layout,
)
from scheduler.engine.taper import dose_ceiling, floor_to_step
from scheduler.engine.types import TaperAdjustment as TaperDecision
from scheduler.models import (
    BookingHold,
    ScheduledMilestone,
    ScheduledProcedure,
    ScheduledVisit,
    TaperAdjustment,
)
from scheduler.outbox.plan import (
    announce_to_site_systems,
    announce_visits,
    announce_welcome,
    reminders_sync,
)
from scheduler.selectors import protocol_snapshot, withdrawal_cancellations
from trials.models import Arm, ProcedureDefinition, ProtocolVersion, Site, SiteResource, TrialSite

User = Any  # settings.AUTH_USER_MODEL instance


class EnrollmentError(ValueError):
    """Enrollment was refused; `problems` lists every reason, in plain words."""

    def __init__(self, participant: Participant, problems: list[str]):
        self.problems = problems
        super().__init__(f"{participant} cannot be enrolled: " + "; ".join(problems))


class CalendarError(ValueError):
    """A calendar change was refused; the message says what and why. Nothing was written."""


class VisitConflict(CalendarError):
    """Someone else changed the visit since it was read: reload and try again."""


# ----------------------------------------------------------------------------------------
# Enrollment


def participant_enroll_check(
    *, participant: Participant, on: dt.date, arm: Arm | None = None
) -> list[str]:
    """Every reason `participant_enroll` would refuse the participant on `on`, in plain words,
    in the order it would give them; an empty list means enrollment would go ahead. Writes
    nothing: the admin shows it before the coordinator enrolls."""
    return _enrollment_problems(participant, on, arm)[0]


@transaction.atomic
def participant_eligibility_confirm(
    *, participant: Participant, on: dt.date, by: User
) -> Participant:
    """The investigator's sign-off in the screening log: the machine checks pass on `on`, and
    the site's investigator confirms the criteria no machine can check. Enrolling from the
    admin needs it; a later change to a detail the checks read clears it."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if not can_confirm_eligibility(by, trial_id=participant.trial_id, site_id=participant.site_id):
        raise CalendarError("only the site's investigator confirms eligibility")
    problems = [
        problem
        for problem in _enrollment_problems(participant, on, None)[0]
        # The arm is chosen at enrollment, after the sign-off.
        if "arm" not in problem
    ]
    if problems:
        raise CalendarError("the machine checks fail: " + "; ".join(problems))
    participant.eligibility_confirmed_by = by
    participant.eligibility_confirmed_at = timezone.now()
    _audited(participant, by, "eligibility confirmed by the investigator").save(
        update_fields=["eligibility_confirmed_by", "eligibility_confirmed_at"]
    )
    return participant


def _enrollment_problems(
    participant: Participant, on: dt.date, arm: Arm | None
) -> tuple[list[str], ProtocolSnapshot]:
    problems: list[str] = []
    if participant.status != Participant.Status.SCREENING:
        problems.append(f"status is {participant.status}, expected screening")
    anchors = participant_anchor_dates(participant=participant)
    problems += [
        str(failure)
        for failure in participant_eligibility_failures(
            participant=participant, on=anchors.get("consent", on)
        )
    ]
    version = participant.protocol_version
    if arm is not None and arm.version_id != version.id:
        problems.append(f"arm {arm.code} is not an arm of {version}")
    snapshot = protocol_snapshot(version=version)
    if arm is None and any(visit.arms for visit in snapshot.visits):
        problems.append("this protocol has arm-specific visits: a treatment arm is needed")
    if not any(problem.startswith("arm ") for problem in problems):
        try:
            plan(
                snapshot,
                ParticipantFacts(
                    anchors=anchors,
                    weight_kg=participant.weight_kg,
                    arm=arm.code if arm is not None else None,
                ),
            )
        except PlanningError as exc:
            problems += exc.problems
    return problems, snapshot


@transaction.atomic
def participant_enroll(
    *,
    participant: Participant,
    on: dt.date,
    arm: Arm | None = None,
    by: User | None = None,
    require_confirmation: bool = False,
) -> list[ScheduledVisit]:
    """Enroll a participant in screening and write their whole calendar in bulk.

    Refused, with every reason listed and nothing written, when the participant is not in
    screening, fails a machine-checkable eligibility criterion on `on` (age is taken on the
    consent date when one is recorded), lacks an anchor date the protocol counts from, or has an
    anchor outside its allowed range. The arm, when given, is stored apart as the treatment
    assignment.
    """
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    version = participant.protocol_version
    problems, snapshot = _enrollment_problems(participant, on, arm)
    if require_confirmation and participant.eligibility_confirmed_by_id is None:
        problems.append("the site's investigator has not confirmed eligibility yet")
    if problems:
        raise EnrollmentError(participant, problems)

    if arm is not None:
        assignment = TreatmentAssignment(participant=participant, arm=arm)
        _audited(assignment, by, "randomised at enrollment").save()
    participant.status = Participant.Status.ENROLLED
    participant.enrolled_at = timezone.now()
    _audited(participant, by, "enrolled").save(update_fields=["status", "enrolled_at"])
    # Queued before the calendar's first invites, so it is the first message to arrive.
    announce_welcome(participant)
    calendar_apply(
        calendar_diff(participant, version=version, snapshot=snapshot), by=by, reason="enrolled"
    )
    announce_to_site_systems("participant.enrolled", participant)
    return list(
        ScheduledVisit.objects.filter(participant=participant).order_by("target_date", "id")
    )


# ----------------------------------------------------------------------------------------
# Visits


@dataclass(frozen=True)
class BookingPreview:
    """What booking or rescheduling a visit would do, before it is confirmed."""

    visit_code: str
    booked_start: dt.datetime
    booked_date: dt.date
    deviation_days: int
    calendar: CalendarDiff
    # How the local time typed reads in the site's zone: a time the clocks skip or repeat is
    # shown to the coordinator with the instant stored (`booked_start`) before they confirm.
    local_time: LocalTimeReading | None = None


# A booking for today may start a little before now (a participant who just walked in, a
# coordinator typing the time on the clock); earlier than this is the past, and what happened
# then is recorded with "Record done".
BOOKING_GRACE = dt.timedelta(minutes=15)


def _require_not_past(
    what: str,
    site: Site,
    local_date: dt.date,
    local_time: dt.time,
    start: dt.datetime,
    *,
    record_hint: str = "use “Record done”",
) -> None:
    """Refuse a booking before the site's today, or today at a time already past."""
    now = site_now(site)
    if local_date < now.date():
        raise CalendarError(
            f"{what} cannot be booked for {local_date.isoformat()}: that day is in the past "
            f"at the site (today is {now.date().isoformat()} in {site.timezone}). To record a "
            f"visit that already happened, {record_hint}."
        )
    if start < now - BOOKING_GRACE:
        raise CalendarError(
            f"{what} cannot be booked for {local_time:%H:%M} on {local_date.isoformat()}: "
            f"that time has already passed at the site (it is {now:%H:%M %Z} there now). "
            f"Book a later time; to record a visit that already happened, {record_hint}."
        )


def _audited(instance: Any, by: User | None, reason: str) -> Any:
    instance._history_user = by
    instance._change_reason = reason
    return instance


def _lock_visit(visit: ScheduledVisit, expected_version: int | None) -> ScheduledVisit:
    # Lock the visit row only: the joined rows are read, not changed, and Postgres refuses
    # FOR UPDATE on the nullable side of an outer join (unscheduled visits have no definition).
    locked = (
        ScheduledVisit.objects.select_for_update(of=("self",))
        .select_related("participant__site", "visit_definition")
        .get(pk=visit.pk)
    )
    if expected_version is not None and locked.version != expected_version:
        raise VisitConflict(
            f"{locked.code} of {locked.participant} was changed by someone else since you "
            f"opened it (it is at version {locked.version}, yours is {expected_version}); "
            "reload it and try again"
        )
    return locked


def _require_open(visit: ScheduledVisit, action: str) -> None:
    if not visit.is_open:
        raise CalendarError(
            f"{visit.code} of {visit.participant} is {visit.status}; only planned or booked "
            f"visits can be {action} (completed, missed and cancelled visits are history)"
        )


def _require_active(participant: Participant) -> None:
    if participant.status not in (Participant.Status.SCREENING, Participant.Status.ENROLLED):
        raise CalendarError(f"{participant} is {participant.status}: the calendar is closed")


def _require_reason(reason: str, why: str) -> None:
    if not reason.strip():
        raise CalendarError(f"a reason is required: {why}")


def _visit_key(visit: ScheduledVisit) -> tuple[str, int]:
    assert visit.visit_definition is not None
    return (visit.visit_definition.code, visit.occurrence)


def _booking(visit: ScheduledVisit, local_date: dt.date, local_time: dt.time) -> BookingPreview:
    site = visit.participant.site
    reading = read_local_time(local_date, local_time, site.timezone)
    start = reading.used
    _require_not_past(visit.code, site, local_date, local_time, start)
    booked_date = local_date_of(start, site.timezone)
    pending = calendar_diff(visit.participant, visit_dates=_booked_override(visit, booked_date))
    return BookingPreview(
        visit_code=visit.code,
        booked_start=start,
        booked_date=booked_date,
        deviation_days=deviation_days(booked_date, visit.window_start, visit.window_end),
        calendar=pending.diff,
        local_time=reading,
    )


def _booked_override(visit: ScheduledVisit, day: dt.date) -> dict[tuple[str, int], dt.date]:
    return {_visit_key(visit): day} if visit.visit_definition is not None else {}


def visit_book_preview(
    *, visit: ScheduledVisit, local_date: dt.date, local_time: dt.time
) -> BookingPreview:
    """What booking (or moving) a visit to a site-local date and time would change."""
    visit = ScheduledVisit.objects.select_related("participant__site", "visit_definition").get(
        pk=visit.pk
    )
    _require_open(visit, "booked")
    _require_active(visit.participant)
    preview = _booking(visit, local_date, local_time)
    _fitting_holds(visit, preview.booked_start, lock=False)
    return preview


# ----------------------------------------------------------------------------------------
# What a booking holds (scheduler/booking.py reads the site calendar; engine/slots.py fits)

# How far around the window a refused booking looks for the nearest feasible starts.
HOLD_SEARCH_HORIZON_DAYS = 14


def _hhmm(instant: dt.datetime, zone: str) -> str:
    return f"{instant.astimezone(ZoneInfo(zone)):%H:%M}"


def _slot_words(slot: Slot) -> str:
    out = ""
    if slot.days_out:
        side = "before the window" if slot.days_out < 0 else "after the window"
        out = f" ({abs(slot.days_out)} day(s) {side})"
    return f"{slot.start:%a %Y-%m-%d %H:%M}{out}"


def _fitting_holds(visit: ScheduledVisit, start: dt.datetime, *, lock: bool) -> list[Hold] | None:
    """What the visit would hold starting at `start`, or None when it holds nothing (no plan,
    or a site without resources: it books as it always did). A start that does not fit is
    refused with CalendarError saying what is full or closed and the nearest feasible starts.

    lock: lock the site's resource rows (in id order) first, so concurrent bookings at the site
    check and write their holds one after another.
    """
    if visit.visit_definition is None or visit.visit_definition.plan is None:
        return None
    site = visit.participant.site
    resources = SiteResource.objects.filter(site=site).order_by("pk")
    if lock:
        resources = resources.select_for_update()
    if not list(resources.values_list("pk", flat=True)):
        return None
    day = local_date_of(start, site.timezone)
    horizon = dt.timedelta(days=HOLD_SEARCH_HORIZON_DAYS)
    first = min(visit.window_start, day) - horizon
    last = max(visit.window_end, day) + horizon
    calendar = site_calendar(site, first, last)
    plan = visit_plan(visit, calendar)
    if plan is None:
        return None
    existing = site_holds(site, first, last, excluding=visit)

    def at_start(holds: list[Hold]) -> Slot | None:
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
        return found[0] if found and found[0].start_utc == start else None

    fitted = at_start(existing)
    if fitted is not None:
        return list(fitted.holds)
    why = _why_not(plan, calendar, existing, start, day, at_start)
    nearest = find_slots(
        plan,
        calendar,
        existing,
        window_start=visit.window_start,
        window_end=visit.window_end,
        target=day,
        count=3,
        per_day=1,
        horizon_days=HOLD_SEARCH_HORIZON_DAYS,
        not_before=site_now(site),
    )
    raise CalendarError(
        f"{visit.code} cannot start at {_hhmm(start, site.timezone)} on {day.isoformat()}: "
        f"{why}. {_nearest_words(nearest)}"
    )


def _why_not(
    plan: VisitPlan,
    calendar: Any,
    existing: list[Hold],
    start: dt.datetime,
    day: dt.date,
    at_start: Any,
) -> str:
    zone = calendar.timezone
    if at_start([]) is not None:
        # It fits an empty site: bookings block it. Each kind whose own bookings alone leave
        # no room, and when the visit needs it.
        full: list[str] = []
        layout = plan_layout(plan)
        for step, (offset_start, offset_end) in zip(plan.steps, layout, strict=True):
            for need in (*step.resources, *step.staff):
                staff = need in step.staff
                names = (
                    {need.kind}
                    if staff
                    else {r.name for r in calendar.resources if r.kind == need.kind}
                )
                alone = [h for h in existing if h.staff == staff and h.resource in names]
                if at_start(alone) is None:
                    begins = start + dt.timedelta(minutes=offset_start)
                    ends = start + dt.timedelta(minutes=offset_end)
                    words = "no {kind} is free" if staff else "the {kind} is full"
                    full.append(
                        words.format(kind=need.kind)
                        + f" from {_hhmm(begins, zone)} to {_hhmm(ends, zone)}"
                        + f" (needed for {step.procedure})"
                    )
        return "; ".join(full) or "what is already booked leaves no room at that time"
    day_search = find_slots(
        plan, calendar, (), window_start=day, window_end=day, target=day, count=1
    )
    if not day_search.slots:
        return day_search.reason.split(": ", 1)[-1]
    end = start + dt.timedelta(minutes=max(e for _, e in plan_layout(plan)))
    hours = [f"{h.start:%H:%M}-{h.end:%H:%M}" for h in calendar.hours if h.weekday == day.weekday()]
    own = [
        f"{r.kind} {h.start:%H:%M}-{h.end:%H:%M}"
        for r in calendar.resources
        for h in r.hours or ()
        if h.weekday == day.weekday()
    ]
    return (
        f"the visit would run {_hhmm(start, zone)}-{_hhmm(end, zone)}, outside the site's "
        f"opening hours ({', '.join(hours)}) or its resources' hours "
        f"({', '.join(dict.fromkeys(own)) or 'the same'}) or out of service"
    )


def _nearest_words(search: SlotSearch) -> str:
    if search.slots:
        return "Nearest feasible starts: " + ", ".join(_slot_words(s) for s in search.slots)
    if search.deviations:
        return (
            f"Nothing fits inside the window ({search.reason}); nearest starts outside it: "
            + ", ".join(_slot_words(s) for s in search.deviations)
        )
    return f"Nothing fits near the window either ({search.reason})"


def _holds_replace(visit: ScheduledVisit, holds: list[Hold]) -> None:
    """The visit's holds become exactly `holds` (called under the site's resource lock)."""
    BookingHold.objects.filter(visit=visit).delete()
    by_name = {r.name: r for r in SiteResource.objects.filter(site=visit.participant.site)}
    BookingHold.objects.bulk_create(
        BookingHold(
            visit=visit,
            resource=None if hold.staff else by_name[hold.resource],
            staff_kind=hold.resource if hold.staff else "",
            procedure=hold.procedure,
            start=hold.start,
            end=hold.end,
            count=hold.count,
        )
        for hold in holds
    )


@transaction.atomic
def visit_book(
    *,
    visit: ScheduledVisit,
    local_date: dt.date,
    local_time: dt.time,
    by: User,
    reason: str = "",
    expected_version: int | None = None,
) -> BookingPreview:
    """Book a planned or booked visit at a site-local date and time (a reschedule if booked).

    The time is read in the site's IANA zone (see `local_to_utc` for clock changes) and stored
    in UTC. A day before the site's today, or a time today more than `BOOKING_GRACE` ago, is
    refused: what already happened is recorded with `visit_record_done`. A date outside the
    window is allowed but recorded as a deviation of so many days, and then needs a reason, as
    does every reschedule. Visits that count from this one move with it; the returned preview
    is exactly what was written.
    """
    visit = _lock_visit(visit, expected_version)
    _require_open(visit, "booked")
    _require_active(visit.participant)
    preview = _booking(visit, local_date, local_time)
    rescheduling = visit.status == ScheduledVisit.Status.BOOKED
    if rescheduling:
        _require_reason(reason, f"{visit.code} is already booked, so this is a reschedule")
    if preview.deviation_days:
        _require_reason(
            reason,
            f"{preview.booked_date.isoformat()} is {abs(preview.deviation_days)} day(s) "
            f"{'before' if preview.deviation_days < 0 else 'after'} the window of {visit.code} "
            f"({visit.window_start.isoformat()} to {visit.window_end.isoformat()})",
        )
    holds = _fitting_holds(visit, preview.booked_start, lock=True)
    visit.status = ScheduledVisit.Status.BOOKED
    visit.booked_start = preview.booked_start
    visit.booked_date = preview.booked_date
    visit.deviation_days = preview.deviation_days
    visit.reason = reason
    visit.version += 1
    visit.ical_sequence += 1
    default_reason = "rescheduled" if rescheduling else "booked"
    _audited(visit, by, reason or default_reason).save(
        update_fields=[
            "status",
            "booked_start",
            "booked_date",
            "deviation_days",
            "reason",
            "version",
            "ical_sequence",
        ]
    )
    if holds is not None:
        _holds_replace(visit, holds)
    announce_visits(visit.participant, [visit])
    announce_to_site_systems(
        "visit.moved" if rescheduling else "visit.booked", visit.participant, [visit]
    )
    pending = calendar_diff(visit.participant)
    calendar_apply(pending, by=by, reason=f"{visit.code} {default_reason}: {reason}".rstrip(": "))
    return BookingPreview(
        visit.code,
        preview.booked_start,
        preview.booked_date,
        preview.deviation_days,
        pending.diff,
        preview.local_time,
    )


# The words: a reschedule is a booking of an already booked (or planned) visit.
visit_reschedule = visit_book
visit_reschedule_preview = visit_book_preview


@dataclass(frozen=True)
class Unplaced:
    """A visit `visit_book_all_remaining` could not book inside its window, and why."""

    visit: ScheduledVisit
    reason: str


@dataclass(frozen=True)
class BookAllResult:
    booked: tuple[BookingPreview, ...]
    unplaced: tuple[Unplaced, ...]


@transaction.atomic
def visit_book_all_remaining(
    *, participant: Participant, by: User, reason: str = ""
) -> BookAllResult:
    """Book each of the participant's planned visits in turn, earliest target first, at the
    first slot the finder proposes inside its window (from the site's now on).

    After each booking the calendar is re-planned (as `visit_book` does), so a visit counted
    from an earlier one is searched in its moved window. A visit with a plan holds its
    resources; one without is a single step of its duration (inside opening hours, not on a
    closure, holding nothing). A visit with no slot inside its window is not booked: it is
    returned with the finder's reason (deviations are a coordinator's decision, with a reason).
    Booked visits stay as they are.
    """
    participant = (
        Participant.objects.select_for_update().select_related("site").get(pk=participant.pk)
    )
    _require_active(participant)
    site = participant.site
    booked: list[BookingPreview] = []
    unplaced: list[Unplaced] = []
    tried: set[int] = set()
    horizon = dt.timedelta(days=HOLD_SEARCH_HORIZON_DAYS)
    while True:
        visit = (
            ScheduledVisit.objects.filter(
                participant=participant,
                status=ScheduledVisit.Status.PLANNED,
                visit_definition__isnull=False,
            )
            .exclude(pk__in=tried)
            .select_related("participant__site", "visit_definition")
            .order_by("target_date", "visit_definition__order", "occurrence")
            .first()
        )
        if visit is None:
            break
        tried.add(visit.pk)
        assert visit.visit_definition is not None
        first, last = visit.window_start - horizon, visit.window_end + horizon
        calendar = site_calendar(site, first, last)
        definition = visit.visit_definition
        plan = visit_plan(visit, calendar) or VisitPlan(
            visit=f"{visit.code} ({definition.name})",
            steps=(Step(visit.code, definition.duration_minutes),),
            max_minutes=definition.duration_minutes,
        )
        search = find_slots(
            plan,
            calendar,
            site_holds(site, first, last, excluding=visit),
            window_start=visit.window_start,
            window_end=visit.window_end,
            target=visit.target_date,
            count=1,
            not_before=site_now(site),
        )
        if not search.slots:
            unplaced.append(Unplaced(visit, search.reason))
            continue
        slot = search.slots[0]
        try:
            booked.append(
                visit_book(
                    visit=visit,
                    local_date=slot.day,
                    local_time=slot.start.time(),
                    by=by,
                    reason=reason,
                )
            )
        except CalendarError as refused:
            unplaced.append(Unplaced(visit, str(refused)))
    return BookAllResult(tuple(booked), tuple(unplaced))


def visit_record_done_preview(*, visit: ScheduledVisit, actual_date: dt.date) -> CalendarDiff:
    """What recording a visit as done on `actual_date` would move."""
    visit = ScheduledVisit.objects.select_related("participant__site", "visit_definition").get(
        pk=visit.pk
    )
    _require_open(visit, "recorded as done")
    _require_not_future(visit, actual_date)
    return calendar_diff(visit.participant, visit_dates=_booked_override(visit, actual_date)).diff


def _require_not_future(visit: ScheduledVisit, actual_date: dt.date) -> None:
    today = site_today(visit.participant.site)
    if actual_date > today:
        raise CalendarError(
            f"{visit.code} cannot be recorded as done on {actual_date.isoformat()}: that is "
            f"after today ({today.isoformat()}) at the site"
        )


@transaction.atomic
def visit_record_done(
    *,
    visit: ScheduledVisit,
    actual_date: dt.date,
    actual_time: dt.time | None = None,
    procedures_not_done: Mapping[str, str] | None = None,
    by: User,
    reason: str = "",
    expected_version: int | None = None,
) -> CalendarDiff:
    """Record a visit as done on its actual date (and time), with procedures not done and why.

    Every other planned procedure of the visit is recorded as done. A date outside the window
    is a deviation and needs a reason; a date in the future is refused. Visits and milestones
    counted from this visit's actual date are re-planned.
    """
    visit = _lock_visit(visit, expected_version)
    _require_open(visit, "recorded as done")
    site_zone = visit.participant.site.timezone
    _require_not_future(visit, actual_date)
    not_done = dict(procedures_not_done or {})
    procedures = list(visit.procedures.select_related("procedure"))
    unknown = sorted(set(not_done) - {p.procedure.code for p in procedures})
    if unknown:
        raise CalendarError(
            f"{', '.join(unknown)} is not planned at {visit.code}; its procedures are "
            f"{', '.join(p.procedure.code for p in procedures) or 'none'}"
        )
    for code, why in not_done.items():
        _require_reason(why, f"procedure {code} was not done at {visit.code}")
    deviation = deviation_days(actual_date, visit.window_start, visit.window_end)
    if deviation:
        _require_reason(
            reason,
            f"{visit.code} was done {abs(deviation)} day(s) "
            f"{'before' if deviation < 0 else 'after'} its window "
            f"({visit.window_start.isoformat()} to {visit.window_end.isoformat()})",
        )
    visit.status = ScheduledVisit.Status.DONE
    visit.actual_date = actual_date
    visit.actual_start = local_to_utc(actual_date, actual_time, site_zone) if actual_time else None
    visit.deviation_days = deviation
    visit.reason = reason
    visit.version += 1
    _audited(visit, by, reason or "done").save(
        update_fields=[
            "status",
            "actual_date",
            "actual_start",
            "deviation_days",
            "reason",
            "version",
        ]
    )
    for procedure in procedures:
        if procedure.procedure.code in not_done:
            procedure.status = ScheduledProcedure.Status.NOT_DONE
            procedure.not_done_reason = not_done[procedure.procedure.code]
        else:
            procedure.status = ScheduledProcedure.Status.DONE
    bulk_update_with_history(
        procedures,
        ScheduledProcedure,
        ["status", "not_done_reason"],
        default_user=by,
        default_change_reason=f"{visit.code} done",
    )
    announce_to_site_systems("visit.done", visit.participant, [visit])
    return calendar_apply(
        calendar_diff(visit.participant),
        by=by,
        reason=f"{visit.code} done on {actual_date.isoformat()}",
    )


@transaction.atomic
def visit_mark_missed(
    *, visit: ScheduledVisit, by: User, reason: str, expected_version: int | None = None
) -> CalendarDiff:
    """Record that a visit did not happen. Visits counted from it fall back to its target."""
    return _close_visit(visit, ScheduledVisit.Status.MISSED, by, reason, expected_version)


@transaction.atomic
def visit_cancel(
    *, visit: ScheduledVisit, by: User, reason: str, expected_version: int | None = None
) -> CalendarDiff:
    """Cancel a visit (it will not take place). Visits counted from it fall back to its target."""
    return _close_visit(visit, ScheduledVisit.Status.CANCELLED, by, reason, expected_version)


def _close_visit(
    visit: ScheduledVisit, status: str, by: User, reason: str, expected_version: int | None
) -> CalendarDiff:
    visit = _lock_visit(visit, expected_version)
    _require_open(visit, f"marked {status}")
    _require_reason(reason, f"{visit.code} is being marked {status}")
    # A visit that will not happen frees what it held (a done visit keeps its holds: they
    # happened, and the site's past days stay true).
    BookingHold.objects.filter(visit=visit).delete()
    visit.status = status
    visit.reason = reason
    visit.version += 1
    fields = ["status", "reason", "version"]
    if status == ScheduledVisit.Status.CANCELLED:
        # The participant's calendar must drop it: a CANCEL with a higher SEQUENCE.
        visit.ical_sequence += 1
        fields.append("ical_sequence")
        announce_visits(visit.participant, [visit])
    _audited(visit, by, reason).save(update_fields=fields)
    announce_to_site_systems(f"visit.{status}", visit.participant, [visit])
    return calendar_apply(calendar_diff(visit.participant), by=by, reason=f"{visit.code} {status}")


@dataclass(frozen=True)
class UnscheduledPlan:
    """An unscheduled visit as it would be added: booked at `start` (UTC), or planned for the
    day when no time is given, carrying these procedures."""

    participant: Participant
    local_date: dt.date
    start: dt.datetime | None
    procedures: tuple[ProcedureDefinition, ...]


def _unscheduled_plan(
    participant: Participant,
    local_date: dt.date,
    local_time: dt.time | None,
    reason: str,
    procedure_codes: Sequence[str],
) -> UnscheduledPlan:
    participant = Participant.objects.select_related("site", "protocol_version").get(
        pk=participant.pk
    )
    _require_active(participant)
    _require_reason(reason, "an unscheduled visit must say why it is needed")
    procedures = {
        p.code: p for p in ProcedureDefinition.objects.filter(version=participant.protocol_version)
    }
    unknown = [code for code in procedure_codes if code not in procedures]
    if unknown:
        raise CalendarError(
            f"unknown procedure(s) {', '.join(unknown)}; {participant.protocol_version} has "
            f"{', '.join(sorted(procedures))}"
        )
    start = local_to_utc(local_date, local_time, participant.site.timezone) if local_time else None
    if local_time is not None and start is not None:
        _require_not_past(
            "an unscheduled visit",
            participant.site,
            local_date,
            local_time,
            start,
            record_hint="add it without a time, then use “Record done”",
        )
    return UnscheduledPlan(
        participant, local_date, start, tuple(procedures[code] for code in procedure_codes)
    )


def visit_add_unscheduled_preview(
    *,
    participant: Participant,
    local_date: dt.date,
    reason: str,
    procedure_codes: Sequence[str] = (),
    local_time: dt.time | None = None,
) -> UnscheduledPlan:
    """What `visit_add_unscheduled` would add, refused for the same reasons; nothing written.
    An unscheduled visit moves nothing else in the calendar."""
    return _unscheduled_plan(participant, local_date, local_time, reason, procedure_codes)


@transaction.atomic
def visit_add_unscheduled(
    *,
    participant: Participant,
    local_date: dt.date,
    reason: str,
    procedure_codes: Sequence[str] = (),
    local_time: dt.time | None = None,
    by: User,
) -> ScheduledVisit:
    """Add an unscheduled visit (a flare, say) with its reason and the procedures it carries.

    With a time it is booked at that site-local time, refused in the past like any booking;
    without, it is planned for that day (a visit that already happened is added so, then
    recorded as done).
    """
    plan = _unscheduled_plan(participant, local_date, local_time, reason, procedure_codes)
    participant, start = plan.participant, plan.start
    visit = ScheduledVisit(
        participant=participant,
        visit_definition=None,
        occurrence=1,
        unscheduled_reason=reason,
        protocol_version=participant.protocol_version,
        target_date=local_date,
        window_start=local_date,
        window_end=local_date,
        status=ScheduledVisit.Status.BOOKED if start else ScheduledVisit.Status.PLANNED,
        booked_start=start,
        booked_date=local_date if start else None,
        deviation_days=0 if start else None,
        reason=reason,
    )
    _audited(visit, by, reason).save()
    bulk_create_with_history(
        [ScheduledProcedure(visit=visit, procedure=procedure) for procedure in plan.procedures],
        ScheduledProcedure,
        default_user=by,
        default_change_reason=reason,
    )
    announce_visits(participant, [visit])
    if start is not None:
        announce_to_site_systems("visit.booked", participant, [visit])
    reminders_sync(participant)
    return visit


# ----------------------------------------------------------------------------------------
# Anchors and milestones


def participant_anchor_change_preview(
    *, participant: Participant, code: str, new_date: dt.date
) -> CalendarDiff:
    """What moving one of the participant's anchors (Day 1 after screening, say) would change.

    Refused with the same CalendarError as `participant_anchor_change` when the date is
    outside the range the protocol allows for that anchor.
    """
    _check_anchor_code(participant, code)
    try:
        return calendar_diff(participant, anchors={code: new_date}).diff
    except PlanningError as exc:
        raise CalendarError("; ".join(exc.problems)) from exc


@transaction.atomic
def participant_anchor_change(
    *, participant: Participant, code: str, new_date: dt.date, by: User, reason: str
) -> CalendarDiff:
    """Set an anchor date and re-plan what counts from it; history stays as it was."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    _require_active(participant)
    _check_anchor_code(participant, code)
    _require_reason(reason, f"the {code} date is being changed")
    try:
        pending = calendar_diff(participant, anchors={code: new_date})
    except PlanningError as exc:
        raise CalendarError("; ".join(exc.problems)) from exc
    anchor = ParticipantAnchor.objects.filter(participant=participant, code=code).first()
    if anchor is None:
        anchor = ParticipantAnchor(participant=participant, code=code, date=new_date)
    anchor.date = new_date
    _audited(anchor, by, reason).save()
    return calendar_apply(pending, by=by, reason=f"{code} set to {new_date.isoformat()}: {reason}")


def _check_anchor_code(participant: Participant, code: str) -> None:
    codes = set(participant.protocol_version.anchor_set.values_list("code", flat=True))
    if code not in codes:
        raise CalendarError(
            f"{code!r} is not an anchor of {participant.protocol_version}; it has "
            f"{', '.join(sorted(codes))}"
        )


def _check_taper_decision(
    participant: Participant,
    milestone_code: str,
    week: int,
    dose_mg: Decimal | None,
    allow_increase: bool,
) -> TaperDecision:
    _require_active(participant)
    steps = {
        m.sequence: m
        for m in ScheduledMilestone.objects.filter(
            participant=participant, rule__code=milestone_code
        ).exclude(status=ScheduledMilestone.Status.CANCELLED)
    }
    if not steps:
        raise CalendarError(f"{participant} has no taper {milestone_code!r}")
    if week not in steps or week == 0:
        raise CalendarError(
            f"week {week} is not a step of {milestone_code} that can be adjusted; the taper "
            f"runs from week 1 to week {max(steps)}"
        )
    if dose_mg is not None:
        _check_prescribed_dose(participant, milestone_code, dose_mg)
    previous = steps[week - 1].dose_mg
    if dose_mg is not None and previous is not None and dose_mg > previous and not allow_increase:
        raise CalendarError(
            f"{dose_mg.normalize():f} mg/day is more than week {week - 1}'s "
            f"{previous.normalize():f} mg/day; a taper never increases unless the investigator "
            "confirms the increase"
        )
    return TaperDecision("hold") if dose_mg is None else TaperDecision("set", dose_mg)


def _dose_column() -> tuple[Decimal, Decimal]:
    """The largest dose a dose column records, and its resolution (99999.99 and 0.01 mg)."""
    field = ScheduledMilestone._meta.get_field("dose_mg")
    assert isinstance(field, models.DecimalField)
    resolution = Decimal(10) ** -field.decimal_places
    return Decimal(10) ** (field.max_digits - field.decimal_places) - resolution, resolution


def _check_prescribed_dose(participant: Participant, milestone_code: str, dose_mg: Decimal) -> None:
    """Refuse a prescription the calendar could not hold as written: below zero, beyond what a
    dose column records (0.01 mg up to 99999.99 mg), above the protocol's ceiling for the
    participant's weight, or (unless the protocol allows exact doses) not a whole number of
    tablets, in which case the two nearest doses are offered."""
    mg = f"{dose_mg.normalize():f}"
    if dose_mg < 0:
        raise CalendarError(f"{mg} mg/day is not a dose: a prescribed dose is 0 mg/day or more")
    column_max, resolution = _dose_column()
    if dose_mg > column_max or dose_mg % resolution:
        raise CalendarError(
            f"{mg} mg/day cannot be recorded: doses are recorded to {resolution} mg, up to "
            f"{column_max} mg/day"
        )
    spec = next(
        (
            m.taper
            for m in protocol_snapshot(version=participant.protocol_version).milestones
            if m.code == milestone_code and m.taper is not None
        ),
        None,
    )
    if spec is None:
        return
    ceiling = None
    if participant.weight_kg is not None:
        weight = Decimal(participant.weight_kg)
        ceiling = dose_ceiling(spec, weight)
        if dose_mg > ceiling:
            by_weight = weight * spec.initial_mg_per_kg
            why = (
                f"its ceiling of {_plain_mg(ceiling)} mg/day"
                if ceiling < by_weight
                else f"{_plain_mg(spec.initial_mg_per_kg)} mg/kg/day × {_plain_mg(weight)} kg = "
                f"{_plain_mg(by_weight)} mg/day"
            )
            raise CalendarError(
                f"{mg} mg/day is above what the protocol allows {participant}: {why}"
            )
    if not spec.exact_doses and dose_mg % spec.step_mg:
        lower = floor_to_step(dose_mg, spec.step_mg)
        nearest = [lower, lower + spec.step_mg]
        allowed = [d for d in nearest if ceiling is None or d <= ceiling]
        raise CalendarError(
            f"{mg} mg is not a multiple of the {_plain_mg(spec.step_mg)} mg tablet; prescribe "
            + " or ".join(f"{_plain_mg(d)} mg" for d in allowed)
        )


def _plain_mg(value: Decimal) -> str:
    return f"{value.normalize():f}"


def taper_adjust_preview(
    *,
    participant: Participant,
    milestone_code: str,
    week: int,
    dose_mg: Decimal | None = None,
    allow_increase: bool = False,
) -> CalendarDiff:
    """What a taper decision would change; refused for the same reasons as `taper_adjust`."""
    decision = _check_taper_decision(participant, milestone_code, week, dose_mg, allow_increase)
    return calendar_diff(participant, taper_adjustments={(milestone_code, week): decision}).diff


@transaction.atomic
def taper_adjust(
    *,
    participant: Participant,
    milestone_code: str,
    week: int,
    by: User,
    reason: str,
    dose_mg: Decimal | None = None,
    allow_increase: bool = False,
) -> CalendarDiff:
    """Hold a taper at a week (no dose given) or prescribe the week's dose.

    A hold keeps last week's dose and postpones every later reduction by a week; a prescribed
    dose restarts the remaining reductions from it. A dose above last week's is refused unless
    the investigator says so (`allow_increase`). Later steps are re-planned; doses that stay
    above target past the protocol's target week are flagged for the investigator.
    """
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    _require_reason(reason, "a taper decision must say why")
    decision = _check_taper_decision(participant, milestone_code, week, dose_mg, allow_increase)
    pending = calendar_diff(participant, taper_adjustments={(milestone_code, week): decision})
    row = TaperAdjustment.objects.filter(
        participant=participant, milestone_code=milestone_code, week=week
    ).first() or TaperAdjustment(participant=participant, milestone_code=milestone_code, week=week)
    row.kind = decision.kind
    row.dose_mg = dose_mg
    row.reason = reason
    row.decided_by = by
    _audited(row, by, reason).save()
    what = "held" if dose_mg is None else f"set to {dose_mg.normalize():f} mg/day"
    return calendar_apply(pending, by=by, reason=f"{milestone_code} week {week} {what}: {reason}")


# ----------------------------------------------------------------------------------------
# Withdrawal, completion, amendments


@dataclass(frozen=True)
class Closure:
    cancelled_visits: tuple[ScheduledVisit, ...]
    cancelled_milestones: tuple[ScheduledMilestone, ...]


def _end_participation(
    participant: Participant,
    *,
    status: str,
    on: dt.date,
    cancel_from: dt.date,
    why: str,
    reason: str,
    by: User | None,
) -> tuple[list[ScheduledVisit], list[ScheduledMilestone]]:
    """End a participant's part in the trial (withdrawn, screen failed): open visits and
    planned milestones from `cancel_from` on are cancelled (their invites withdrawn, their
    resources freed, site systems told), the participant's status, end date and reason set.
    What was done stays as it was."""
    visits, milestones = withdrawal_cancellations(participant=participant, on=cancel_from)
    for visit in visits:
        visit.status = ScheduledVisit.Status.CANCELLED
        visit.reason = why
        visit.version += 1
        visit.ical_sequence += 1
    bulk_update_with_history(
        visits,
        ScheduledVisit,
        ["status", "reason", "version", "ical_sequence"],
        default_user=by,
        default_change_reason=why,
    )
    BookingHold.objects.filter(visit__in=visits).delete()
    announce_visits(participant, visits)
    for milestone in milestones:
        milestone.status = ScheduledMilestone.Status.CANCELLED
    bulk_update_with_history(
        milestones, ScheduledMilestone, ["status"], default_user=by, default_change_reason=why
    )
    participant.status = status
    participant.ended_on = on
    participant.ended_reason = reason
    _audited(participant, by, reason).save(update_fields=["status", "ended_on", "ended_reason"])
    announce_to_site_systems("visit.cancelled", participant, visits)
    return visits, milestones


@transaction.atomic
def participant_withdraw(
    *, participant: Participant, on: dt.date, by: User, reason: str
) -> Closure:
    """Withdraw a participant on a date: every open visit and planned milestone on or after it
    is cancelled; everything before it, and all history, stays exactly as it was."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    _require_active(participant)
    _require_reason(reason, "a withdrawal must say why")
    visits, milestones = _end_participation(
        participant,
        status=Participant.Status.WITHDRAWN,
        on=on,
        cancel_from=on,
        why=f"withdrawn: {reason}",
        reason=reason,
        by=by,
    )
    announce_to_site_systems("participant.withdrawn", participant)
    reminders_sync(participant)  # withdrawn: every pending reminder is cancelled
    return Closure(tuple(visits), tuple(milestones))


@transaction.atomic
def participant_complete(
    *, participant: Participant, on: dt.date, by: User, reason: str = "completed the study"
) -> Participant:
    """Mark an enrolled participant as having completed the study. Refused while visits are
    still planned or booked: record or cancel them first, so nothing is closed silently."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if participant.status != Participant.Status.ENROLLED:
        raise CalendarError(f"{participant} is {participant.status}, not enrolled")
    open_visits = list(
        ScheduledVisit.objects.filter(
            participant=participant, status__in=ScheduledVisit.OPEN
        ).select_related("visit_definition")
    )
    if open_visits:
        raise CalendarError(
            f"{participant} still has open visits: "
            + ", ".join(f"{v.code} ({v.status})" for v in open_visits)
        )
    participant.status = Participant.Status.COMPLETED
    participant.ended_on = on
    participant.ended_reason = reason
    _audited(participant, by, reason).save(update_fields=["status", "ended_on", "ended_reason"])
    reminders_sync(participant)
    return participant


@transaction.atomic
def participant_screen_fail(
    *, participant: Participant, on: dt.date, by: User, reason: str
) -> Participant:
    """Record that a participant in screening did not qualify (the screening log's "screen
    failed", with its reason). Their planned screening visits are cancelled and every pending
    reminder with them; what was done stays as it was."""
    participant = (
        Participant.objects.select_for_update().select_related("site").get(pk=participant.pk)
    )
    if participant.status != Participant.Status.SCREENING:
        raise CalendarError(
            f"{participant} is {participant.get_status_display()}, not in screening"
        )
    _require_reason(reason, "a screen failure must say why (the criterion not met)")
    today = site_today(participant.site)
    if on > today:
        raise CalendarError(
            f"a screen failure is recorded on or before the site's today ({today.isoformat()}), "
            f"not on {on.isoformat()}"
        )
    # Everything still open is cancelled, whatever its date: screening ended.
    _end_participation(
        participant,
        status=Participant.Status.SCREEN_FAILED,
        on=on,
        cancel_from=dt.date.min,
        why=f"screen failed: {reason}",
        reason=reason,
        by=by,
    )
    reminders_sync(participant)
    return participant


def _check_move(participant: Participant, version: ProtocolVersion) -> None:
    if version.trial_id != participant.trial_id:
        raise CalendarError(f"{version} is not a version of {participant.trial}")
    if not version.is_published:
        raise CalendarError(f"{version} is a draft; publish it before moving anyone onto it")
    _require_active(participant)


def participant_move_to_version_preview(
    *, participant: Participant, version: ProtocolVersion, on: dt.date
) -> CalendarDiff:
    """What moving a participant onto another protocol version from `on` would change."""
    _check_move(participant, version)
    return calendar_diff(participant, version=version, not_before=on).diff


@transaction.atomic
def participant_move_to_version(
    *, participant: Participant, version: ProtocolVersion, on: dt.date, by: User, reason: str
) -> CalendarDiff:
    """Move a participant onto an amended protocol version from `on`.

    Only open visits and planned milestones dated on or after `on` are re-planned under the new
    version (added, moved, or cancelled when the amendment drops them); history, and what
    lies before `on`, keeps the version it was planned under. Completed and withdrawn
    participants are never moved.
    """
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    _check_move(participant, version)
    _require_reason(reason, "an amendment must be named")
    pending: PendingCalendar = calendar_diff(participant, version=version, not_before=on)
    participant.protocol_version = version
    _audited(participant, by, reason).save(update_fields=["protocol_version"])
    return calendar_apply(pending, by=by, reason=f"moved to {version}: {reason}")


def _check_site_move(
    site: Site, version: ProtocolVersion, approved_on: dt.date, on: dt.date
) -> None:
    if not version.is_published:
        raise CalendarError(f"{version} is a draft; publish it before a site approves it")
    if not TrialSite.objects.filter(trial=version.trial_id, site=site).exists():
        raise CalendarError(f"{site} does not take part in {version.trial}")
    if on < approved_on:
        raise CalendarError(
            f"{site} approved {version} on {approved_on.isoformat()}; participants cannot be "
            f"moved onto it on {on.isoformat()}, before that date"
        )


def _site_movers(site: Site, version: ProtocolVersion) -> QuerySet[Participant]:
    """Who a site's approval of `version` moves: its screening and enrolled participants of
    the trial on another version. Completed, withdrawn and screen-failed ones stay."""
    return (
        Participant.objects.filter(
            trial=version.trial,
            site=site,
            status__in=[Participant.Status.SCREENING, Participant.Status.ENROLLED],
        )
        .exclude(protocol_version=version)
        .order_by("study_id")
    )


def site_move_to_version_preview(
    *, site: Site, version: ProtocolVersion, approved_on: dt.date, on: dt.date
) -> dict[str, CalendarDiff]:
    """What `site_move_to_version` would change, participant by participant (by study id),
    refused for the same reasons; nothing written."""
    _check_site_move(site, version, approved_on, on)
    return {
        participant.study_id: participant_move_to_version_preview(
            participant=participant, version=version, on=on
        )
        for participant in _site_movers(site, version)
    }


@transaction.atomic
def site_move_to_version(
    *,
    site: Site,
    version: ProtocolVersion,
    approved_on: dt.date,
    on: dt.date,
    by: User,
    reason: str,
) -> dict[str, CalendarDiff]:
    """Record a site's approval of a protocol version and move its active participants onto it.

    Refused before the approval date. Participants who completed, withdrew or failed screening
    stay where they are. Returns each moved participant's calendar change, by study id.
    """
    _check_site_move(site, version, approved_on, on)
    _require_reason(reason, "an amendment must be named")
    trial_site = TrialSite.objects.select_for_update().get(trial=version.trial, site=site)
    trial_site.protocol_version = version
    trial_site.approved_on = approved_on
    _audited(trial_site, by, reason).save(update_fields=["protocol_version", "approved_on"])
    return {
        participant.study_id: participant_move_to_version(
            participant=participant, version=version, on=on, by=by, reason=reason
        )
        for participant in _site_movers(site, version)
    }


# ----------------------------------------------------------------------------------------
# Participant details

# What a coordinator may edit on a participant directly; clinical state (status, protocol
# version, anchors, arm) changes only through the services above.
EDITABLE_PARTICIPANT_FIELDS = frozenset(
    {
        "study_id",
        "birth_date",
        "weight_kg",
        "email",
        "phone",
        "guardian_name",
        "guardian_email",
        "timezone",
        "language",
        "reminder_channels",
        "reminders_opt_out",
        "quiet_hours_start",
        "quiet_hours_end",
    }
)


# What the machine eligibility checks read: changing one clears the investigator's sign-off.
ELIGIBILITY_FIELDS = frozenset({"birth_date", "weight_kg"})


@dataclass(frozen=True)
class DetailsSaved:
    """A saved edit, and what the coordinator must be told about it (in plain words)."""

    participant: Participant
    warnings: tuple[str, ...] = ()


@transaction.atomic
def participant_details_save(
    *, participant: Participant, changed_fields: Sequence[str], by: User
) -> DetailsSaved:
    """Save a coordinator's edit of a participant's details and preferences.

    Contact details, channels, opt-out and quiet hours decide which reminders are planned, so
    the outbox is re-planned in the same transaction. Fields outside the editable set are
    refused: they change through their own services. An edit that clears the last way to
    reach the participant (no email, or no guardian email for a minor, and no phone) is saved
    with a warning that invites and reminders stop.
    """
    fields = list(dict.fromkeys(changed_fields))
    refused = sorted(set(fields) - EDITABLE_PARTICIPANT_FIELDS)
    if refused:
        raise CalendarError(
            f"{', '.join(refused)} cannot be edited directly; use the participant's actions"
        )
    if (participant.quiet_hours_start is None) != (participant.quiet_hours_end is None):
        raise CalendarError("quiet hours need both a start and an end, or neither")
    today = participant_today(participant)
    stored = Participant.objects.select_related("trial").get(pk=participant.pk)
    was_reachable = participant_contact_gap(stored, today=today) is None
    if (
        participant.status == Participant.Status.SCREENING
        and stored.eligibility_confirmed_by_id is not None
        and ELIGIBILITY_FIELDS.intersection(fields)
    ):
        # The investigator signed off on the old details: they confirm again.
        participant.eligibility_confirmed_by = None
        participant.eligibility_confirmed_at = None
        fields += ["eligibility_confirmed_by", "eligibility_confirmed_at"]
    if fields:
        _audited(participant, by, "details edited").save(update_fields=fields)
    reminders_sync(participant)
    warnings: tuple[str, ...] = ()
    if was_reachable and participant_contact_gap(participant, today=today) is not None:
        warnings = (contact_cleared_warning(participant, today=today),)
    return DetailsSaved(participant, warnings)


# ----------------------------------------------------------------------------------------
# A deviation's reason, after the fact


@transaction.atomic
def visit_deviation_reason_record(
    *, visit: ScheduledVisit, reason: str, by: User, expected_version: int | None = None
) -> ScheduledVisit:
    """Give the reason of a visit done outside its window that was recorded without one (the
    start page's "deviations awaiting a reason"). Only the reason changes: dates, the
    calendar and what was sent stay as they are; the audit trail says who gave it and when."""
    visit = _lock_visit(visit, expected_version)
    if visit.status != ScheduledVisit.Status.DONE or not visit.deviation_days:
        raise CalendarError(
            f"{visit.code} of {visit.participant} is not a visit done outside its window"
        )
    if visit.reason:
        raise CalendarError(f"{visit.code} of {visit.participant} already has a reason")
    _require_reason(reason, f"{visit.code} was done outside its window")
    visit.reason = reason.strip()
    visit.version += 1
    _audited(visit, by, "deviation reason given").save(update_fields=["reason", "version"])
    return visit
