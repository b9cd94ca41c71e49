from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern

from scheduler import access
from scheduler.access import site_now, site_today
from scheduler.admin.base import (
    ActionForm,
    CalendarActionsAdmin,
    Outcome,
    SiteClockHistory,
    Summary,
    calendar_summary,
    confirmed,
    deviation_text,
    glance_label,
    iso,
    participant_site,
    posted,
    site_clock_column,
    step_label,
    submitted,
)
from scheduler.admin.scoping import ScopedAdmin, ScopedInline, scoped_filter
from scheduler.calendar import CalendarDiff, deviation_days
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
    CalendarError,
    visit_book,
    visit_book_preview,
    visit_cancel,
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

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("due", "due now (window open)"),
            ("overdue", "overdue"),
            ("out_of_window", "out of window"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        wanted = self.value()
        # Each visit against its own site's today: a list can span Tokyo and New York.
        filters = visit_status_filters_per_site(zone_field="participant__site__timezone")
        if wanted is not None and wanted in filters:
            return queryset.filter(filters[wanted])
        return queryset


VISIT_ACTIONS = [
    ("book", "Book / reschedule"),
    ("record_done", "Record done"),
    ("mark_missed", "Mark missed"),
    ("cancel", "Cancel visit"),
]


@admin.register(ScheduledVisit)
class ScheduledVisitAdmin(CalendarActionsAdmin):
    """The visit's fields are read-only: a visit changes only through the lifecycle services,
    so every change is validated, re-planned and audited in one place. Its page links to the
    actions (book, record done, mark missed, cancel), each previewed before it is confirmed."""

    list_display = [
        "participant",
        "visit_definition",
        "occurrence",
        "target_date",
        "window_start",
        "window_end",
        "glance_status",
        "booked_at",
        "deviation_days",
    ]
    list_filter = [
        "status",
        VisitAttentionFilter,
        scoped_filter("participant__trial"),
        scoped_filter("participant__site"),
    ]
    search_fields = ["participant__study_id", "visit_definition__code"]
    date_hierarchy = "target_date"
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

    @admin.display(description="status", ordering="status")
    def glance_status(self, visit: ScheduledVisit) -> str:
        return glance_label(visit)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        return [
            self.action_path("book", "book", self.book_view),
            self.action_path("record-done", "record_done", self.record_done_view),
            self.action_path("mark-missed", "mark_missed", self.mark_missed_view),
            self.action_path("cancel", "cancel", self.cancel_view),
            *super().get_urls(),
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and obj.is_open and self.may_write(request, obj):
            context["lifecycle_actions"] = [
                (label, self.action_url(name, obj)) for name, label in VISIT_ACTIONS
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- the actions

    def book_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        visit = self._visit(request, object_id)
        form = VisitBookForm(posted(request), initial=_booking_initial(visit))
        if submitted(request) and form.is_valid():
            slot = form.cleaned_data
            try:
                if confirmed(request):
                    booked = visit_book(
                        visit=visit,
                        local_date=slot["local_date"],
                        local_time=slot["local_time"],
                        reason=slot["reason"],
                        by=request.user,
                        expected_version=slot["version"],
                    )
                    return self.action_done(
                        request,
                        f"{booked.visit_code} booked for "
                        f"{site_time(booked.booked_start, visit.participant.site)}; "
                        f"{calendar_summary(booked.calendar)}.",
                        visit,
                    )
                preview = visit_book_preview(
                    visit=visit, local_date=slot["local_date"], local_time=slot["local_time"]
                )
            except CalendarError as refusal:
                visit, form = self._refused(request, object_id, refusal, VisitBookForm)
            else:
                return self._visit_page(
                    request,
                    visit,
                    "preview",
                    form,
                    "Book / reschedule",
                    outcome=_booking_outcome(visit, preview, slot),
                    diff=preview.calendar,
                    confirm_label="Confirm booking",
                )
        return self._visit_page(
            request, visit, "form", form, "Book / reschedule", note=_booking_note(visit)
        )

    def record_done_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        visit = self._visit(request, object_id)
        procedures = _planned_procedures(visit)
        form = VisitRecordDoneForm(
            posted(request),
            initial={
                "version": visit.version,
                # The day it was booked or planned for, unless that is still ahead: a visit
                # is never recorded as done after the site's today.
                "actual_date": min(
                    visit.booked_date or visit.target_date, site_today(visit.participant.site)
                ),
            },
            procedures=procedures,
        )
        if submitted(request) and form.is_valid():
            done = form.cleaned_data
            try:
                if confirmed(request):
                    diff = visit_record_done(
                        visit=visit,
                        actual_date=done["actual_date"],
                        actual_time=done["actual_time"],
                        procedures_not_done=form.procedures_not_done(),
                        reason=done["reason"],
                        by=request.user,
                        expected_version=done["version"],
                    )
                    return self.action_done(
                        request,
                        f"{visit.code} recorded as done on {iso(done['actual_date'])}; "
                        f"{calendar_summary(diff)}.",
                        visit,
                    )
                diff = visit_record_done_preview(visit=visit, actual_date=done["actual_date"])
            except CalendarError as refusal:
                visit, form = self._refused(
                    request, object_id, refusal, VisitRecordDoneForm, procedures=procedures
                )
            else:
                return self._visit_page(
                    request,
                    visit,
                    "preview",
                    form,
                    "Record done",
                    outcome=_done_outcome(visit, form),
                    diff=diff,
                    confirm_label="Confirm: record as done",
                )
        return self._visit_page(request, visit, "form", form, "Record done")

    def mark_missed_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return self._close_view(request, object_id, "missed", visit_mark_missed)

    def cancel_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return self._close_view(request, object_id, "cancelled", visit_cancel)

    def _close_view(
        self,
        request: HttpRequest,
        object_id: int,
        status: str,
        close: Callable[..., CalendarDiff],
    ) -> HttpResponse:
        visit = self._visit(request, object_id)
        title = "Mark missed" if status == "missed" else "Cancel visit"
        form = VisitCloseForm(posted(request), initial={"version": visit.version})
        if submitted(request) and form.is_valid():
            if confirmed(request):
                try:
                    diff = close(
                        visit=visit,
                        reason=form.cleaned_data["reason"],
                        by=request.user,
                        expected_version=form.cleaned_data["version"],
                    )
                except CalendarError as refusal:
                    visit, form = self._refused(request, object_id, refusal, VisitCloseForm)
                else:
                    return self.action_done(
                        request, f"{visit.code} {status}; {calendar_summary(diff)}.", visit
                    )
            else:
                return self._visit_page(
                    request,
                    visit,
                    "preview",
                    form,
                    title,
                    outcome=[
                        ("Visit", f"{visit.code} will be recorded as {status}", True),
                        ("Reason", form.cleaned_data["reason"], False),
                    ],
                    note=(
                        "Visits counted from this one fall back to their planned dates; "
                        "what moved is listed once you confirm."
                    ),
                    confirm_label=f"Confirm: {status}",
                )
        return self._visit_page(
            request, visit, "form", form, title, submit_label="Continue to confirm"
        )

    # --- helpers of the actions

    def _visit(self, request: HttpRequest, object_id: int) -> ScheduledVisit:
        # No write role anywhere: refused whatever the id. A write role: another site's
        # visit (or one only read here) is a 404, like a visit that does not exist.
        if not self.may_write(request):
            raise PermissionDenied
        return self.visible_object(
            request,
            object_id,
            self.writable(request).select_related(
                "participant__site", "participant__trial", "visit_definition"
            ),
        )

    def _refused(
        self,
        request: HttpRequest,
        object_id: int,
        refusal: CalendarError,
        form_class: type[ActionForm],
        **form_kwargs: Any,
    ) -> tuple[ScheduledVisit, ActionForm]:
        """The form again, with the refusal, what was typed, and the visit as it is now.

        The page then shows the visit's current state, so it carries the current version:
        a coordinator who was refused because someone else changed the visit previews again
        against that change before confirming.
        """
        visit = self._visit(request, object_id)
        data = request.POST.copy()
        data["version"] = str(visit.version)
        form = form_class(data, **form_kwargs)
        form.add_error(None, str(refusal))
        return visit, form

    def _visit_page(
        self,
        request: HttpRequest,
        visit: ScheduledVisit,
        template: str,
        form: LifecycleForm,
        title: str,
        **context: Any,
    ) -> TemplateResponse:
        return self.action_page(
            request,
            visit,
            template=template,
            title=title,
            form=form,
            summary=_visit_summary(visit),
            **context,
        )


def _zone(visit: ScheduledVisit) -> str:
    return visit.participant.site.timezone


def _visit_summary(visit: ScheduledVisit) -> Summary:
    zone = _zone(visit)
    summary = [
        ("Participant", str(visit.participant)),
        ("Visit", f"{visit.code} – {visit.name}"),
        ("Status", glance_label(visit)),
        (
            "Target",
            f"{iso(visit.target_date)} (window {iso(visit.window_start)} to "
            f"{iso(visit.window_end)})",
        ),
        ("Booked", site_time(visit.booked_start, visit.participant.site)),
    ]
    if visit.actual_date is not None:
        summary.append(("Done on", iso(visit.actual_date)))
    summary += [
        ("Site", f"{visit.participant.site.name}; times are site-local, {zone}"),
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
    return (
        f"The window of {visit.code} ({iso(visit.window_start)} to {iso(visit.window_end)}) "
        f"closed before today at the site ({iso(today)}), so no date is suggested. A later "
        "date is a protocol deviation and needs a reason; to record a visit that already "
        "happened, use “Record done”."
    )


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
    outcome += [(f"{code} not done", why, True) for code, why in form.procedures_not_done().items()]
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
    list_filter = ["status", scoped_filter("participant__trial"), "rule__kind"]
    search_fields = ["participant__study_id", "rule__code"]
    list_select_related = ["participant__trial", "participant__site", "rule"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[ScheduledMilestone]:
        return access.milestones_for(request.user, write=write)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduledMilestone]:
        return milestones_with_next_step(super().get_queryset(request))

    @admin.display(description="status", ordering="status")
    def step_status(self, milestone: ScheduledMilestone) -> str:
        return step_label(milestone)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
