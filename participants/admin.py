from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from scheduler.models import ScheduledMilestone, ScheduledVisit


class AnchorInline(admin.TabularInline):
    model = ParticipantAnchor
    extra = 0


class VisitInline(admin.TabularInline):
    model = ScheduledVisit
    extra = 0
    can_delete = False
    fields = (
        "visit_definition",
        "occurrence",
        "target_date",
        "window_start",
        "window_end",
        "status",
        "actual_date",
        "protocol_version",
    )
    readonly_fields = fields
    ordering = ["target_date", "id"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        return (
            super()
            .get_queryset(request)
            .select_related("visit_definition", "protocol_version__trial")
        )


class MilestoneInline(admin.TabularInline):
    model = ScheduledMilestone
    extra = 0
    can_delete = False
    fields = ("rule", "sequence", "due_date", "dose_mg", "status")
    readonly_fields = fields
    ordering = ["due_date", "id"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("rule")


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["study_id", "trial", "site", "status", "protocol_version", "enrolled_at"]
    list_filter = ["trial", "site", "status"]
    search_fields = ["study_id", "trial__code"]
    list_select_related = ["trial", "site", "protocol_version__trial"]
    readonly_fields = ["status", "enrolled_at", "protocol_version"]
    inlines = [AnchorInline, VisitInline, MilestoneInline]


@admin.register(TreatmentAssignment)
class TreatmentAssignmentAdmin(admin.ModelAdmin):
    """The arm, shown only to users with the unblinded permission (or open-label trials)."""

    list_display = ["participant", "arm", "assigned_at"]
    list_select_related = ["participant__trial", "arm"]

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = super().get_queryset(request)
        if request.user.has_perm("participants.view_unblinded_arm"):
            return queryset
        return queryset.filter(participant__trial__blinding="open")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
