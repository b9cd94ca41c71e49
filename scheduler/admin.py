from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator
from simple_history.utils import get_history_model_for_model

from participants.models import Participant
from scheduler import access
from scheduler.access import site_now, site_today
from scheduler.admin_access import ScopedAdmin, ScopedInline, scoped_filter
from scheduler.calendar import CalendarDiff, deviation_days
from scheduler.calendars.feeds import feed_create, feed_path, feed_regenerate, feed_revoke
from scheduler.checks import site_mailbox_warning
from scheduler.display import clock_change_text, site_time, utc_time
from scheduler.forms import (
    LifecycleForm,
    VisitBookForm,
    VisitCloseForm,
    VisitRecordDoneForm,
)
from scheduler.governance import GovernanceError, trial_blinding_change
from scheduler.models import (
    CalendarFeed,
    CoordinatorNotification,
    Reminder,
    ScheduledMilestone,
    ScheduledProcedure,
    ScheduledVisit,
    visit_code,
)
from scheduler.outbox.sweep import notifications_mark_read, reminders_retry
from scheduler.selectors import (
    TAPER_STEP_LABELS,
    VISIT_GLANCE_LABELS,
    VISIT_STATUS_KEYS,
    milestone_step_status,
    milestones_with_next_step,
    visit_glance_status,
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
from trials.admin import ProtocolVersionAdmin as ProtocolVersionRecordAdmin
from trials.admin import TrialAdmin as TrialRecordAdmin
from trials.models import ProtocolVersion, Site, Trial
from trials.protocol_file import Blinding

Summary = list[tuple[str, str]]
ActionForm = TypeVar("ActionForm", bound=LifecycleForm)
Outcome = list[tuple[str, str, bool]]

# ----------------------------------------------------------------------------------------
# Pages shared by the calendar actions of visits and participants


def _status_column(key: str) -> Any:
    @admin.display(description=key.replace("_", " "), ordering=f"visits_{key}")
    def column(self: Any, row: Any) -> int:
        return int(getattr(row, f"visits_{key}"))

    return column


class VisitStatusColumns:
    """Status-at-a-glance columns, for admins whose queryset carries the selectors' counts
    (participants_with_visit_status, sites_with_visit_status)."""

    visits_due = _status_column("due")
    visits_booked = _status_column("booked")
    visits_done = _status_column("done")
    visits_missed = _status_column("missed")
    visits_out_of_window = _status_column("out_of_window")
    visits_overdue = _status_column("overdue")


def iso(day: dt.date | None) -> str:
    return day.isoformat() if day is not None else "—"


def site_clock_column(field: str, description: str, site_of: Callable[[Any], Site]) -> Any:
    """A read-only column or field showing an instant on the clock of the row's site (Django
    would show it in the server's zone, UTC)."""

    @admin.display(description=description, ordering=field)
    def column(self: Any, row: Any) -> str | None:
        instant = getattr(row, field)
        return None if instant is None else site_time(instant, site_of(row))

    return column


def _participant_site(row: Any) -> Site:
    return row.participant.site


class SiteClockHistory:
    """For an audited admin whose records belong to one site: its History page dates each
    entry on the site's clock (the audit lists across sites do it per row, `changed_at`), and
    the page of one past version shows its instants in the site's zone."""

    object_history_list_template = "admin/lifecycle/object_history_list.html"

    def history_site(self, obj: Any) -> Site:
        return obj.participant.site

    def render_history_view(
        self, request: HttpRequest, template: str, context: dict[str, Any], **kwargs: Any
    ) -> HttpResponse:
        # "object" on the History page, "original" on the page of one past version.
        zone = self.history_site(context.get("object") or context["original"]).timezone
        context["history_zone"] = zone
        # simple-history renders at once, so the past version's fields (Django's own
        # rendering of its datetimes) are read in the site's zone, not the server's.
        with timezone.override(ZoneInfo(zone)):
            return super().render_history_view(  # type: ignore[misc]
                request, template, context, **kwargs
            )


def glance_label(visit: ScheduledVisit) -> str:
    """The visit's status at a glance from its site's today (never the stored status alone:
    a "planned" visit whose window closed is overdue)."""
    return VISIT_GLANCE_LABELS[visit_glance_status(visit, today=site_today(visit.participant.site))]


def step_label(milestone: ScheduledMilestone) -> str:
    """A milestone's status at a glance: a taper week is past, current (highlighted: the dose
    taken now) or planned from its site's today. Needs `milestones_with_next_step`."""
    status = milestone_step_status(milestone, today=site_today(milestone.participant.site))
    if status == "current":
        return format_html('<strong class="taper-current">{}</strong>', TAPER_STEP_LABELS[status])
    return TAPER_STEP_LABELS.get(status, status)


def deviation_text(days: int, window_start: dt.date, window_end: dt.date) -> str:
    if not days:
        return f"none: inside the window ({iso(window_start)} to {iso(window_end)})"
    side = "before" if days < 0 else "after"
    return (
        f"{abs(days)} day(s) {side} the window ({iso(window_start)} to {iso(window_end)}): "
        "a protocol deviation"
    )


def calendar_summary(diff: CalendarDiff) -> str:
    """One line for the message shown after a change: what else in the calendar moved."""
    if not diff:
        return "nothing else in the calendar changed"
    parts = [
        f"{change.visit_code}"
        + (f"#{change.occurrence}" if change.occurrence > 1 else "")
        + f" {change.kind} ({iso(change.old_target)} → {iso(change.new_target)})"
        for change in diff.visits
    ]
    parts += [
        f"{change.milestone_code} step {change.sequence} {change.kind} "
        f"({iso(change.old_due)} → {iso(change.new_due)})"
        for change in diff.milestones
    ]
    return "re-planned: " + "; ".join(parts)


def posted(request: HttpRequest) -> Any:
    return request.POST if request.method == "POST" else None


def submitted(request: HttpRequest) -> bool:
    """A preview or confirm post; "Back to the form" re-shows the form with what was typed."""
    return request.method == "POST" and "_edit" not in request.POST


def confirmed(request: HttpRequest) -> bool:
    return "_confirm" in request.POST


class CalendarActionsAdmin(ScopedAdmin, SiteClockHistory, AuditTrailAdmin):
    """An admin whose records have calendar actions: each is a form, a preview of exactly what
    the service would change (nothing written), and a confirm that calls the service once."""

    change_form_template = "admin/lifecycle/change_form.html"

    def action_url(self, name: str, obj: Model) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[obj.pk])

    def action_path(self, route: str, name: str, view: Callable[..., HttpResponse]) -> URLPattern:
        opts = self.model._meta
        return path(
            f"<int:object_id>/{route}/",
            self.admin_site.admin_view(view),
            name=f"{opts.app_label}_{opts.model_name}_{name}",
        )

    def action_page(
        self,
        request: HttpRequest,
        obj: Model,
        *,
        template: str,
        title: str,
        form: LifecycleForm,
        summary: Summary,
        **context: Any,
    ) -> TemplateResponse:
        opts = self.model._meta
        return TemplateResponse(
            request,
            f"admin/lifecycle/{template}.html",
            {
                **self.admin_site.each_context(request),
                "opts": opts,
                "title": title,
                "original": obj,
                "original_url": reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
                ),
                "form": form,
                "summary": summary,
                **context,
            },
        )

    def action_done(self, request: HttpRequest, message: str, obj: Model) -> HttpResponseRedirect:
        """After a confirmed change: say what happened, on the page of the record changed."""
        self.message_user(request, message, messages.SUCCESS)
        opts = obj._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )


