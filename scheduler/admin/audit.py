from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from simple_history.utils import get_history_model_for_model

from scheduler import access
from scheduler.admin.scoping import ScopedAdmin, scoped_filter
from scheduler.display import site_time
from scheduler.models import (
    ScheduledMilestone,
    ScheduledVisit,
    visit_code,
)


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
