from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from scheduler.models import ScheduledProcedure, ScheduledVisit


class ProcedureInline(admin.TabularInline):
    model = ScheduledProcedure
    extra = 0
    fields = ("procedure", "status")
    readonly_fields = fields


@admin.register(ScheduledVisit)
class ScheduledVisitAdmin(admin.ModelAdmin):
    """Read-only until the visit lifecycle services exist: the calendar changes only through
    services, so every change is validated, recomputed and audited in one place."""

    list_display = [
        "participant",
        "visit_definition",
        "occurrence",
        "target_date",
        "window_start",
        "window_end",
        "status",
    ]
    list_filter = ["status", "participant__trial", "participant__site"]
    search_fields = ["participant__study_id", "visit_definition__code"]
    date_hierarchy = "target_date"
    list_select_related = ["participant__trial", "visit_definition"]
    inlines = [ProcedureInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
