"""Booking against the site's capacity, for site systems: a visit's slots, booking by slot,
and the site's calendar as data.

Site systems speak HL7 FHIR R4's scheduling vocabulary, so the schema maps each answer to it
in its descriptions (there is no FHIR server here; the shapes are ours, the words theirs):

- a site's resource (an infusion chair, the PET/CT scanner) or staff kind is a FHIR
  **Schedule** whose `actor` is that resource (a Device or Location) or the staff
  (a PractitionerRole); the site itself is the **HealthcareService** / **Location** whose
  `availableTime` are the opening hours and whose `notAvailable` are the closures;
- a start the finder proposes is a **Slot** (`start`, `end`, `status` "free"), and each
  booking a resource holds is a Slot with `status` "busy" on that resource's Schedule;
- a booked visit is an **Appointment** (`status` "booked", "fulfilled" once done) whose
  `participant`s are the resources and staff it holds, each with its own period.

Instants are UTC ("Z"); each also comes on the site's wall clock with its offset, with the
site's IANA zone and its site-local date beside it. Reads are scoped by `scheduler.access`
(another site's visit or site is a 404) and never carry a treatment arm.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from scheduler import access
from scheduler.api import serializers as out
from scheduler.api.errors import Problem, Refused
from scheduler.api.preconditions import visit_etag
from scheduler.api.views import (
    IDEMPOTENCY_PARAM,
    IF_MATCH_PARAM,
    VisitOperation,
    _query,
    _readable_site,
    _readable_visit,
    inline_confirm_out,
)
from scheduler.booking import (
    CalendarBooking,
    SiteCalendarData,
    VisitSlots,
    site_calendar_data,
    slot_state,
    visit_slots,
)
from scheduler.engine.localtime import read_local_time
from scheduler.engine.slots import Hold, Hours, Slot, StaffShift
from scheduler.models import BookingHold, ScheduledVisit
from scheduler.services import CalendarError, VisitConflict, visit_book
from scheduler.slotwords import obstacle_words, slot_words

SLOTS_MAX = 50
CALENDAR_DAYS_MAX = 62
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SlotTaken(Problem):
    status_code = 409
    problem_type = "slot-taken"


def _utc(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _local(instant: dt.datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).isoformat()


# ----------------------------------------------------------------------------------------
# Output: FHIR Slot, Appointment.participant, Schedule, HealthcareService.availableTime


class SlotHoldOut(serializers.Serializer[Any]):
    """What a slot or a booking holds: FHIR Appointment.participant (actor = the resource or
    the staff kind, `period` = start to end); on the actor's Schedule it is a busy Slot."""

    resource = serializers.CharField(
        allow_null=True,
        help_text="The resource's name at the site (FHIR participant.actor: a Device or "
        "Location); null when staff are held.",
    )
    kind = serializers.CharField(
        help_text='The resource kind ("PET/CT scanner") or, for staff, the staff kind '
        '("infusion nurse"; FHIR participant.type).'
    )
    staff = serializers.BooleanField(help_text="True when a kind of staff is held.")
    count = serializers.IntegerField(help_text="How many of its capacity it takes.")
    procedure = serializers.CharField(help_text="The procedure code it is held for.")
    start = serializers.DateTimeField(help_text="UTC (FHIR participant.period.start).")
    end = serializers.DateTimeField(help_text="UTC (FHIR participant.period.end).")
    local_start = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    local_end = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")


def _hold_data(hold: Hold, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "resource": None if hold.staff else hold.resource,
        "kind": hold.kind or hold.resource,
        "staff": hold.staff,
        "count": hold.count,
        "procedure": hold.procedure,
        "start": _utc(hold.start),
        "end": _utc(hold.end),
        "local_start": _local(hold.start, zone),
        "local_end": _local(hold.end, zone),
    }