# ----------------------------------------------------------------------------------------
# Scheduled visits


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

    booked_at = site_clock_column("booked_start", "booked at", _participant_site)
    done_at = site_clock_column("actual_start", "done at", _participant_site)

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


class AuditRecordAdmin(ScopedAdmin):
    """Every audit entry of a model, to browse across records: read-only for everyone, and
    only the entries of participants the user may read (those of a record deleted since
    included: the entries carry the participant)."""

    date_hierarchy = "history_date"
    list_filter = [
        "history_type",
        "history_date",
        scoped_filter("participant__trial"),
        scoped_filter("participant__site"),
    ]
    ordering = ["-history_date", "-history_id"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Any]:
        if write:
            return self.model._default_manager.none()
        return self.model._default_manager.filter(
            participant__in=access.participants_for(request.user)
        )

    @admin.display(description="changed by", ordering="history_user")
    def changed_by(self, entry: Any) -> str:
        return str(entry.history_user) if entry.history_user is not None else "—"

    @admin.display(description="date", ordering="history_date")
    def changed_at(self, entry: Any) -> str:
        # On the clock of the participant's site (the list can span sites).
        return site_time(entry.history_date, entry.participant.site)


@admin.register(get_history_model_for_model(ScheduledVisit))
class HistoricalScheduledVisitAdmin(AuditRecordAdmin):
    list_display = [
        "changed_at",
        "changed_by",
        "history_type",
        "history_change_reason",
        "record",
        "status",
        "target_date",
        "booked_date",
        "deviation_days",
        "version",
    ]
    list_filter = [*AuditRecordAdmin.list_filter, "status"]
    search_fields = ["participant__study_id", "visit_definition__code", "history_change_reason"]
    list_select_related = [
        "history_user",
        "participant__trial",
        "participant__site",
        "visit_definition",
    ]

    @admin.display(description="visit")
    def record(self, entry: Any) -> str:
        return format_html(
            '<a href="{}">{} {}</a>',
            reverse("admin:scheduler_scheduledvisit_change", args=[entry.id]),
            visit_code(entry.visit_definition, entry.occurrence),
            entry.participant,
        )


