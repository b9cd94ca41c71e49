from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import URLPattern
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scheduler import access
from scheduler.access import site_now, site_today
from scheduler.admin import lists
from scheduler.admin.actions import Done, LifecycleAction, Outcome, Preview, Summary
from scheduler.admin.base import (
    CalendarActionsAdmin,
    SiteClockHistory,
    calendar_summary,
    deviation_text,
    glance_label,
    iso,
    participant_site,
    site_clock_column,
    step_label,
)
from scheduler.admin.scoping import ScopedAdmin, ScopedInline, scoped_filter
from scheduler.admin.sitebookings import picker_week, slot_picker
from scheduler.booking import booking_calendar
from scheduler.calendar import CalendarDiff, deviation_days
from scheduler.calendars.events import visit_name
from scheduler.display import clock_change_text, site_time, utc_time
from scheduler.forms import (
    LifecycleForm,
    VisitBookForm,
    VisitCloseForm,
    VisitRecordDoneForm,
)
from scheduler.models import (
    ScheduledMilestone,
    ScheduledProcedure,
    ScheduledVisit,
)
from scheduler.selectors import (
    milestones_with_next_step,
    visit_status_filters_per_site,
)
from scheduler.services import (
    BookingPreview,
    visit_book,
    visit_book_preview,
    visit_cancel,
    visit_deviation_reason_record,
    visit_mark_missed,
    visit_record_done,
    visit_record_done_preview,
)
from trials.admin import AuditTrailAdmin


class ProcedureInline(ScopedInline):
    model = ScheduledProcedure
    extra = 0
    fields = ("procedure", "status", "not_done_reason")
    readonly_fields = fields


