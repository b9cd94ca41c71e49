"""Use cases that span apps: enrollment and the life of a participant's calendar.

Every service here is one transaction. It validates, writes the change, re-plans what
depends on it, and leaves exactly one audit entry (user, time, old and new values, reason) per
changed row. Services that move dates have a `*_preview` twin that returns the same
`CalendarDiff` without writing anything, so a coordinator confirms what will happen first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import models, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from simple_history.utils import bulk_create_with_history

from participants.contact import contact_cleared_warning, participant_contact_gap
from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from participants.selectors import (
    eligibility_failure_words,
    machine_criteria_prefetch,
    participant_anchor_dates,
    participant_eligibility_failures,
)
from participants.services import study_id_normalized, study_id_taken
from scheduler.access import can_confirm_eligibility, participant_today, site_now, site_today
from scheduler.booking import site_calendar, site_holds, visit_plan, visit_slot_plan
from scheduler.bulkwrite import create_with_history, update_with_history
from scheduler.calendar import (
    CalendarDiff,
    PendingCalendar,
    calendar_apply,
    calendar_apply_many,
    calendar_diff,
    deviation_days,
    stored_calendars,
)
from scheduler.display import zone_time
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
    Step,
    VisitPlan,
    find_slots,
    index_holds,
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
    announce_to_site_systems_many,
    announce_visits,
    announce_welcome_many,
    reminders_sync,
    reminders_sync_many,
    version_rules,
)
from scheduler.selectors import protocol_snapshot, withdrawal_cancellations
from scheduler.slotwords import nearest_words, obstacles_words, search_words
from trials.models import (
    Arm,
    ProcedureDefinition,
    ProtocolVersion,
    ResourceOutOfService,
    Site,
    SiteClosure,
    SiteResource,
    TrialSite,
)

User = Any  # settings.AUTH_USER_MODEL instance


class EnrollmentError(ValueError):
    """Enrollment was refused and nothing was written. `refused`: every participant refused,
    with every reason, in plain words; `problems`: those reasons (for a batch of more than one,
    each after the study id it is about)."""

    def __init__(self, refused: Sequence[tuple[Participant, list[str]]]):
        self.refused = list(refused)
        if len(self.refused) == 1:
            self.problems = list(self.refused[0][1])
        else:
            self.problems = [
                f"{participant.study_id}: {problem}"
                for participant, problems in self.refused
                for problem in problems
            ]
        super().__init__(
            "; ".join(
                f"{participant} cannot be enrolled: " + "; ".join(problems)
                for participant, problems in self.refused
            )
        )


class CalendarError(ValueError):
    """A calendar change was refused; the message says what and why. Nothing was written.
    `field`: the input at fault, where one is (a booking's `local_date` or `local_time`)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
        raise CalendarError(_("only the site's investigator confirms eligibility"))
    # The arm is chosen at enrollment, after the sign-off.
    problems = _enrollment_problems(participant, on, None, need_arm=False)[0]
    if problems:
        raise CalendarError(
            _("the machine checks fail: %(problems)s") % {"problems": "; ".join(problems)}
        )
    participant.eligibility_confirmed_by = by
    participant.eligibility_confirmed_at = timezone.now()
    _audited(participant, by, "eligibility confirmed by the investigator").save(
        update_fields=["eligibility_confirmed_by", "eligibility_confirmed_at"]
    )
    return participant


def _enrollment_problems(
    participant: Participant, on: dt.date, arm: Arm | None, *, need_arm: bool = True
) -> tuple[list[str], ProtocolSnapshot]:
    """Every reason `participant` cannot be enrolled on `on` with `arm`, in the reader's
    language. need_arm=False leaves out the arm (the investigator's sign-off comes before it)."""
    problems: list[str] = []
    if participant.status != Participant.Status.SCREENING:
        problems.append(
            _("status is %(status)s, expected screening") % {"status": _status(participant)}
        )
    anchors = participant_anchor_dates(participant=participant)
    problems += [
        eligibility_failure_words(failure)
        for failure in participant_eligibility_failures(
            participant=participant, on=anchors.get("consent", on)
        )
    ]
    version = participant.protocol_version
    arm_problem = False
    if arm is not None and arm.version_id != version.id:
        problems.append(
            _("arm %(arm)s is not an arm of %(version)s") % {"arm": arm.code, "version": version}
        )
        arm_problem = True
    snapshot = protocol_snapshot(version=version)
    if need_arm and arm is None and any(visit.arms for visit in snapshot.visits):
        problems.append(_("this protocol has arm-specific visits: a treatment arm is needed"))
        arm_problem = True
    if need_arm and not arm_problem:
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
    assignment. `participants_enroll` for one.
    """
    participants_enroll(
        enrollments=[Enrollment(participant, on, arm)],
        by=by,
        require_confirmation=require_confirmation,
    )
    return list(
        ScheduledVisit.objects.filter(participant=participant).order_by("target_date", "id")
    )


@dataclass(frozen=True)
class Enrollment:
    """One participant to enroll on `on`, with their randomised arm where the protocol has
    arm-specific visits."""

    participant: Participant
    on: dt.date
    arm: Arm | None = None


# Participants whose calendars are planned and written together (about 60 visits each): what
# a chunk plans stays in memory until it is written.
ENROLL_CHUNK = 500


@transaction.atomic
def participants_enroll(
    *,
    enrollments: Sequence[Enrollment],
    by: User | None = None,
    require_confirmation: bool = False,
) -> dict[int, int]:
    """Enroll many participants in screening at once (a cohort, or an ongoing trial's
    participants brought over from another system): what `participant_enroll` does for each,
    all or nothing, with a fixed number of statements per chunk of calendars rather than per
    participant (on Postgres the calendars, their history and their reminders are written with
    `COPY`).

    Refused with `EnrollmentError`, nothing written, if any one of them would be refused; it
    names every participant refused and every reason. Returns the number of visits planned for
    each participant, by id.
    """
    ids = [enrollment.participant.pk for enrollment in enrollments]
    if len(set(ids)) != len(ids):
        raise ValueError("participants_enroll takes each participant once")
    locked = {
        participant.pk: participant
        for participant in Participant.objects.select_for_update(of=("self",))
        .filter(pk__in=ids)
        .select_related("protocol_version", "trial", "site")
        .prefetch_related("anchors", machine_criteria_prefetch())
        .order_by("pk")
    }
    enrollments = [
        Enrollment(locked[enrollment.participant.pk], enrollment.on, enrollment.arm)
        for enrollment in enrollments
    ]
    refused: list[tuple[Participant, list[str]]] = []
    snapshots: dict[int, ProtocolSnapshot] = {}
    for enrollment in enrollments:
        participant = enrollment.participant
        problems, snapshots[participant.protocol_version_id] = _enrollment_problems(
            participant, enrollment.on, enrollment.arm
        )
        if require_confirmation and participant.eligibility_confirmed_by_id is None:
            problems.append(_("the site's investigator has not confirmed eligibility yet"))
        if problems:
            refused.append((participant, problems))
    if refused:
        raise EnrollmentError(refused)

    create_with_history(
        [
            TreatmentAssignment(participant=enrollment.participant, arm=enrollment.arm)
            for enrollment in enrollments
            if enrollment.arm is not None
        ],
        TreatmentAssignment,
        by=by,
        reason="randomised at enrollment",
    )
    now = timezone.now()
    participants = [enrollment.participant for enrollment in enrollments]
    for enrollment in enrollments:
        enrollment.participant.status = Participant.Status.ENROLLED
        enrollment.participant.enrolled_at = now
        enrollment.participant.enrolled_on = enrollment.on
    update_with_history(
        participants,
        Participant,
        ["status", "enrolled_at", "enrolled_on"],
        by=by,
        reason="enrolled",
    )
    # Queued before the calendars' first invites, so it is the first message to arrive.
    announce_welcome_many(participants)
    planned: dict[int, int] = {}
    by_version: dict[int, list[Participant]] = {}
    for participant in participants:
        by_version.setdefault(participant.protocol_version_id, []).append(participant)
    for version_id, cohort in by_version.items():
        version = cohort[0].protocol_version
        for start in range(0, len(cohort), ENROLL_CHUNK):
            chunk = cohort[start : start + ENROLL_CHUNK]
            stored = stored_calendars(chunk, versions=[version])
            pendings = [
                calendar_diff(
                    participant,
                    version=version,
                    snapshot=snapshots[version_id],
                    stored=stored[participant.pk],
                )
                for participant in chunk
            ]
            calendar_apply_many(pendings, by=by, reason="enrolled")
            planned.update(
                (pending.participant.pk, len(pending.visit_creates)) for pending in pendings
            )
            announce_to_site_systems_many(
                "participant.enrolled", [(participant, []) for participant in chunk]
            )
    return planned


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
    record_hint: str | None = None,
) -> None:
    """Refuse a booking before the site's today, or today at a time already past."""
    now = site_now(site)
    words = {
        "what": what,
        "date": local_date.isoformat(),
        "time": f"{local_time:%H:%M}",
        "today": now.date().isoformat(),
        "zone": site.timezone,
        "now": f"{now:%H:%M %Z}",
        "hint": record_hint if record_hint is not None else _("use “Record done”"),
    }
    if local_date < now.date():
        raise CalendarError(
            _(
                "%(what)s cannot be booked for %(date)s: that day is in the past at the site "
                "(today is %(today)s in %(zone)s). To record a visit that already happened, "
                "%(hint)s."
            )
            % words,
            field="local_date",
        )
    if start < now - BOOKING_GRACE:
        raise CalendarError(
            _(
                "%(what)s cannot be booked for %(time)s on %(date)s: that time has already "
                "passed at the site (it is %(now)s there now). Book a later time; to record a "
                "visit that already happened, %(hint)s."
            )
            % words,
            field="local_time",
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
            _(
                "%(visit)s of %(participant)s was changed by someone else since you opened it "
                "(it is at version %(version)s, yours is %(yours)s); reload it and try again"
            )
            % {
                "visit": locked.code,
                "participant": locked.participant,
                "version": locked.version,
                "yours": expected_version,
            }
        )
    return locked


def _status(row: Participant | ScheduledVisit) -> str:
    """A participant's or a visit's status as a word of the reader's language ("withdrawn")."""
    return _(row.status.replace("_", " "))


# What a closed visit cannot have done to it, as the end of the sentence in _require_open.
def _open_actions() -> dict[str, str]:
    return {
        "booked": _("only planned or booked visits can be booked"),
        "recorded as done": _("only planned or booked visits can be recorded as done"),
        "marked missed": _("only planned or booked visits can be marked missed"),
        "marked cancelled": _("only planned or booked visits can be marked cancelled"),
    }


def _require_open(visit: ScheduledVisit, action: str) -> None:
    if not visit.is_open:
        raise CalendarError(
            _(
                "%(visit)s of %(participant)s is %(status)s; %(rule)s (completed, missed and "
                "cancelled visits are history)"
            )
            % {
                "visit": visit.code,
                "participant": visit.participant,
                "status": _status(visit),
                "rule": _open_actions()[action],
            }
        )


def _require_active(participant: Participant) -> None:
    if participant.status not in (Participant.Status.SCREENING, Participant.Status.ENROLLED):
        raise CalendarError(
            _("%(participant)s is %(status)s: the calendar is closed")
            % {"participant": participant, "status": _status(participant)}
        )


def _require_reason(reason: str, why: str) -> None:
    if not reason.strip():
        raise CalendarError(_("a reason is required: %(why)s") % {"why": why})


def _visit_key(visit: ScheduledVisit) -> tuple[str, int]:
    assert visit.visit_definition is not None
    return (visit.visit_definition.code, visit.occurrence)


def _require_whole_minute(local_time: dt.time) -> None:
    # Bookings, slots and holds are on whole minutes; a time with seconds is a typing slip or
    # a machine's, never a clinic's.
    if local_time.second or local_time.microsecond:
        raise CalendarError(
            _("%(time)s has seconds: bookings are made to the minute (%(minute)s)")
            % {"time": local_time.isoformat(), "minute": f"{local_time:%H:%M}"}
        )


def _booking(visit: ScheduledVisit, local_date: dt.date, local_time: dt.time) -> BookingPreview:
    _require_whole_minute(local_time)
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
        _("%(visit)s cannot start at %(time)s on %(date)s: %(why)s. %(nearest)s")
        % {
            "visit": visit.code,
            "time": _hhmm(start, site.timezone),
            "date": day.isoformat(),
            "why": why,
            "nearest": nearest_words(nearest, site.timezone, visit.window_start, visit.window_end),
        },
        field="local_time",
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
                    words = (
                        _("no %(kind)s is free from %(start)s to %(end)s (needed for %(step)s)")
                        if staff
                        else _(
                            "the %(kind)s is full from %(start)s to %(end)s (needed for %(step)s)"
                        )
                    )
                    full.append(
                        words
                        % {
                            "kind": need.kind,
                            "start": _hhmm(begins, zone),
                            "end": _hhmm(ends, zone),
                            "step": step.procedure,
                        }
                    )
        return "; ".join(full) or _("what is already booked leaves no room at that time")
    day_search = find_slots(
        plan, calendar, (), window_start=day, window_end=day, target=day, count=1
    )
    if not day_search.slots:
        return obstacles_words(day_search.obstacles)
    end = start + dt.timedelta(minutes=max(e for _start, e in plan_layout(plan)))
    hours = [f"{h.start:%H:%M}-{h.end:%H:%M}" for h in calendar.hours if h.weekday == day.weekday()]
    own = [
        f"{r.kind} {h.start:%H:%M}-{h.end:%H:%M}"
        for r in calendar.resources
        for h in r.hours or ()
        if h.weekday == day.weekday()
    ]
    return _(
        "the visit would run %(start)s-%(end)s, outside the site's opening hours (%(hours)s) "
        "or its resources' hours (%(own)s) or out of service"
    ) % {
        "start": _hhmm(start, zone),
        "end": _hhmm(end, zone),
        "hours": ", ".join(hours),
        "own": ", ".join(dict.fromkeys(own)) or _("the same"),
    }


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
        _require_reason(
            reason,
            _("%(visit)s is already booked, so this is a reschedule") % {"visit": visit.code},
        )
    if preview.deviation_days:
        days = abs(preview.deviation_days)
        words = {
            "date": preview.booked_date.isoformat(),
            "days": days,
            "visit": visit.code,
            "start": visit.window_start.isoformat(),
            "end": visit.window_end.isoformat(),
        }
        _require_reason(
            reason,
            (
                ngettext(
                    "%(date)s is %(days)d day before the window of %(visit)s "
                    "(%(start)s to %(end)s)",
                    "%(date)s is %(days)d days before the window of %(visit)s "
                    "(%(start)s to %(end)s)",
                    days,
                )
                if preview.deviation_days < 0
                else ngettext(
                    "%(date)s is %(days)d day after the window of %(visit)s (%(start)s to %(end)s)",
                    "%(date)s is %(days)d days after the window of %(visit)s "
                    "(%(start)s to %(end)s)",
                    days,
                )
            )
            % words,
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
    # The person's reason whole, after the change's name ("V3 booked: ..."); none, no colon.
    change = f"{visit.code} {default_reason}"
    calendar_apply(pending, by=by, reason=f"{change}: {reason}" if reason else change)
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
            unplaced.append(
                Unplaced(visit, search_words(search, visit.window_start, visit.window_end))
            )
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


# ----------------------------------------------------------------------------------------
# A site-level re-plan: the bookings an out-of-service period or a closure breaks, moved

# What breaks bookings: a resource out of service for a period, or a day the site closes.
ReplanCause = ResourceOutOfService | SiteClosure


@dataclass(frozen=True)
class ReplanMove:
    """One booking the cause breaks and where the re-plan would move it.

    window: the window searched (target, first and last day), as earlier moves of the same
    participant leave it. slot: the proposed start: inside the window, or when nothing fits
    there the nearest start outside it (`slot.days_out` days out, a deviation); None when
    nothing fits within `HOLD_SEARCH_HORIZON_DAYS` of the window either. reason: why nothing
    fits inside the window ('' when something does), in the reader's words.
    """

    visit: ScheduledVisit
    old_start: dt.datetime
    window: tuple[dt.date, dt.date, dt.date]
    slot: Slot | None
    reason: str = ""

    @property
    def deviation(self) -> bool:
        return self.slot is not None and self.slot.deviation


@dataclass(frozen=True)
class SiteReplan:
    """What a re-plan would do: the broken bookings in the order they would be moved (their
    old starts), each participant's calendar change that follows (visits counted from a
    moved one), how many broken bookings the caller may not move, and the digest that a
    confirm must carry (it changes when anything the proposals depend on changes)."""

    site: Site
    cause: str
    moves: tuple[ReplanMove, ...]
    knock_on: tuple[tuple[Participant, CalendarDiff], ...]
    not_yours: int
    digest: str


@dataclass(frozen=True)
class SiteReplanResult:
    booked: tuple[BookingPreview, ...]
    unplaced: tuple[ReplanMove, ...]


def _cause_site(cause: ReplanCause) -> Site:
    if isinstance(cause, ResourceOutOfService):
        return Site.objects.get(resources=cause.resource_id)
    return Site.objects.get(pk=cause.site_id)


def _cause_words(cause: ReplanCause, site: Site) -> str:
    if isinstance(cause, ResourceOutOfService):
        return _("%(resource)s out of service from %(start)s to %(end)s (%(reason)s)") % {
            "resource": cause.resource.name,
            "start": zone_time(cause.start, site.timezone),
            "end": zone_time(cause.end, site.timezone),
            "reason": cause.reason,
        }
    return _("%(site)s closed on %(date)s (%(reason)s)") % {
        "site": site.name,
        "date": cause.date.isoformat(),
        "reason": cause.reason,
    }


def _broken_bookings(cause: ReplanCause, now: dt.datetime) -> QuerySet[ScheduledVisit]:
    """Booked visits that have not started yet and that the cause breaks: a hold on the
    resource overlapping the period, or a booking on the closed day (site-local)."""
    booked = ScheduledVisit.objects.filter(
        status=ScheduledVisit.Status.BOOKED, booked_start__gte=now
    )
    if isinstance(cause, ResourceOutOfService):
        holding = BookingHold.objects.filter(
            resource=cause.resource_id, start__lt=cause.end, end__gt=cause.start
        )
        return booked.filter(pk__in=holding.values("visit_id"))
    return booked.filter(participant__site=cause.site_id, booked_date=cause.date)


def _hold_of(row: BookingHold) -> Hold:
    # The same Hold `site_holds` reads for the row, so the two can be subtracted.
    return Hold(
        resource=row.resource.name if row.resource is not None else row.staff_kind,
        start=row.start,
        end=row.end,
        count=row.count,
        kind=row.resource.kind if row.resource is not None else row.staff_kind,
        procedure=row.procedure,
        staff=row.resource is None,
    )


def _replan_window(
    visit: ScheduledVisit, moved: Mapping[tuple[str, int], dt.date]
) -> tuple[dt.date, dt.date, dt.date]:
    """The visit's (target, window start, window end) once the participant's earlier moves
    (`moved`) are booked: a visit counted from a moved one moves with it."""
    stored = (visit.target_date, visit.window_start, visit.window_end)
    if not moved or visit.visit_definition is None:
        return stored
    key = _visit_key(visit)
    for change in calendar_diff(visit.participant, visit_dates=moved).diff.visits:
        if (change.visit_code, change.occurrence) == key and change.new_window is not None:
            assert change.new_target is not None
            return (change.new_target, *change.new_window)
    return stored


def _replan(
    cause: ReplanCause, visits: QuerySet[ScheduledVisit] | None, *, lock: bool
) -> SiteReplan:
    site = _cause_site(cause)
    now = site_now(site)
    broken = _broken_bookings(cause, now).select_related("participant__site", "visit_definition")
    if lock:
        broken = broken.select_for_update(of=("self",))
    every = list(broken.order_by("booked_start", "id"))
    allowed = (
        {v.pk for v in every}
        if visits is None
        else set(visits.filter(pk__in=[v.pk for v in every]).values_list("pk", flat=True))
    )
    mine = [v for v in every if v.pk in allowed]
    own: dict[int, list[Hold]] = {}
    for row in BookingHold.objects.filter(visit__in=mine).select_related("resource"):
        own.setdefault(row.visit_id, []).append(_hold_of(row))
    horizon = dt.timedelta(days=HOLD_SEARCH_HORIZON_DAYS)
    # Each booking is searched as the confirm will book it: the bookings moved before it
    # hold their new slots and no longer their old ones; those after it still hold theirs.
    proposed: list[Hold] = []
    freed: Counter[Hold] = Counter()
    moved: dict[int, dict[tuple[str, int], dt.date]] = {}
    moves: list[ReplanMove] = []
    for visit in mine:
        assert visit.booked_start is not None
        participant_moves = moved.setdefault(visit.participant_id, {})
        target, first, last = _replan_window(visit, participant_moves)
        calendar = site_calendar(site, first - horizon, last + horizon)
        plan = visit_slot_plan(visit, calendar) if calendar.hours or calendar.resources else None
        if plan is None:
            moves.append(
                ReplanMove(
                    visit,
                    visit.booked_start,
                    (target, first, last),
                    None,
                    _(
                        "%(visit)s has no stated length or its site keeps no calendar: "
                        "rebook it by its local date and time"
                    )
                    % {"visit": visit.code},
                )
            )
            continue
        existing = Counter(site_holds(site, first - horizon, last + horizon, excluding=visit))
        existing -= freed
        search = find_slots(
            plan,
            calendar,
            index_holds([*existing.elements(), *proposed]),
            window_start=first,
            window_end=last,
            target=min(max(target, first), last),
            count=1,
            horizon_days=HOLD_SEARCH_HORIZON_DAYS,
            not_before=now,
        )
        slot = (search.slots or search.deviations or (None,))[0]
        reason = search_words(search, first, last, horizon_days=HOLD_SEARCH_HORIZON_DAYS)
        moves.append(ReplanMove(visit, visit.booked_start, (target, first, last), slot, reason))
        if slot is not None:
            freed.update(own.get(visit.pk, []))
            proposed.extend(slot.holds)
            if visit.visit_definition is not None:
                participant_moves[_visit_key(visit)] = slot.day
    knock_on = []
    participants = {v.participant_id: v.participant for v in mine}
    for participant_id, dates in moved.items():
        if dates:
            diff = calendar_diff(participants[participant_id], visit_dates=dates).diff
            if diff:
                knock_on.append((participants[participant_id], diff))
    fingerprint = repr(
        (
            type(cause).__name__,
            cause.pk,
            _cause_words(cause, site),
            [
                (
                    m.visit.pk,
                    m.visit.version,
                    m.old_start.isoformat(),
                    m.slot.start_utc.isoformat() if m.slot else "",
                    m.slot.days_out if m.slot else None,
                    m.window,
                )
                for m in moves
            ],
            [(p.pk, diff) for p, diff in knock_on],
            len(every) - len(mine),
        )
    )
    return SiteReplan(
        site=site,
        cause=_cause_words(cause, site),
        moves=tuple(moves),
        knock_on=tuple(knock_on),
        not_yours=len(every) - len(mine),
        digest=hashlib.sha256(fingerprint.encode()).hexdigest()[:32],
    )


def site_replan_preview(
    *, cause: ReplanCause, visits: QuerySet[ScheduledVisit] | None = None
) -> SiteReplan:
    """The bookings a resource's out-of-service period or a site closure breaks, and a new
    slot for each, without writing anything.

    Broken: booked visits that have not started, holding the resource during the period, or
    booked on the closed day. Each is proposed the first slot the finder gives inside its
    window (days nearest its target first, then the earliest start; from the site's now on),
    in the order of the old starts, none colliding with another proposal or an existing hold;
    a visit counted from a moved one is searched in its moved window. When nothing fits
    inside, the nearest start outside it is proposed as a deviation with the reason. `visits`
    (the caller's writable visits) limits which broken bookings are moved; the others are
    only counted.
    """
    return _replan(cause, visits, lock=False)


@transaction.atomic
def site_replan(
    *,
    cause: ReplanCause,
    digest: str,
    reason: str,
    by: User,
    visits: QuerySet[ScheduledVisit] | None = None,
) -> SiteReplanResult:
    """Move the bookings `site_replan_preview` proposed, each through `visit_book` (holds
    move, the audit trail says who and why, participants get updated invites), if nothing
    they depend on changed since the preview: `digest` is the preview's. A booking with no
    slot near its window stays as it is and is returned as unplaced."""
    _require_reason(reason, _("moving bookings is a reschedule"))
    site = _cause_site(cause)
    # The lock visit_book takes, taken first for the whole re-plan: no booking at the site
    # lands between the proposals and their booking.
    list(
        SiteResource.objects.filter(site=site)
        .order_by("pk")
        .select_for_update()
        .values_list("pk", flat=True)
    )
    replan = _replan(cause, visits, lock=True)
    if replan.digest != digest:
        raise CalendarError(
            _(
                "Bookings, visits or the site's calendar changed since this re-plan was "
                "previewed: nothing was rebooked. Preview it again and confirm what it then "
                "shows."
            )
        )
    if not replan.moves:
        raise CalendarError(
            _("%(cause)s breaks no booking you may move: nothing to rebook.")
            % {"cause": replan.cause}
        )
    booked: list[BookingPreview] = []
    for move in replan.moves:
        if move.slot is None:
            continue
        booked.append(
            visit_book(
                visit=move.visit,
                local_date=move.slot.day,
                local_time=move.slot.start.time(),
                by=by,
                reason=reason,
            )
        )
    return SiteReplanResult(tuple(booked), tuple(m for m in replan.moves if m.slot is None))


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
            _(
                "%(visit)s cannot be recorded as done on %(date)s: that is after today "
                "(%(today)s) at the site"
            )
            % {"visit": visit.code, "date": actual_date.isoformat(), "today": today.isoformat()}
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
            _("%(unknown)s is not planned at %(visit)s; its procedures are %(procedures)s")
            % {
                "unknown": ", ".join(unknown),
                "visit": visit.code,
                "procedures": ", ".join(p.procedure.code for p in procedures) or _("none"),
            }
        )
    for code, why in not_done.items():
        _require_reason(
            why,
            _("procedure %(procedure)s was not done at %(visit)s")
            % {"procedure": code, "visit": visit.code},
        )
    deviation = deviation_days(actual_date, visit.window_start, visit.window_end)
    if deviation:
        days = abs(deviation)
        words = {
            "visit": visit.code,
            "days": days,
            "start": visit.window_start.isoformat(),
            "end": visit.window_end.isoformat(),
        }
        _require_reason(
            reason,
            (
                ngettext(
                    "%(visit)s was done %(days)d day before its window (%(start)s to %(end)s)",
                    "%(visit)s was done %(days)d days before its window (%(start)s to %(end)s)",
                    days,
                )
                if deviation < 0
                else ngettext(
                    "%(visit)s was done %(days)d day after its window (%(start)s to %(end)s)",
                    "%(visit)s was done %(days)d days after its window (%(start)s to %(end)s)",
                    days,
                )
            )
            % words,
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
    update_with_history(
        procedures,
        ScheduledProcedure,
        ["status", "not_done_reason"],
        by=by,
        reason=f"{visit.code} done",
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
    _require_reason(
        reason,
        (
            _("%(visit)s is being marked missed")
            if status == ScheduledVisit.Status.MISSED
            else _("%(visit)s is being marked cancelled")
        )
        % {"visit": visit.code},
    )
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
    _require_reason(reason, _("an unscheduled visit must say why it is needed"))
    procedures = {
        p.code: p for p in ProcedureDefinition.objects.filter(version=participant.protocol_version)
    }
    unknown = [code for code in procedure_codes if code not in procedures]
    if unknown:
        raise CalendarError(
            _("unknown procedure(s) %(unknown)s; %(version)s has %(procedures)s")
            % {
                "unknown": ", ".join(unknown),
                "version": participant.protocol_version,
                "procedures": ", ".join(sorted(procedures)),
            }
        )
    start = local_to_utc(local_date, local_time, participant.site.timezone) if local_time else None
    if local_time is not None and start is not None:
        _require_not_past(
            _("an unscheduled visit"),
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
    _require_reason(reason, _("the %(anchor)s date is being changed") % {"anchor": code})
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
            _("'%(code)s' is not an anchor of %(version)s; it has %(anchors)s")
            % {
                "code": code,
                "version": participant.protocol_version,
                "anchors": ", ".join(sorted(codes)),
            }
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
        raise CalendarError(
            _("%(participant)s has no taper '%(taper)s'")
            % {"participant": participant, "taper": milestone_code}
        )
    if week not in steps or week == 0:
        raise CalendarError(
            _(
                "week %(week)s is not a step of %(taper)s that can be adjusted; the taper runs "
                "from week 1 to week %(last)s"
            )
            % {"week": week, "taper": milestone_code, "last": max(steps)}
        )
    if dose_mg is not None:
        _check_prescribed_dose(participant, milestone_code, dose_mg)
    previous = steps[week - 1].dose_mg
    if dose_mg is not None and previous is not None and dose_mg > previous and not allow_increase:
        raise CalendarError(
            _(
                "%(dose)s mg/day is more than week %(week)s's %(previous)s mg/day; a taper never "
                "increases unless the investigator confirms the increase"
            )
            % {
                "dose": _plain_mg(dose_mg),
                "week": week - 1,
                "previous": _plain_mg(previous),
            }
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
        raise CalendarError(
            _("%(dose)s mg/day is not a dose: a prescribed dose is 0 mg/day or more") % {"dose": mg}
        )
    column_max, resolution = _dose_column()
    if dose_mg > column_max or dose_mg % resolution:
        raise CalendarError(
            _(
                "%(dose)s mg/day cannot be recorded: doses are recorded to %(resolution)s mg, up "
                "to %(max)s mg/day"
            )
            % {"dose": mg, "resolution": resolution, "max": column_max}
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
                _("its ceiling of %(ceiling)s mg/day") % {"ceiling": _plain_mg(ceiling)}
                if ceiling < by_weight
                else f"{_plain_mg(spec.initial_mg_per_kg)} mg/kg/day × {_plain_mg(weight)} kg = "
                f"{_plain_mg(by_weight)} mg/day"
            )
            raise CalendarError(
                _("%(dose)s mg/day is above what the protocol allows %(participant)s: %(why)s")
                % {"dose": mg, "participant": participant, "why": why}
            )
    if not spec.exact_doses and dose_mg % spec.step_mg:
        lower = floor_to_step(dose_mg, spec.step_mg)
        nearest = [lower, lower + spec.step_mg]
        allowed = [d for d in nearest if ceiling is None or d <= ceiling]
        raise CalendarError(
            _("%(dose)s mg is not a multiple of the %(step)s mg tablet; prescribe %(doses)s")
            % {
                "dose": mg,
                "step": _plain_mg(spec.step_mg),
                "doses": _(" or ").join(f"{_plain_mg(d)} mg" for d in allowed),
            }
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
    _require_reason(reason, _("a taper decision must say why"))
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
    update_with_history(
        visits, ScheduledVisit, ["status", "reason", "version", "ical_sequence"], by=by, reason=why
    )
    BookingHold.objects.filter(visit__in=visits).delete()
    announce_visits(participant, visits)
    for milestone in milestones:
        milestone.status = ScheduledMilestone.Status.CANCELLED
    update_with_history(milestones, ScheduledMilestone, ["status"], by=by, reason=why)
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
    participant = (
        Participant.objects.select_for_update().select_related("site").get(pk=participant.pk)
    )
    _require_active(participant)
    _require_reason(reason, _("a withdrawal must say why"))
    participation_end_check(participant, on)
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


def participation_end_check(participant: Participant, on: dt.date) -> None:
    """The day a participation ends has come (the site's today at the latest: dated later,
    the participant would be closed now while the visits before that day stayed open, with
    no reminders) and is not before the enrollment's day, where it is recorded."""
    today = site_today(participant.site)
    if on > today:
        raise CalendarError(
            _("a participation ends on or before the site's today (%(today)s), not on %(date)s")
            % {"today": today.isoformat(), "date": on.isoformat()},
            field="on",
        )
    if participant.enrolled_on is not None and on < participant.enrolled_on:
        raise CalendarError(
            _("a participation ends on or after its enrollment (%(enrolled)s), not on %(date)s")
            % {"enrolled": participant.enrolled_on.isoformat(), "date": on.isoformat()},
            field="on",
        )


@transaction.atomic
def participant_complete(
    *, participant: Participant, on: dt.date, by: User, reason: str = "completed the study"
) -> Participant:
    """Mark an enrolled participant as having completed the study. Refused while visits are
    still planned or booked: record or cancel them first, so nothing is closed silently."""
    participant = (
        Participant.objects.select_for_update().select_related("site").get(pk=participant.pk)
    )
    if participant.status != Participant.Status.ENROLLED:
        raise CalendarError(
            _("%(participant)s is %(status)s, not enrolled")
            % {"participant": participant, "status": _status(participant)}
        )
    participation_end_check(participant, on)
    open_visits = list(
        ScheduledVisit.objects.filter(
            participant=participant, status__in=ScheduledVisit.OPEN
        ).select_related("visit_definition")
    )
    if open_visits:
        raise CalendarError(
            _("%(participant)s still has open visits: %(visits)s")
            % {
                "participant": participant,
                "visits": ", ".join(f"{v.code} ({_status(v)})" for v in open_visits),
            }
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
            _("%(participant)s is %(status)s, not in screening")
            % {"participant": participant, "status": _status(participant)}
        )
    _require_reason(reason, _("a screen failure must say why (the criterion not met)"))
    today = site_today(participant.site)
    if on > today:
        raise CalendarError(
            _(
                "a screen failure is recorded on or before the site's today (%(today)s), not on "
                "%(date)s"
            )
            % {"today": today.isoformat(), "date": on.isoformat()},
            field="on",
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
        raise CalendarError(
            _("%(version)s is not a version of %(trial)s")
            % {"version": version, "trial": participant.trial}
        )
    if not version.is_published:
        raise CalendarError(
            _("%(version)s is a draft; publish it before moving anyone onto it")
            % {"version": version}
        )
    _require_active(participant)


# Participants a site's amendment reads and re-plans together (about 60 visits each).
SITE_MOVE_CHUNK = 200


def _moved(version: ProtocolVersion, reason: str) -> str:
    """The reason a calendar change records when an amendment moves it."""
    return f"moved to {version}: {reason}"


def participant_move_to_version_preview(
    *,
    participant: Participant,
    version: ProtocolVersion,
    on: dt.date,
    snapshot: ProtocolSnapshot | None = None,
) -> CalendarDiff:
    """What moving a participant onto another protocol version from `on` would change."""
    _check_move(participant, version)
    return calendar_diff(
        participant, version=version, not_before=on, snapshot=snapshot, amendment=True
    ).diff


@transaction.atomic
def participant_move_to_version(
    *,
    participant: Participant,
    version: ProtocolVersion,
    on: dt.date,
    by: User,
    reason: str,
    snapshot: ProtocolSnapshot | None = None,
) -> CalendarDiff:
    """Move a participant onto an amended protocol version from `on`.

    Only open visits and planned milestones dated on or after `on` are re-planned under the new
    version (added, moved, or cancelled when the amendment drops them); history, and what
    lies before `on`, keeps the version it was planned under. Completed and withdrawn
    participants are never moved. `snapshot`: the version's, when the caller moves many
    participants (read once, not once each).
    """
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    _check_move(participant, version)
    _require_reason(reason, _("an amendment must be named"))
    pending: PendingCalendar = calendar_diff(
        participant, version=version, not_before=on, snapshot=snapshot, amendment=True
    )
    participant.protocol_version = version
    _audited(participant, by, reason).save(update_fields=["protocol_version"])
    return calendar_apply(pending, by=by, reason=_moved(version, reason))


def _check_site_move(
    site: Site, version: ProtocolVersion, approved_on: dt.date, on: dt.date
) -> None:
    if not version.is_published:
        raise CalendarError(
            _("%(version)s is a draft; publish it before a site approves it") % {"version": version}
        )
    if not TrialSite.objects.filter(trial=version.trial_id, site=site).exists():
        raise CalendarError(
            _("%(site)s does not take part in %(trial)s") % {"site": site, "trial": version.trial}
        )
    if on < approved_on:
        raise CalendarError(
            _(
                "%(site)s approved %(version)s on %(approved)s; participants cannot be moved onto "
                "it on %(date)s, before that date"
            )
            % {
                "site": site,
                "version": version,
                "approved": approved_on.isoformat(),
                "date": on.isoformat(),
            }
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
    snapshot = protocol_snapshot(version=version)
    return {
        participant.study_id: participant_move_to_version_preview(
            participant=participant, version=version, on=on, snapshot=snapshot
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
    _require_reason(reason, _("an amendment must be named"))
    trial_site = TrialSite.objects.select_for_update().get(trial=version.trial, site=site)
    trial_site.protocol_version = version
    trial_site.approved_on = approved_on
    _audited(trial_site, by, reason).save(update_fields=["protocol_version", "approved_on"])
    # What `participant_move_to_version` does for one, for the whole site: every mover locked
    # and moved onto the version in one statement each (with one history row each), the
    # version's plan read once, then each calendar re-planned.
    movers = list(_site_movers(site, version).select_for_update())
    # Those whose reminders were planned under the same rules as the version's: only what the
    # move changes of their calendars needs its reminders re-planned.
    rules = version_rules(version)
    leaving = ProtocolVersion.objects.filter(pk__in={p.protocol_version_id for p in movers})
    same_rules = {left.pk for left in leaving if version_rules(left) == rules}
    unchanged = {p.pk for p in movers if p.protocol_version_id in same_rules}
    for participant in movers:
        _check_move(participant, version)
        participant.protocol_version = version
    update_with_history(movers, Participant, ["protocol_version"], by=by, reason=reason)
    snapshot = protocol_snapshot(version=version)
    moved: dict[str, CalendarDiff] = {}
    # In chunks: what is read of a chunk's calendars at once stays in memory while it moves.
    for start in range(0, len(movers), SITE_MOVE_CHUNK):
        chunk = movers[start : start + SITE_MOVE_CHUNK]
        stored = stored_calendars(chunk)
        pendings = [
            calendar_diff(
                participant,
                version=version,
                not_before=on,
                snapshot=snapshot,
                stored=stored[participant.pk],
                amendment=True,
            )
            for participant in chunk
        ]
        changed = calendar_apply_many(
            pendings, by=by, reason=_moved(version, reason), sync_reminders=False
        )
        reminders_sync_many([p for p in chunk if p.pk in unchanged], only_visits=changed)
        reminders_sync_many([p for p in chunk if p.pk not in unchanged])
        moved.update((pending.participant.study_id, pending.diff) for pending in pendings)
    return moved


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
        "guardian_phone",
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


# Details that decide when a visit's first invite goes (`plan._first_invite_due`).
INVITE_TIME_FIELDS = frozenset({"timezone", "quiet_hours_start", "quiet_hours_end"})


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
            _("%(fields)s cannot be edited directly; use the participant's actions")
            % {"fields": ", ".join(refused)}
        )
    if (participant.quiet_hours_start is None) != (participant.quiet_hours_end is None):
        raise CalendarError(_("quiet hours need both a start and an end, or neither"))
    if "study_id" in fields:
        # As at registration: one id however it is typed, and no case variant of another's.
        participant.study_id = study_id_normalized(participant.study_id)
        taken = study_id_taken(
            participant.trial_id, participant.study_id, other_than=participant.pk
        )
        if taken:
            raise CalendarError(taken, field="study_id")
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
    if INVITE_TIME_FIELDS.intersection(fields):
        # A first invite waits for 09:00 on the participant's clock, outside their quiet
        # hours: a new zone or new quiet hours move the ones not sent yet.
        announce_visits(
            participant,
            ScheduledVisit.objects.filter(participant=participant, status__in=ScheduledVisit.OPEN),
        )
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
            _("%(visit)s of %(participant)s is not a visit done outside its window")
            % {"visit": visit.code, "participant": visit.participant}
        )
    if visit.reason:
        raise CalendarError(
            _("%(visit)s of %(participant)s already has a reason")
            % {"visit": visit.code, "participant": visit.participant}
        )
    _require_reason(reason, _("%(visit)s was done outside its window") % {"visit": visit.code})
    visit.reason = reason.strip()
    visit.version += 1
    _audited(visit, by, "deviation reason given").save(update_fields=["reason", "version"])
    return visit