@admin.register(get_history_model_for_model(ScheduledMilestone))
class HistoricalScheduledMilestoneAdmin(AuditRecordAdmin):
    list_display = [
        "changed_at",
        "changed_by",
        "history_type",
        "history_change_reason",
        "record",
        "status",
        "due_date",
        "dose_mg",
        "flag",
    ]
    list_filter = [*AuditRecordAdmin.list_filter, "status"]
    search_fields = ["participant__study_id", "rule__code", "history_change_reason"]
    list_select_related = ["history_user", "participant__trial", "participant__site", "rule"]

    @admin.display(description="milestone")
    def record(self, entry: Any) -> str:
        return format_html(
            '<a href="{}">{} step {} {}</a>',
            reverse("admin:scheduler_scheduledmilestone_change", args=[entry.id]),
            entry.rule.code,
            entry.sequence,
            entry.participant,
        )


# ----------------------------------------------------------------------------------------
# Reminders: the outbox as coordinators see it


class ReadOnlyAdmin(ScopedAdmin):
    """Rows written only by services and workers: listed and viewed here, never edited
    (ScopedAdmin refuses add, change and delete; actions act through the services)."""


class ReminderAttentionFilter(admin.SimpleListFilter):
    """The rows a person has to look at: the ones `reminders_retry` can send again."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("failed_or_dead", "failed or dead")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "failed_or_dead":
            return queryset.filter(status__in=[Reminder.Status.FAILED, Reminder.Status.DEAD])
        return queryset


@admin.register(Reminder)
class ReminderAdmin(ReadOnlyAdmin):
    """The reminder outbox. Rows are planned by `reminders_sync` and sent by the workers, so
    here they are only read; a coordinator sees what failed and why, and sends failed or dead
    rows again with the "Retry" action once the cause is fixed (an address, a phone number)."""

    list_display = [
        "due",
        "participant",
        "rule_code",
        "event",
        "channel",
        "audience",
        "status",
        "attempts",
        "error",
        "sent",
    ]
    list_filter = [
        ReminderAttentionFilter,
        "status",
        "channel",
        "audience",
        scoped_filter("participant__site"),
        scoped_filter("participant__trial"),
    ]
    search_fields = ["participant__study_id", "rule_code", "last_error"]
    list_select_related = ["participant__trial", "participant__site"]
    ordering = ["-due_at", "-id"]
    actions = ["retry"]
    # Every instant on the clock of the participant's site.
    fields = [
        "participant",
        "visit",
        "milestone",
        "target_key",
        "rule_code",
        "event",
        "channel",
        "audience",
        "due",
        "status",
        "next_attempt",
        "attempts",
        "enqueued",
        "claimed",
        "sent",
        "last_error",
        "provider_message_id",
        "ical_sequence",
        "created",
    ]
    readonly_fields = ["due", "next_attempt", "enqueued", "claimed", "sent", "created"]
    due = site_clock_column("due_at", "due at", _participant_site)
    next_attempt = site_clock_column("next_attempt_at", "next attempt at", _participant_site)
    enqueued = site_clock_column("enqueued_at", "enqueued at", _participant_site)
    claimed = site_clock_column("claimed_at", "claimed at", _participant_site)
    sent = site_clock_column("sent_at", "sent at", _participant_site)
    created = site_clock_column("created_at", "created at", _participant_site)

    @admin.display(description="error", ordering="last_error")
    def error(self, reminder: Reminder) -> str:
        return Truncator(reminder.last_error).chars(200)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Reminder]:
        return access.reminders_for(request.user, write=write)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self.may_write(request)

    @admin.action(description="Retry the selected failed or dead reminders", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> None:
        # Only what the user may change: a monitor's view of a site is read-only.
        queryset = queryset.filter(pk__in=self.writable(request).values("pk"))
        selected = queryset.count()
        requeued = reminders_retry(reminders=queryset)
        self.message_user(
            request,
            f"{requeued} reminder(s) re-queued: they go out with the next sweep.",
            messages.SUCCESS,
        )
        if requeued < selected:
            self.message_user(
                request,
                f"{selected - requeued} selected reminder(s) were neither failed nor dead "
                "and were left as they were.",
                messages.WARNING,
            )


class NotificationReadFilter(admin.SimpleListFilter):
    title = "read"
    parameter_name = "read"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "unread"), ("yes", "read")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("no", "yes"):
            return queryset.filter(read_at__isnull=self.value() == "no")
        return queryset


@admin.register(CoordinatorNotification)
class CoordinatorNotificationAdmin(ReadOnlyAdmin):
    """In-app reminders of each site's coordinators, newest first."""

    list_display = ["created", "site", "text", "read"]
    list_filter = [NotificationReadFilter, scoped_filter("site")]
    search_fields = ["text"]
    list_select_related = ["site"]
    ordering = ["-created_at", "-id"]
    actions = ["mark_read"]
    fields = ["site", "reminder", "text", "created", "read"]
    readonly_fields = ["created", "read"]
    created = site_clock_column("created_at", "created at", lambda row: row.site)
    read = site_clock_column("read_at", "read at", lambda row: row.site)
    # Notices go to the sites where the user works on calendars (see notifications_for).
    read_roles = access.WRITE_ROLES

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[CoordinatorNotification]:
        return access.notifications_for(request.user)

    @admin.action(description="Mark as read")
    def mark_read(self, request: HttpRequest, queryset: QuerySet[CoordinatorNotification]) -> None:
        marked = notifications_mark_read(notifications=queryset)
        self.message_user(request, f"{marked} notification(s) marked as read.")


