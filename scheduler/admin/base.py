from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from participants.models import Participant
from scheduler import audittrail
from scheduler.access import site_today
from scheduler.admin.actions import LifecycleActions
from scheduler.admin.scoping import ScopedAdmin
from scheduler.calendar import CalendarDiff
from scheduler.display import site_time
from scheduler.forms import (
    LifecycleForm,
)
from scheduler.models import (
    ScheduledMilestone,
    ScheduledVisit,
)
from scheduler.selectors import (
    TAPER_STEP_LABELS,
    VISIT_GLANCE_LABELS,
    milestone_step_status,
    visit_glance_status,
)
from trials.admin import AuditTrailAdmin
from trials.models import Site

ActionForm = TypeVar("ActionForm", bound=LifecycleForm)

# ----------------------------------------------------------------------------------------
# Pages shared by the calendar actions of visits and participants


def _status_column(key: str) -> Any:
    # The header is the status's label, in the reader's language.
    @admin.display(description=gettext_lazy(key.replace("_", " ")), ordering=f"visits_{key}")
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

    @admin.display(description=gettext_lazy(description), ordering=field)
    def column(self: Any, row: Any) -> str | None:
        instant = getattr(row, field)
        return None if instant is None else site_time(instant, site_of(row))

    return column


def participant_site(row: Any) -> Site:
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
            response: HttpResponse = super().render_history_view(  # type: ignore[misc]
                request, template, context, **kwargs
            )
        # A record's history is its record read: who read it is in the audit.
        record = context.get("object") or context["original"]
        participant_id = (
            record.pk
            if isinstance(record, Participant)
            else getattr(record, "participant_id", None)
        )
        if participant_id is not None:
            audittrail.record_view(
                request,
                participant_id=participant_id,
                surface="admin",
                page="history" if "object" in context else "past version",
                response=response,
            )
        return response


def glance_label(visit: ScheduledVisit) -> str:
    """The visit's status at a glance from its site's today (never the stored status alone:
    a "planned" visit whose window closed is overdue)."""
    status = visit_glance_status(visit, today=site_today(visit.participant.site))
    return _(VISIT_GLANCE_LABELS[status])


def step_label(milestone: ScheduledMilestone) -> str:
    """A milestone's status at a glance: a taper week is past, current (highlighted: the dose
    taken now) or planned from its site's today. Needs `milestones_with_next_step`."""
    status = milestone_step_status(milestone, today=site_today(milestone.participant.site))
    if status == "current":
        return format_html(
            '<strong class="taper-current">{}</strong>', _(TAPER_STEP_LABELS[status])
        )
    return _(TAPER_STEP_LABELS.get(status, status))


def deviation_text(days: int, window_start: dt.date, window_end: dt.date) -> str:
    window = {"first": iso(window_start), "last": iso(window_end), "days": abs(days)}
    if not days:
        return _("none: inside the window (%(first)s to %(last)s)") % window
    if days < 0:
        return (
            _("%(days)d day(s) before the window (%(first)s to %(last)s): a protocol deviation")
            % window
        )
    return (
        _("%(days)d day(s) after the window (%(first)s to %(last)s): a protocol deviation") % window
    )


def calendar_summary(diff: CalendarDiff) -> str:
    """One line for the message shown after a change: what else in the calendar moved."""
    if not diff:
        return _("nothing else in the calendar changed")
    parts = [
        _("%(visit)s %(kind)s (%(old)s → %(new)s)")
        % {
            "visit": change.visit_code + (f"#{change.occurrence}" if change.occurrence > 1 else ""),
            "kind": _(change.kind),
            "old": iso(change.old_target),
            "new": iso(change.new_target),
        }
        for change in diff.visits
    ]
    parts += [
        _("%(milestone)s step %(step)s %(kind)s (%(old)s → %(new)s)")
        % {
            "milestone": change.milestone_code,
            "step": change.sequence,
            "kind": _(change.kind),
            "old": iso(change.old_due),
            "new": iso(change.new_due),
        }
        for change in diff.milestones
    ]
    return _("re-planned: %(changes)s") % {"changes": "; ".join(parts)}


def posted(request: HttpRequest) -> Any:
    return request.POST if request.method == "POST" else None


def submitted(request: HttpRequest) -> bool:
    """A preview or confirm post; "Back to the form" re-shows the form with what was typed."""
    return request.method == "POST" and "_edit" not in request.POST


def confirmed(request: HttpRequest) -> bool:
    return "_confirm" in request.POST


class CalendarActionsAdmin(LifecycleActions, ScopedAdmin, SiteClockHistory, AuditTrailAdmin):
    """An admin whose records have calendar actions: each is a form, a preview of exactly what
    the service would change (nothing written), and a confirm that calls the service once
    (scheduler/admin/actions.py)."""

    change_form_template = "admin/lifecycle/change_form.html"


# ----------------------------------------------------------------------------------------
# Scheduled visits


class ReadOnlyAdmin(ScopedAdmin):
    """Rows written only by services and workers: listed and viewed here, never edited
    (ScopedAdmin refuses add, change and delete; actions act through the services)."""
