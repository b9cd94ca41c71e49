from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from trials.models import (
    Anchor,
    Arm,
    EligibilityCriterion,
    Epoch,
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    ScheduledActivity,
    Site,
    Trial,
    TrialRegistration,
    TrialSite,
    VisitDefinition,
)


class ReadOnlyInline(admin.TabularInline):
    """Protocol content is imported from files; the admin shows it, never edits it."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RegistrationInline(admin.TabularInline):
    model = TrialRegistration
    extra = 0


class TrialSiteInline(admin.TabularInline):
    model = TrialSite
    extra = 0
    autocomplete_fields = ["site"]


@admin.register(Trial)
class TrialAdmin(admin.ModelAdmin):
    list_display = ["code", "title", "phase", "sponsor", "blinding"]
    list_filter = ["phase", "blinding"]
    search_fields = ["code", "title", "registrations__identifier"]
    inlines = [RegistrationInline, TrialSiteInline]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "timezone", "country"]
    search_fields = ["code", "name"]


class AnchorInline(ReadOnlyInline):
    model = Anchor
    fields = ["code", "name", "relative_to", "min_days", "max_days", "default_days"]


class ArmInline(ReadOnlyInline):
    model = Arm
    fields = ["code", "name", "description"]


class EpochInline(ReadOnlyInline):
    model = Epoch
    fields = ["code", "name"]


class ProcedureInline(ReadOnlyInline):
    model = ProcedureDefinition
    fields = ["code", "name", "duration_minutes", "preparation", "resource"]


class VisitInline(ReadOnlyInline):
    model = VisitDefinition
    fields = [
        "code",
        "name",
        "epoch",
        "anchor_code",
        "anchor_visit",
        "offset_days",
        "window_before_days",
        "window_after_days",
        "repeat_every_days",
        "repeat_count",
        "duration_minutes",
        "mode",
    ]


class MilestoneInline(ReadOnlyInline):
    model = MilestoneRule
    fields = [
        "code",
        "name",
        "kind",
        "anchor_code",
        "anchor_visit",
        "offset_days",
        "participant_facing",
        "taper",
    ]


class CriterionInline(ReadOnlyInline):
    model = EligibilityCriterion
    fields = ["code", "kind", "text", "check_attribute", "check_min", "check_max"]


@admin.register(ProtocolVersion)
class ProtocolVersionAdmin(admin.ModelAdmin):
    list_display = ["trial", "label", "status", "published_at", "source_name"]
    list_filter = ["status", "trial"]
    inlines = [
        AnchorInline,
        ArmInline,
        EpochInline,
        ProcedureInline,
        VisitInline,
        MilestoneInline,
        CriterionInline,
    ]
    readonly_fields = [
        "trial",
        "label",
        "status",
        "version_date",
        "published_at",
        "source_name",
        "source_sha256",
        "imported_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Versions come from protocol files (manage.py import_protocol), validated as a whole.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ScheduledActivity)
class ScheduledActivityAdmin(admin.ModelAdmin):
    list_display = ["visit", "procedure", "occurrences"]
    list_filter = ["visit__version__trial"]
    list_select_related = ["visit", "procedure"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