# ----------------------------------------------------------------------------------------
# Calendar feeds


class FeedStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("active", "revoked"):
            return queryset.filter(revoked_at__isnull=self.value() == "active")
        return queryset


class FeedSiteFilter(admin.SimpleListFilter):
    """A site's own feed and its participants' feeds."""

    title = "site"
    parameter_name = "site"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        sites = access.sites_for(request.user).order_by("name")
        return [(str(site.pk), site.name) for site in sites]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(Q(site=self.value()) | Q(participant__site=self.value()))
        return queryset


class FeedChoiceForm(forms.Form):
    """The feed a Revoke or Regenerate button was pressed for: one of the owner's active feeds."""

    feed = forms.ModelChoiceField(queryset=CalendarFeed.objects.none())

    def __init__(self, data: Any, *, feeds: QuerySet[CalendarFeed]) -> None:
        super().__init__(data)
        feed_field = self.fields["feed"]
        assert isinstance(feed_field, forms.ModelChoiceField)
        feed_field.queryset = feeds.filter(revoked_at__isnull=True)


def feed_site(feed: CalendarFeed) -> Site:
    """The site on whose clock a feed's dates are shown: its own, or its participant's."""
    site = feed.site if feed.participant is None else feed.participant.site
    assert site is not None
    return site


def public_feed_url(feed: CalendarFeed, token: str) -> str:
    return settings.PUBLIC_URL.rstrip("/") + feed_path(feed=feed, token=token)


def feeds_url(owner: Participant | Site) -> str:
    kind = "participant" if isinstance(owner, Participant) else "site"
    return reverse(f"admin:scheduler_calendarfeed_{kind}", args=[owner.pk])