class SlotOut(serializers.Serializer[Any]):
    """A feasible start of the visit: a FHIR Slot with status "free" (`start`, `end`), and
    the holds it would take on each resource's Schedule."""

    start = serializers.DateTimeField(
        help_text="UTC (FHIR Slot.start). Book the slot by sending this as `slot`."
    )
    end = serializers.DateTimeField(help_text="UTC (FHIR Slot.end): when the visit ends.")
    local_start = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    local_end = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    local_date = serializers.DateField(help_text="The site-local date of the start.")
    timezone = serializers.CharField(help_text="The site's IANA zone.")
    status = serializers.ChoiceField(choices=["free"], help_text='FHIR Slot.status: "free".')
    days_out = serializers.IntegerField(
        help_text="0 inside the window; -n: n days before it opens; +n: n days after it "
        "closes (a protocol deviation)."
    )
    deviation = serializers.BooleanField(
        help_text="True outside the window: booking it needs a reason."
    )
    holds = SlotHoldOut(many=True)


def _slot_data(slot: Slot, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "start": _utc(slot.start_utc),
        "end": _utc(slot.end_utc),
        "local_start": _local(slot.start_utc, zone),
        "local_end": _local(slot.end_utc, zone),
        "local_date": slot.day.isoformat(),
        "timezone": zone.key,
        "status": "free",
        "days_out": slot.days_out,
        "deviation": slot.deviation,
        "holds": [_hold_data(h, zone) for h in slot.holds],
    }