class VisitAttentionFilter(admin.SimpleListFilter):
    """The visits behind the participant and site counts (see `visit_status_filters`)."""

    title = gettext_lazy("needs attention")
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("due", _("due now (window open)")),
            ("overdue", _("overdue")),
            ("out_of_window", _("out of window")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        wanted = self.value()
        # Each visit against its own site's today: a list can span Tokyo and New York.
        filters = visit_status_filters_per_site(zone_field="participant__site__timezone")
        if wanted is not None and wanted in filters:
            return queryset.filter(filters[wanted])
        return queryset


class OpenVisitAction(LifecycleAction[ScheduledVisit]):
    def available(self, record: ScheduledVisit) -> bool:
        return record.is_open


class BookVisit(OpenVisitAction):
    name = "book"
    title = "Book / reschedule"
    form_class = VisitBookForm
    confirm_label = "Confirm booking"

    def initial(self, record: ScheduledVisit) -> dict[str, Any]:
        return _booking_initial(record)

    def note(self, record: ScheduledVisit) -> str | None:
        return _booking_note(record)

    def page_context(self, record: ScheduledVisit) -> dict[str, Any]:
        # The site's days across the window, what is booked on its resources, and the first
        # feasible starts, each a link that fills the form in.
        calendar = booking_calendar(record, now=timezone.now())
        if calendar is None:
            return {}
        site = record.participant.site
        zone = ZoneInfo(site.timezone)
        return {
            "site_calendar": calendar,
            "site_suggestions": [
                (
                    site_time(start, site),
                    urlencode(
                        {
                            "local_date": start.astimezone(zone).date().isoformat(),
                            "local_time": start.astimezone(zone).strftime("%H:%M"),
                        }
                    ),
                )
                for start in calendar.suggestions
            ],
            **_picker(record),
        }

    def preview(self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm) -> Preview:
        booking = visit_book_preview(
            visit=record, local_date=data["local_date"], local_time=data["local_time"]
        )
        return Preview(_booking_outcome(record, booking, data), diff=booking.calendar)

    def confirm(
        self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        booked = visit_book(
            visit=record,
            local_date=data["local_date"],
            local_time=data["local_time"],
            reason=data["reason"],
            by=by,
            expected_version=data["version"],
        )
        return Done(
            _("%(visit)s booked for %(when)s; %(calendar)s.")
            % {
                "visit": booked.visit_code,
                "when": site_time(booked.booked_start, record.participant.site),
                "calendar": calendar_summary(booked.calendar),
            },
            record,
        )


class RecordVisitDone(OpenVisitAction):
    name = "record_done"
    title = "Record done"
    form_class = VisitRecordDoneForm
    confirm_label = "Confirm: record as done"

    def initial(self, record: ScheduledVisit) -> dict[str, Any]:
        # The day it was booked or planned for, unless that is still ahead: a visit is never
        # recorded as done after the site's today.
        return {
            "version": record.version,
            "actual_date": min(
                record.booked_date or record.target_date, site_today(record.participant.site)
            ),
        }

    def form_kwargs(self, record: ScheduledVisit) -> dict[str, Any]:
        return {"procedures": _planned_procedures(record)}

    def preview(self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm) -> Preview:
        diff = visit_record_done_preview(visit=record, actual_date=data["actual_date"])
        assert isinstance(form, VisitRecordDoneForm)
        return Preview(_done_outcome(record, form), diff=diff)

    def confirm(
        self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        assert isinstance(form, VisitRecordDoneForm)
        diff = visit_record_done(
            visit=record,
            actual_date=data["actual_date"],
            actual_time=data["actual_time"],
            procedures_not_done=form.procedures_not_done(),
            reason=data["reason"],
            by=by,
            expected_version=data["version"],
        )
        return Done(
            _("%(visit)s recorded as done on %(day)s; %(calendar)s.")
            % {
                "visit": record.code,
                "day": iso(data["actual_date"]),
                "calendar": calendar_summary(diff),
            },
            record,
        )


class CloseVisit(OpenVisitAction):
    """Mark missed, or cancel: the visit closes, and what was counted from it re-plans."""

    form_class = VisitCloseForm
    submit_label = "Continue to confirm"
    status: ClassVar[str]
    close: ClassVar[Callable[..., CalendarDiff]]

    def preview(self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm) -> Preview:
        return Preview(
            [
                (
                    "Visit",
                    _("%(visit)s will be recorded as %(status)s")
                    % {"visit": record.code, "status": _(self.status)},
                    True,
                ),
                ("Reason", data["reason"], False),
            ],
            note=(
                "Visits counted from this one fall back to their planned dates; "
                "what moved is listed once you confirm."
            ),
        )

    def confirm(
        self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        diff = type(self).close(
            visit=record, reason=data["reason"], by=by, expected_version=data["version"]
        )
        return Done(
            _("%(visit)s %(status)s; %(calendar)s.")
            % {"visit": record.code, "status": _(self.status), "calendar": calendar_summary(diff)},
            record,
        )


class MarkVisitMissed(CloseVisit):
    name = "mark_missed"
    title = "Mark missed"
    confirm_label = "Confirm: missed"
    status = "missed"
    close = staticmethod(visit_mark_missed)


class CancelVisit(CloseVisit):
    name = "cancel"
    title = "Cancel visit"
    confirm_label = "Confirm: cancelled"
    status = "cancelled"
    close = staticmethod(visit_cancel)


class GiveDeviationReason(LifecycleAction[ScheduledVisit]):
    """A visit done outside its window, recorded without a reason: the reason, and nothing
    else, is added."""

    name = "deviation_reason"
    title = "Give the deviation's reason"
    form_class = VisitCloseForm
    confirm_label = "Confirm the reason"

    def available(self, record: ScheduledVisit) -> bool:
        return (
            record.status == ScheduledVisit.Status.DONE
            and bool(record.deviation_days)
            and (not record.reason)
        )

    def preview(self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm) -> Preview:
        assert record.actual_date is not None and record.deviation_days is not None
        return Preview(
            [
                ("Done on (site-local)", iso(record.actual_date), False),
                (
                    "Deviation",
                    deviation_text(record.deviation_days, record.window_start, record.window_end),
                    True,
                ),
                ("Reason", data["reason"], False),
            ],
            note="Only the reason is recorded: no date moves and nothing is sent.",
        )

    def confirm(
        self, record: ScheduledVisit, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        visit_deviation_reason_record(
            visit=record, reason=data["reason"], by=by, expected_version=data["version"]
        )
        return Done(f"Reason recorded for the deviation of {record.code}.", record)


VISIT_ACTIONS: list[LifecycleAction[ScheduledVisit]] = [
    BookVisit(),
    RecordVisitDone(),
    MarkVisitMissed(),
    CancelVisit(),
    GiveDeviationReason(),
]


@admin.register(ScheduledVisit)
class ScheduledVisitAdmin(CalendarActionsAdmin):
    """The visit's fields are read-only: a visit changes only through the lifecycle services,
    so every change is validated, re-planned and audited in one place. Its page links to the
    actions (book, record done, mark missed, cancel), each previewed before it is confirmed."""

    # What a coordinator reads at 1366 px; the filters and the CSV export: admin/lists.py.
    list_display = [
        lists.visit_study_id_column,
        lists.visit_where_column,
        lists.visit_column,
        lists.target_window_column,
        "glance_status",
        "booked_at",
        lists.deviation_column,
    ]
    list_filter = [
        lists.ExportLink,
        scoped_filter("participant__site"),
        scoped_filter("participant__trial"),
        "status",
        VisitAttentionFilter,
        lists.WindowFilter,
        lists.BookedFilter,
        lists.DeviationFilter,
        lists.ProcedureFilter,
        lists.ResourceFilter,
    ]
    search_fields = ["participant__study_id", "visit_definition__code"]
    list_per_page = 50
    # By target day: the order a calendar is read in, and one an index serves (the model's
    # default, by trial and study id, would sort every visit of a trial for each page).
    # No date hierarchy: its year links scan the whole list; the window and booked-for
    # filters say what a coordinator asks by date.
    ordering = ["target_date", "id"]
    list_select_related = ["participant__trial", "participant__site", "visit_definition"]
    inlines = [ProcedureInline]
    # The page shows the status computed from the site's today and the instants on the
    # site's clock; the stored status and the UTC instants stay in the audit trail.
    fields = [
        "participant",
        "visit_definition",
        "occurrence",
        "unscheduled_reason",
        "protocol_version",
        "target_date",
        "window_start",
        "window_end",
        "estimated",
        "glance_status",
        "booked_at",
        "booked_date",
        "done_at",
        "actual_date",
        "deviation_days",
        "reason",
        "version",
        "ical_sequence",
    ]
    readonly_fields = ["glance_status", "booked_at", "done_at"]

    booked_at = site_clock_column("booked_start", "booked at", participant_site)
    done_at = site_clock_column("actual_start", "done at", participant_site)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[ScheduledVisit]:
        return access.visits_for(request.user, write=write)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def glance_status(self, visit: ScheduledVisit) -> str:
        return glance_label(visit)

    lifecycle = VISIT_ACTIONS
    action_select_related = ("participant__site", "participant__trial", "visit_definition")

    def get_urls(self) -> list[URLPattern]:
        return [*self.lifecycle_urls(), lists.export_urlpattern(self), *super().get_urls()]

    def summary(self, record: ScheduledVisit) -> Summary:
        return _visit_summary(record)


def _picker(visit: ScheduledVisit) -> dict[str, Any]:
    """The week picker beside the booking form while the window is open: each free start a
    link that fills the form in (scheduler/admin/sitebookings.py)."""
    today = site_today(visit.participant.site)
    if visit.window_end < today:
        return {}
    picker = slot_picker(visit, user=None, week=picker_week(visit, today, None), now=timezone.now())
    return {"picker": picker, "board": picker.board, "slot_get": "?"}


def _zone(visit: ScheduledVisit) -> str:
    return visit.participant.site.timezone


def _visit_summary(visit: ScheduledVisit) -> Summary:
    zone = _zone(visit)
    summary = [
        ("Participant", str(visit.participant)),
        ("Visit", f"{visit.code} – {visit_name(visit)}"),
        ("Status", glance_label(visit)),
        (
            "Target",
            _("%(target)s (window %(first)s to %(last)s)")
            % {
                "target": iso(visit.target_date),
                "first": iso(visit.window_start),
                "last": iso(visit.window_end),
            },
        ),
        ("Booked", site_time(visit.booked_start, visit.participant.site)),
    ]
    if visit.actual_date is not None:
        summary.append(("Done on", iso(visit.actual_date)))
    summary += [
        (
            "Site",
            _("%(site)s; times are site-local, %(zone)s")
            % {"site": visit.participant.site.name, "zone": zone},
        ),
        ("Version", str(visit.version)),
    ]
    return summary


def _booking_initial(visit: ScheduledVisit) -> dict[str, Any]:
    """What the booking form offers: the current booking while it is still ahead, else the
    first day from the site's today inside the window (the target day while it is ahead),
    and nothing once the window has closed; never a day in the past."""
    initial: dict[str, Any] = {"version": visit.version}
    now = site_now(visit.participant.site)
    today = now.date()
    if visit.booked_start is not None and visit.booked_start >= now:
        local = visit.booked_start.astimezone(now.tzinfo)
        initial.update(local_date=local.date(), local_time=local.time())
    elif visit.window_end >= today:
        initial["local_date"] = max(visit.target_date, today)
    return initial


def _booking_note(visit: ScheduledVisit) -> str | None:
    today = site_today(visit.participant.site)
    if visit.window_end >= today:
        return None
    return _(
        "The window of %(visit)s (%(first)s to %(last)s) closed before today at the site "
        "(%(today)s), so no date is suggested. A later date is a protocol deviation and needs "
        "a reason; to record a visit that already happened, use “Record done”."
    ) % {
        "visit": visit.code,
        "first": iso(visit.window_start),
        "last": iso(visit.window_end),
        "today": iso(today),
    }


def _booking_outcome(
    visit: ScheduledVisit, preview: BookingPreview, slot: dict[str, Any]
) -> Outcome:
    outcome = [
        ("Booked at the site", site_time(preview.booked_start, visit.participant.site), False),
        ("Booked in UTC", utc_time(preview.booked_start), False),
    ]
    if preview.local_time is not None and preview.local_time.kind != "normal":
        # A time the clocks skip or repeat: said in words, with the instant that will be
        # stored, so the coordinator confirms that instant and not the one they typed.
        outcome.append(
            (
                "Clock change",
                clock_change_text(
                    preview.local_time, slot["local_date"], slot["local_time"], _zone(visit)
                ),
                True,
            )
        )
    outcome += [
        (
            "Deviation",
            deviation_text(preview.deviation_days, visit.window_start, visit.window_end),
            preview.deviation_days != 0,
        ),
        ("Reason", slot["reason"] or "—", False),
    ]
    return outcome


def _planned_procedures(visit: ScheduledVisit) -> Sequence[ScheduledProcedure]:
    return list(
        visit.procedures.filter(status=ScheduledProcedure.Status.PLANNED)
        .select_related("procedure")
        .order_by("procedure__order")
    )


def _done_outcome(visit: ScheduledVisit, form: VisitRecordDoneForm) -> Outcome:
    done = form.cleaned_data
    days = deviation_days(done["actual_date"], visit.window_start, visit.window_end)
    outcome = [
        ("Done on (site-local)", iso(done["actual_date"]), False),
        ("At", done["actual_time"].strftime("%H:%M") if done["actual_time"] else "—", False),
        ("Deviation", deviation_text(days, visit.window_start, visit.window_end), days != 0),
    ]
    outcome += [
        (_("%(code)s not done") % {"code": code}, why, True)
        for code, why in form.procedures_not_done().items()
    ]
    outcome.append(("Reason", done["reason"] or "—", False))
    return outcome


# ----------------------------------------------------------------------------------------
# Milestones and the audit trail


@admin.register(ScheduledMilestone)
class ScheduledMilestoneAdmin(ScopedAdmin, SiteClockHistory, AuditTrailAdmin):
    """Milestones change only through the services (taper decisions, anchors, re-planning)."""

    list_display = [
        "participant",
        "rule",
        "sequence",
        "due_date",
        "dose_mg",
        "step_status",
        "flag",
    ]
    list_filter = [
        "status",
        scoped_filter("participant__trial"),
        scoped_filter("participant__site"),
        "rule__kind",
    ]
    search_fields = ["participant__study_id", "rule__code"]
    list_select_related = ["participant__trial", "participant__site", "rule"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[ScheduledMilestone]:
        return access.milestones_for(request.user, write=write)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduledMilestone]:
        return milestones_with_next_step(super().get_queryset(request))

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def step_status(self, milestone: ScheduledMilestone) -> str:
        return step_label(milestone)