@admin.register(CalendarFeed)
class CalendarFeedAdmin(ScopedAdmin, SiteClockHistory, AuditTrailAdmin):
    """Subscribable feeds, read-only. Only a hash of each feed's token is stored, so no page
    can show an existing feed's URL: the owner's "Calendar feed" page creates a feed (or
    replaces one) and shows its URL once; its History shows who created and revoked it."""

    list_display = ["id", "owner", "created", "created_by", "revoked"]
    list_filter = [FeedStateFilter, FeedSiteFilter]
    search_fields = ["participant__study_id", "site__code"]
    list_select_related = ["participant__trial", "participant__site", "site", "created_by"]
    ordering = ["-created_at", "-id"]
    actions = ["revoke"]
    fields = ["participant", "site", "created", "created_by", "revoked"]
    readonly_fields = ["created", "revoked"]
    created = site_clock_column("created_at", "created at", lambda feed: feed_site(feed))
    revoked = site_clock_column("revoked_at", "revoked at", lambda feed: feed_site(feed))

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[CalendarFeed]:
        of_participants = access.participant_feeds_for(request.user, write=write)
        of_sites = access.site_feeds_for(request.user, write=write)
        return CalendarFeed.objects.filter(
            Q(pk__in=of_participants.values("pk")) | Q(pk__in=of_sites.values("pk"))
        )

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.may_write(request)

    def history_site(self, obj: Any) -> Site:
        return feed_site(obj)

    @admin.display(description="feed of")
    def owner(self, feed: CalendarFeed) -> str:
        owner = feed.participant or feed.site
        assert owner is not None
        kind = "participant" if feed.participant is not None else "site"
        return format_html('<a href="{}">{} {}</a>', feeds_url(owner), kind, owner)

    @admin.action(description="Revoke the selected feeds", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[CalendarFeed]) -> None:
        writable = self.writable(request).values("pk")
        active = list(queryset.filter(revoked_at__isnull=True, pk__in=writable))
        for feed in active:
            feed_revoke(feed=feed, by=request.user)
        self.message_user(
            request,
            f"{len(active)} feed(s) revoked: their URLs answer 404 from now on.",
            messages.SUCCESS,
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "participant/<int:participant_id>/",
                self.admin_site.admin_view(self.participant_feeds_view),
                name="scheduler_calendarfeed_participant",
            ),
            path(
                "site/<int:site_id>/",
                self.admin_site.admin_view(self.site_feeds_view),
                name="scheduler_calendarfeed_site",
            ),
            *super().get_urls(),
        ]

    def participant_feeds_view(self, request: HttpRequest, participant_id: int) -> HttpResponse:
        participant = self.visible_object(
            request,
            participant_id,
            access.participants_for(request.user).select_related("trial", "site"),
        )
        may_write = access.participants_for(request.user, write=True).filter(pk=participant_id)
        return self._feeds_view(request, participant, may_write=may_write.exists())

    def site_feeds_view(self, request: HttpRequest, site_id: int) -> HttpResponse:
        site = self.visible_object(request, site_id, access.sites_for(request.user))
        may_write = access.sites_for(request.user, roles=access.WRITE_ROLES).filter(pk=site_id)
        return self._feeds_view(request, site, may_write=may_write.exists())

    def _feeds_view(
        self, request: HttpRequest, owner: Participant | Site, *, may_write: bool
    ) -> HttpResponse:
        """The owner's feeds, with buttons to create, revoke and regenerate (POST only).

        After a create or a regenerate the page itself is the answer, not a redirect: the new
        URL is in no message, session, log or database row, so it can be shown only now.
        """
        participant = owner if isinstance(owner, Participant) else None
        site = owner if isinstance(owner, Site) else None
        feeds = CalendarFeed.objects.filter(participant=participant, site=site)
        # Creating, revoking and regenerating: a write role where the owner is.
        may_create = may_revoke = may_write
        new_feed_url = None
        if request.method == "POST":
            if "_create" in request.POST:
                if not may_create:
                    raise PermissionDenied
                feed, token = feed_create(participant=participant, site=site, by=request.user)
                new_feed_url = public_feed_url(feed, token)
            elif "_revoke" in request.POST or "_regenerate" in request.POST:
                if not may_revoke or ("_regenerate" in request.POST and not may_create):
                    raise PermissionDenied
                chosen = FeedChoiceForm(request.POST, feeds=feeds)
                if not chosen.is_valid():
                    self.message_user(
                        request,
                        "That feed is already revoked or is not one of these.",
                        messages.ERROR,
                    )
                    return HttpResponseRedirect(request.path)
                feed = chosen.cleaned_data["feed"]
                if "_revoke" in request.POST:
                    feed_revoke(feed=feed, by=request.user)
                    self.message_user(
                        request,
                        f"Feed {feed.pk} revoked: its URL answers 404 from now on.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(request.path)
                feed, token = feed_regenerate(feed=feed, by=request.user)
                new_feed_url = public_feed_url(feed, token)
        owner_opts = type(owner)._meta
        return TemplateResponse(
            request,
            "admin/feeds/owner_feeds.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "owner_opts": owner_opts,
                "title": f"Calendar feed of {owner}",
                "owner": owner,
                "owner_url": reverse(
                    f"admin:{owner_opts.app_label}_{owner_opts.model_name}_change", args=[owner.pk]
                ),
                "feeds": feeds.select_related("created_by").order_by("-created_at", "-id"),
                "zone": (participant.site if participant is not None else owner).timezone,
                "new_feed_url": new_feed_url,
                "may_create": may_create,
                "may_revoke": may_revoke,
            },
        )