class SlotObstacleOut(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(
        choices=["missing", "closed", "past", "short", "unavailable", "full"],
        help_text="missing: the site has no such resource or staff; closed: a closure, a "
        "weekend or no opening hours; past: too late to book; short: no opening interval "
        "long enough; unavailable: a resource or staff kind not there at the needed times; "
        "full: its bookings leave no room.",
    )
    subject = serializers.CharField(help_text="The kind, or the closure's reason.")
    days = serializers.ListField(child=serializers.DateField(), help_text="Site-local dates.")
    words = serializers.CharField(help_text="The same in the coordinator's words.")


class VisitSlotsOut(serializers.Serializer[Any]):
    visit = serializers.IntegerField(help_text="The visit's id.")
    visit_code = serializers.CharField()
    visit_etag = serializers.CharField(help_text="Send as If-Match to book one of the slots.")
    site = serializers.CharField(help_text="The site's code.")
    timezone = serializers.CharField(help_text="The site's IANA zone.")
    window_start = serializers.DateField(help_text="The window's first site-local day.")
    window_end = serializers.DateField(help_text="The window's last site-local day.")
    target_date = serializers.DateField(help_text="The protocol's target day.")
    searched_from = serializers.DateField(help_text="The first site-local day searched.")
    searched_to = serializers.DateField(help_text="The last site-local day searched.")
    slots = SlotOut(many=True, help_text="Inside the window, best first: nearest the target.")
    deviations = SlotOut(
        many=True,
        help_text="Only when nothing fits inside the whole window: the nearest starts "
        "outside it (within 14 days), flagged with their days out.",
    )
    reason = serializers.CharField(help_text="Empty when there are slots; else why not.")
    obstacles = SlotObstacleOut(many=True, help_text="Why not, per kind of obstacle.")


def _slots_data(visit: ScheduledVisit, found: VisitSlots) -> dict[str, Any]:
    site = visit.participant.site
    zone = ZoneInfo(site.timezone)
    return {
        "visit": visit.pk,
        "visit_code": visit.code,
        "visit_etag": visit_etag(visit),
        "site": site.code,
        "timezone": site.timezone,
        "window_start": visit.window_start,
        "window_end": visit.window_end,
        "target_date": visit.target_date,
        "searched_from": found.first,
        "searched_to": found.last,
        "slots": [_slot_data(s, zone) for s in found.slots],
        "deviations": [_slot_data(s, zone) for s in found.deviations],
        "reason": found.reason,
        "obstacles": [
            {
                "kind": o.kind,
                "subject": o.subject,
                "days": [d.isoformat() for d in o.days],
                "words": obstacle_words(o),
            }
            for o in (found.search.obstacles if found.search and not found.slots else ())
        ],
    }


class SlotQuery(serializers.Serializer[Any]):
    count = serializers.IntegerField(
        required=False, default=5, min_value=1, max_value=SLOTS_MAX, help_text="How many slots."
    )
    per_day = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=SLOTS_MAX,
        help_text="At most this many on one day (1: one a day, to offer a spread of days).",
    )
    locals()["from"] = out.BoundedDateField(
        required=False, help_text="Only days on or after this site-local date."
    )
    to = out.BoundedDateField(
        required=False, help_text="Only days on or before this site-local date."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" in attrs and "to" in attrs and attrs["from"] > attrs["to"]:
            raise serializers.ValidationError({"to": ["must be on or after 'from'"]})
        return attrs


class VisitSlotsView(generics.GenericAPIView[ScheduledVisit]):
    """The visit's earliest feasible starts inside its window (FHIR Slots, status "free"):
    days nearest the target first, then the earliest start in the day, each with the
    resources and staff it would hold and when (FHIR Appointment.participant). Only the
    site's open days and hours, each resource's own hours and out-of-service periods, and
    what other bookings leave of each resource's capacity are offered; nothing before now.
    When nothing fits: `reason` says why in the coordinator's words (Accept-Language: ja
    for Japanese), `obstacles` the same as data, and `deviations` the nearest starts outside
    the window with their days out. `from`/`to` narrow the days searched inside the window.
    Book one with POST …/book-slot/."""

    serializer_class = VisitSlotsOut

    @extend_schema(parameters=[SlotQuery], summary="A visit's free slots (FHIR Slot)")
    def get(self, request: Request, pk: int) -> Response:
        visit = _readable_visit(request, pk)
        query = _query(SlotQuery, request)
        window_start, window_end = visit.window_start, visit.window_end
        first, last = query.get("from"), query.get("to")
        if (first is not None and first > window_end) or (last is not None and last < window_start):
            message = (
                f"the days asked do not meet the window of {visit.code} "
                f"({window_start.isoformat()} to {window_end.isoformat()})"
            )
            raise exceptions.ValidationError({"from" if first is not None else "to": [message]})
        found = visit_slots(
            visit,
            now=access.site_now(visit.participant.site),
            count=query["count"],
            per_day=query.get("per_day"),
            first=first,
            last=last,
        )
        return Response(
            VisitSlotsOut(_slots_data(visit, found)).data, headers={"ETag": visit_etag(visit)}
        )


# ----------------------------------------------------------------------------------------
# Booking by slot: a FHIR Appointment from a Slot


class SlotField(out.InstantField):
    """An instant with its zone, on a whole minute (slots start on whole minutes)."""

    advice = "send a slot's start as the slots endpoint gives it, e.g. 2026-02-03T13:00:00Z"
    zone_advice = ", as the slots endpoint gives it"

    def to_internal_value(self, value: Any) -> dt.datetime:
        start = super().to_internal_value(value)
        if start.second or start.microsecond:
            raise serializers.ValidationError(
                f"slots start on whole minutes; {start.time().isoformat()} has seconds or "
                "fractions of a second: send the slot's start as the slots endpoint gives it"
            )
        return start


class SlotBookingOut(serializers.Serializer[Any]):
    """The booking as a FHIR Appointment: status "booked", start, end, participants."""

    visit_code = serializers.CharField()
    status = serializers.ChoiceField(
        choices=["booked"], help_text='FHIR Appointment.status: "booked".'
    )
    booked_start = serializers.DateTimeField(help_text="UTC (FHIR Appointment.start).")
    booked_end = serializers.DateTimeField(
        allow_null=True,
        help_text="UTC (FHIR Appointment.end): when the last hold ends, else the visit's "
        "stated length after the start; null when unknown.",
    )
    local_start = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    booked_date = serializers.DateField(help_text="The site-local date booked.")
    timezone = serializers.CharField(help_text="The site's IANA zone.")
    deviation_days = serializers.IntegerField(help_text="Days outside the window; 0 inside.")
    holds = SlotHoldOut(
        many=True,
        help_text="What the visit now holds (FHIR Appointment.participant); empty at a site "
        "without resources or for a visit whose protocol names none.",
    )
    calendar = out.CalendarDiffOut()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        visit: ScheduledVisit = instance["visit"]
        booking = instance["booking"]
        zone = ZoneInfo(visit.participant.site.timezone)
        holds = [
            Hold(
                resource=row.resource.name if row.resource is not None else row.staff_kind,
                start=row.start,
                end=row.end,
                count=row.count,
                kind=row.resource.kind if row.resource is not None else row.staff_kind,
                procedure=row.procedure,
                staff=row.resource is None,
            )
            for row in BookingHold.objects.filter(visit=visit)
            .select_related("resource")
            .order_by("start", "id")
        ]
        definition = visit.visit_definition
        end: dt.datetime | None = max((h.end for h in holds), default=None)
        if end is None and definition is not None and definition.duration_minutes:
            end = booking.booked_start + dt.timedelta(minutes=definition.duration_minutes)
        return {
            "visit_code": booking.visit_code,
            "status": "booked",
            "booked_start": _utc(booking.booked_start),
            "booked_end": _utc(end) if end is not None else None,
            "local_start": _local(booking.booked_start, zone),
            "booked_date": booking.booked_date.isoformat(),
            "timezone": zone.key,
            "deviation_days": booking.deviation_days,
            "holds": [_hold_data(h, zone) for h in holds],
            "calendar": out.calendar_diff_data(booking.calendar),
        }


def _slot_taken(visit: ScheduledVisit, start: dt.datetime) -> SlotTaken:
    site = visit.participant.site
    zone = ZoneInfo(site.timezone)
    local = start.astimezone(zone)
    free = visit_slots(visit, now=access.site_now(site), count=3, per_day=1)
    starts = free.slots or free.deviations
    message = _(
        "the slot %(time)s on %(date)s (%(zone)s; %(utc)s) of %(visit)s was booked by someone "
        "else since you read it, so nothing was booked. Read the visit's slots again (GET "
        "/api/v1/visits/%(id)s/slots/) and book one of them; free now: %(free)s"
    ) % {
        "time": f"{local:%H:%M}",
        "date": local.date().isoformat(),
        "zone": site.timezone,
        "utc": _utc(start),
        "visit": visit.code,
        "id": visit.pk,
        "free": ", ".join(slot_words(s, site.timezone) for s in starts) or free.reason,
    }
    return SlotTaken(message, errors=[{"field": "slot", "message": message}])


def _no_such_slot(visit: ScheduledVisit, start: dt.datetime, state: str) -> Refused:
    site = visit.participant.site
    local = start.astimezone(ZoneInfo(site.timezone))
    words = {
        "time": f"{local:%H:%M}",
        "date": local.date().isoformat(),
        "zone": site.timezone,
        "visit": visit.code,
        "id": visit.pk,
    }
    if state == "none":
        message = visit_slots(visit, now=access.site_now(site)).reason
    else:
        message = (
            _(
                "%(visit)s has no slot starting at %(time)s on %(date)s (%(zone)s): the site is "
                "closed then, or the visit would not fit its opening hours or its resources' "
                "hours. GET /api/v1/visits/%(id)s/slots/ for the starts that fit"
            )
            % words
        )
    return Refused(message, errors=[{"field": "slot", "message": message}])


class VisitBookSlot(VisitOperation):
    """Book (or move) a visit at a slot from GET …/slots/: its `start`, as given. The same
    booking as POST …/book/ (the slot's resources and staff are held atomically; a slot
    outside the window is a deviation and needs a reason, as does a reschedule), without a
    preview: the slot is what was chosen. A slot booked by someone else since it was read is
    a 409 `slot-taken` naming the starts free now; nothing is written."""

    ResultSerializer = SlotBookingOut

    class InputSerializer(serializers.Serializer[Any]):
        slot = SlotField(
            help_text="The chosen slot's `start` (FHIR Appointment.slot): an instant with its "
            "zone, on a whole minute, e.g. 2026-02-03T13:00:00Z."
        )
        reason = serializers.CharField(
            max_length=2000,
            required=False,
            default="",
            help_text="Needed for a deviation (a slot outside the window) and a reschedule.",
        )

    def confirm_visit(
        self, visit: ScheduledVisit, data: dict[str, Any], *, by: Any, expected_version: int
    ) -> Any:
        start: dt.datetime = data["slot"]
        participant = visit.participant
        site = participant.site
        bookable = visit.is_open and participant.status in (
            participant.Status.SCREENING,
            participant.Status.ENROLLED,
        )
        if bookable:
            state = slot_state(visit, start)
            if state == "taken":
                raise _slot_taken(visit, start)
            if state != "free":
                raise _no_such_slot(visit, start, state)
        local = start.astimezone(ZoneInfo(site.timezone))
        wall = local.time().replace(tzinfo=None)
        if read_local_time(local.date(), wall, site.timezone).used != start:
            message = _(
                "%(time)s on %(date)s happens twice at the site (the clocks go back) and this "
                "slot is the second one, which a booking by local time cannot name: choose "
                "another slot"
            ) % {"time": f"{wall:%H:%M}", "date": local.date().isoformat()}
            raise Refused(message, errors=[{"field": "slot", "message": message}])
        try:
            booking = visit_book(
                visit=visit,
                local_date=local.date(),
                local_time=wall,
                reason=data["reason"],
                by=by,
                expected_version=expected_version,
            )
        except VisitConflict:
            raise
        except CalendarError as error:
            # Between our look and the service's lock, another booking took the slot.
            if bookable and slot_state(visit, start) == "taken":
                raise _slot_taken(visit, start) from None
            if error.field in ("local_date", "local_time"):  # this request names a slot
                message = str(error)
                raise Refused(message, errors=[{"field": "slot", "message": message}]) from None
            raise
        return {"visit": visit, "booking": booking}


VisitBookSlot.InputSerializer.__name__ = "VisitBookSlotInput"
extend_schema_view(
    post=extend_schema(
        request=VisitBookSlot.InputSerializer,
        responses=inline_confirm_out(VisitBookSlot),
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
        summary="Book a visit at a slot (a FHIR Appointment from a Slot)",
    )
)(VisitBookSlot)


# ----------------------------------------------------------------------------------------
# The site's calendar as data: HealthcareService/Location, Schedules, busy Slots


class SiteHoursOut(serializers.Serializer[Any]):
    """FHIR availableTime: daysOfWeek, availableStartTime, availableEndTime (site wall clock)."""

    weekday = serializers.IntegerField(help_text="0 is Monday, 6 Sunday.")
    day_of_week = serializers.ChoiceField(choices=list(WEEKDAYS), help_text="FHIR daysOfWeek code.")
    start = serializers.TimeField(help_text="Site wall clock.")
    end = serializers.TimeField(help_text="Site wall clock.")


def _hours_data(hours: Hours | StaffShift) -> dict[str, Any]:
    return {
        "weekday": hours.weekday,
        "day_of_week": WEEKDAYS[hours.weekday],
        "start": f"{hours.start:%H:%M}",
        "end": f"{hours.end:%H:%M}",
    }


class SiteClosureOut(serializers.Serializer[Any]):
    """FHIR HealthcareService.notAvailable: description, during (the whole local day)."""

    date = serializers.DateField(help_text="Site-local date.")
    reason = serializers.CharField(help_text="FHIR notAvailable.description.")
    source = serializers.ChoiceField(  # type: ignore[assignment]  # a field, not Field.source
        choices=["site", "public holiday"],
        help_text="site: a closure the site entered; public holiday: from the site's country "
        "and subdivision (the holidays package).",
    )


class OutOfServiceOut(serializers.Serializer[Any]):
    """A busy-unavailable FHIR Slot on the resource's Schedule."""

    start = serializers.DateTimeField(help_text="UTC.")
    end = serializers.DateTimeField(help_text="UTC.")
    local_start = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    local_end = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    status = serializers.ChoiceField(choices=["busy-unavailable"])
    reason = serializers.CharField(help_text="FHIR Slot.comment.")


class SiteBookingOut(serializers.Serializer[Any]):
    """A busy FHIR Slot on the Schedule: what one booked or done visit holds. Bookings of
    visits the caller does not read (another trial's at a shared site) are busy time only."""

    start = serializers.DateTimeField(help_text="UTC (FHIR Slot.start).")
    end = serializers.DateTimeField(help_text="UTC (FHIR Slot.end).")
    local_start = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    local_end = serializers.DateTimeField(help_text="On the site's wall clock, with offset.")
    local_date = serializers.DateField(help_text="The site-local date of the start.")
    status = serializers.ChoiceField(choices=["busy"], help_text='FHIR Slot.status: "busy".')
    count = serializers.IntegerField(help_text="How many of the capacity it takes.")
    visit = serializers.IntegerField(
        allow_null=True, help_text="The visit's id (FHIR Appointment); null if not yours."
    )
    visit_code = serializers.CharField(allow_null=True)
    participant = serializers.IntegerField(allow_null=True, help_text="The participant's id.")
    procedure = serializers.CharField(allow_null=True, help_text="The procedure it is for.")
    appointment_status = serializers.ChoiceField(
        choices=["booked", "fulfilled"],
        allow_null=True,
        help_text='FHIR Appointment.status: "booked", or "fulfilled" once done.',
    )


class SiteResourceOut(serializers.Serializer[Any]):
    """A FHIR Schedule whose actor is the resource (a Device or Location)."""

    name = serializers.CharField(help_text="FHIR Schedule.actor.")
    kind = serializers.CharField(help_text="What protocols call it (FHIR serviceType).")
    capacity = serializers.IntegerField(help_text="How many it holds at once.")
    hours = SiteHoursOut(many=True, help_text="Its own hours; empty: the site's opening hours.")
    out_of_service = OutOfServiceOut(many=True)
    bookings = SiteBookingOut(many=True)


class StaffShiftOut(SiteHoursOut):
    count = serializers.IntegerField(help_text="How many of this kind are on duty.")


class SiteStaffOut(serializers.Serializer[Any]):
    """A FHIR Schedule whose actor is a kind of staff (a PractitionerRole)."""

    kind = serializers.CharField(help_text='The staff kind ("infusion nurse").')
    shifts = StaffShiftOut(many=True)
    bookings = SiteBookingOut(many=True)


class SiteCalendarOut(serializers.Serializer[Any]):
    """A site's calendar: the FHIR HealthcareService/Location (hours, closures) and the
    Schedules of its resources and staff with their busy Slots, over site-local days."""

    site = serializers.CharField(help_text="The site's code.")
    timezone = serializers.CharField(help_text="The site's IANA zone.")
    country = serializers.CharField()
    subdivision = serializers.CharField()
    locals()["from"] = serializers.DateField(help_text="First site-local day.")
    to = serializers.DateField(help_text="Last site-local day.")
    hours = SiteHoursOut(many=True, help_text="Opening hours (FHIR availableTime).")
    closures = SiteClosureOut(many=True, help_text="Closed days (FHIR notAvailable).")
    resources = SiteResourceOut(many=True)
    staff = SiteStaffOut(many=True)


class CalendarQuery(serializers.Serializer[Any]):
    locals()["from"] = out.BoundedDateField(
        required=False, help_text="First site-local day (default: today at the site)."
    )
    to = out.BoundedDateField(
        required=False,
        help_text=f"Last site-local day (default: 6 days after `from`; at most "
        f"{CALENDAR_DAYS_MAX} days in all).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" in attrs and "to" in attrs:
            if attrs["from"] > attrs["to"]:
                raise serializers.ValidationError({"to": ["must be on or after 'from'"]})
            if (attrs["to"] - attrs["from"]).days >= CALENDAR_DAYS_MAX:
                raise serializers.ValidationError(
                    {"to": [f"at most {CALENDAR_DAYS_MAX} days from 'from'"]}
                )
        return attrs


def _calendar_data(user: Any, calendar: SiteCalendarData) -> dict[str, Any]:
    site = calendar.site
    zone = ZoneInfo(site.timezone)
    bookings = [b for r in calendar.resources for b in r.bookings] + [
        b for s in calendar.staff for b in s.bookings
    ]
    readable = set(
        access.visits_for(user)
        .filter(pk__in={b.visit.pk for b in bookings})
        .values_list("pk", flat=True)
    )

    def booking(b: CalendarBooking) -> dict[str, Any]:
        yours = b.visit.pk in readable
        return {
            "start": _utc(b.start),
            "end": _utc(b.end),
            "local_start": _local(b.start, zone),
            "local_end": _local(b.end, zone),
            "local_date": b.start.astimezone(zone).date().isoformat(),
            "status": "busy",
            "count": b.count,
            "visit": b.visit.pk if yours else None,
            "visit_code": b.visit.code if yours else None,
            "participant": b.visit.participant_id if yours else None,
            "procedure": b.procedure if yours else None,
            "appointment_status": (
                ("fulfilled" if b.visit.status == ScheduledVisit.Status.DONE else "booked")
                if yours
                else None
            ),
        }

    return {
        "site": site.code,
        "timezone": site.timezone,
        "country": site.country,
        "subdivision": site.subdivision,
        "from": calendar.first.isoformat(),
        "to": calendar.last.isoformat(),
        "hours": [_hours_data(h) for h in calendar.hours],
        "closures": [
            {"date": c.day.isoformat(), "reason": c.reason, "source": c.source}
            for c in calendar.closures
        ],
        "resources": [
            {
                "name": r.name,
                "kind": r.kind,
                "capacity": r.capacity,
                "hours": [_hours_data(h) for h in r.hours],
                "out_of_service": [
                    {
                        "start": _utc(p.start),
                        "end": _utc(p.end),
                        "local_start": _local(p.start, zone),
                        "local_end": _local(p.end, zone),
                        "status": "busy-unavailable",
                        "reason": p.reason,
                    }
                    for p in r.out_of_service
                ],
                "bookings": [booking(b) for b in r.bookings],
            }
            for r in calendar.resources
        ],
        "staff": [
            {
                "kind": s.kind,
                "shifts": [{**_hours_data(h), "count": h.count} for h in s.shifts],
                "bookings": [booking(b) for b in s.bookings],
            }
            for s in calendar.staff
        ],
    }


class SiteCalendarView(generics.GenericAPIView[Any]):
    """The site's calendar as data over site-local days (default: a week from today): its
    opening hours and closures (the site's own and its public holidays), each resource with
    its capacity, own hours, out-of-service periods and bookings, and each staff kind with
    its shifts and the bookings that hold it. Bookings of visits you read name the visit;
    others (another trial's at the site) are busy time only."""

    serializer_class = SiteCalendarOut

    @extend_schema(
        parameters=[CalendarQuery],
        summary="A site's calendar: hours, closures, resources, staff and bookings",
    )
    def get(self, request: Request, code: str) -> Response:
        site = _readable_site(request, code)
        query = _query(CalendarQuery, request)
        first = query.get("from") or access.site_today(site)
        last = query.get("to") or first + dt.timedelta(days=6)
        if first > last:
            raise exceptions.ValidationError({"to": ["must be on or after 'from'"]})
        if (last - first).days >= CALENDAR_DAYS_MAX:
            raise exceptions.ValidationError(
                {"to": [f"at most {CALENDAR_DAYS_MAX} days from 'from'"]}
            )
        calendar = site_calendar_data(site, first, last)
        return Response(SiteCalendarOut(_calendar_data(request.user, calendar)).data)