def _governs(request: HttpRequest, opts: Any) -> bool:
    """Holds Django's own view or change permission on the model (governance, not a role)."""
    return _has_model_perm(request, opts, "view") or _has_model_perm(request, opts, "change")


class GovernedByPermissions:
    """Trials and sites: governed by Django's model permissions (add, change), and readable by
    every member of a trial, so coordinators see their own trials and sites, read-only."""

    opts: Any

    def governs(self, request: HttpRequest) -> bool:
        return _governs(request, self.opts)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.governs(request) or access.holds_role(
            request.user, access.READ_ROLES | access.PROTOCOL_ROLES
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _has_model_perm(request, self.opts, "add")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _has_model_perm(request, self.opts, "change")


def _has_model_perm(request: HttpRequest, opts: Any, action: str) -> bool:
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


@admin.register(Site)
class SiteAdmin(VisitStatusColumns, GovernedByPermissions, ScopedAdmin):
    """Sites, with the status of their participants' visits at a glance.

    A site is governed like a trial: holders of Django's site permissions (trial
    administrators) list and edit every site. Everyone else sees the sites of their
    memberships, read-only. The counts are clinical, so they count only the participants the
    user may read (access.participants_for) and are shown only to holders of a read role.

    Registered here, not in trials: the counts and the feed link are the scheduler's."""

    list_display = ["code", "name", "timezone", "country"]
    status_columns = [
        "visits_due",
        "visits_booked",
        "visits_done",
        "visits_missed",
        "visits_out_of_window",
        "visits_overdue",
    ]
    search_fields = ["code", "name"]
    # The page links to the site's calendar feed (kept in the scheduler's admin), and warns
    # while the site has no mailbox.
    change_form_template = "admin/notices/change_form.html"

    def reads_calendars(self, request: HttpRequest) -> bool:
        return access.holds_role(request.user, access.READ_ROLES)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Site]:
        if self.governs(request):
            return Site.objects.all()
        return access.sites_for(request.user, roles=access.READ_ROLES | access.PROTOCOL_ROLES)

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = super().get_queryset(request)
        if not self.reads_calendars(request):
            return queryset
        # Each site counts from its own today (see visit_status_filters_per_site), and only
        # the participants the user may read.
        filters = visit_status_filters_per_site(
            zone_field="timezone", prefix="participants__visits__"
        )
        readable = Q(participants__in=access.participants_for(request.user))
        return queryset.annotate(
            **{
                f"visits_{key}": Count("participants__visits", filter=filters[key] & readable)
                for key in VISIT_STATUS_KEYS
            }
        )

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))
        return shown + self.status_columns if self.reads_calendars(request) else shown

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and access.sites_for(request.user).filter(pk=obj.pk).exists():
            context["related_links"] = [
                ("Calendar feed", reverse("admin:scheduler_calendarfeed_site", args=[obj.pk]))
            ]
        if obj is not None:
            context["page_warnings"] = [w for w in [site_mailbox_warning(obj)] if w]
        return super().render_change_form(request, context, add, change, form_url, obj)


# ----------------------------------------------------------------------------------------
# Trials: governed by Django's trial permissions; members read their own trials; the blinding
# changes only on its own page, by an unblinded role with a reason (governance service).


class BlindingChangeForm(LifecycleForm):
    blinding = forms.ChoiceField(choices=[(b.value, b.value) for b in Blinding])
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why the blinding changes (database lock, an emergency unblinding…): "
        "kept in the trial's audit trail.",
    )


admin.site.unregister(Trial)


@admin.register(Trial)
class TrialAdmin(GovernedByPermissions, ScopedAdmin, TrialRecordAdmin):  # type: ignore[misc]
    """The trials admin of trials/admin.py, scoped: holders of Django's trial permissions
    see and edit every trial; members see their own trials read-only (without the sites
    inline, which needs its own permission). Its page links to "Change blinding"."""

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Trial]:
        return Trial.objects.all() if self.governs(request) else access.trials_for(request.user)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:object_id>/blinding/",
                self.admin_site.admin_view(self.blinding_view),
                name="trials_trial_blinding",
            ),
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
        if obj is not None and access.can_change_blinding(request.user, trial=obj):
            context["related_links"] = [
                ("Change blinding", reverse("admin:trials_trial_blinding", args=[obj.pk]))
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def blinding_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """A trial's blinding, changed by the governance service: it refuses everyone but an
        unblinded role of the trial, and a change without a reason, in its own words."""
        trial = self.visible_object(request, object_id)
        form = BlindingChangeForm(posted(request), initial={"blinding": trial.blinding})
        if request.method == "POST" and form.is_valid():
            try:
                changed = trial_blinding_change(
                    trial=trial,
                    blinding=form.cleaned_data["blinding"],
                    reason=form.cleaned_data["reason"],
                    by=request.user,
                )
            except GovernanceError as refusal:
                form.add_error(None, str(refusal))
            else:
                self.message_user(
                    request, f"{changed.code} is now {changed.blinding}.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:trials_trial_change", args=[changed.pk]))
        opts = self.model._meta
        return TemplateResponse(
            request,
            "admin/lifecycle/form.html",
            {
                **self.admin_site.each_context(request),
                "opts": opts,
                "title": "Change blinding",
                "original": trial,
                "original_url": reverse("admin:trials_trial_change", args=[trial.pk]),
                "form": form,
                "summary": [("Trial", str(trial)), ("Blinding now", trial.blinding)],
                "submit_label": "Change blinding",
            },
        )


class ProtocolContentReading:
    """An inline of a protocol's own content (arms, visits, procedures…), read by whoever
    reads the version: Django's inlines would ask each content model's permission."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.holds_role(
            request.user, access.READ_ROLES | access.PROTOCOL_ROLES
        ) or request.user.has_perm("trials.view_protocolversion")


admin.site.unregister(ProtocolVersion)


@admin.register(ProtocolVersion)
class ProtocolVersionAdmin(ScopedAdmin, ProtocolVersionRecordAdmin):  # type: ignore[misc]
    """The protocol versions admin of trials/admin.py, scoped like trials: holders of
    Django's protocol permissions see every version; data managers and the other roles of a
    trial read its versions (imported from files, never edited here)."""

    read_roles = access.READ_ROLES | access.PROTOCOL_ROLES
    inlines = [  # type: ignore[misc,assignment]
        type(inline.__name__, (ProtocolContentReading, inline), {})
        for inline in ProtocolVersionRecordAdmin.inlines
    ]

    def governs(self, request: HttpRequest) -> bool:
        return _governs(request, self.opts)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[ProtocolVersion]:
        if self.governs(request):
            return ProtocolVersion.objects.all()
        return ProtocolVersion.objects.filter(trial__in=access.trials_for(request.user))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.governs(request) or super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.governs(request) or super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("trials.change_protocolversion")


# The participant and membership admins are built on the services above; importing them
# registers them.
from scheduler import admin_access, admin_participants, admin_webhooks  # noqa: E402, F401, I001
