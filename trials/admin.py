from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import reverse
from django.utils import timezone
from simple_history.admin import SimpleHistoryAdmin

from scheduler.selectors import sites_with_visit_status
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


class AuditTrailAdmin(SimpleHistoryAdmin):
    """An admin whose History button shows every change: who, when, why, which fields.

    The trail is read, never written: django-simple-history's page for one past version is a
    change form that saves whatever is posted to it (SIMPLE_HISTORY_REVERT_DISABLED only hides
    its Revert button), so here it answers GET alone and shows every field read-only.
    """

    def history_form_view(
        self,
        request: HttpRequest,
        object_id: str,
        version_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return super().history_form_view(request, object_id, version_id, extra_context)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not _showing_past_version(request):
            return readonly
        # Every field, in the model's order, as text.
        fields = [field.name for field in self.model._meta.fields if field.editable]
        return fields + [name for name in readonly if name not in fields]


def _showing_past_version(request: HttpRequest) -> bool:
    match = request.resolver_match
    return match is not None and (match.url_name or "").endswith("_simple_history")


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
    # The approved version changes only through site_move_to_version, which moves the site's
    # participants onto it and records why; editing it here would do neither.
    readonly_fields = ["protocol_version", "approved_on"]
    # The link leads to the site's page in this trial, whose History shows its approvals.
    show_change_link = True


@admin.register(Trial)
class TrialAdmin(admin.ModelAdmin):
    list_display = ["code", "title", "phase", "sponsor", "blinding"]
    list_filter = ["phase", "blinding"]
    search_fields = ["code", "title", "registrations__identifier"]
    inlines = [RegistrationInline, TrialSiteInline]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    """Sites, with the status of all their participants' visits at a glance."""

    list_display = [
        "code",
        "name",
        "timezone",
        "country",
        "visits_due",
        "visits_booked",
        "visits_done",
        "visits_missed",
        "visits_out_of_window",
        "visits_overdue",
    ]
    search_fields = ["code", "name"]
    # The page links to the site's calendar feed (kept in the scheduler's admin).
    change_form_template = "admin/lifecycle/change_form.html"

    def get_queryset(self, request: HttpRequest) -> Any:
        return sites_with_visit_status(
            queryset=super().get_queryset(request), today=timezone.localdate()
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and request.user.has_perm("scheduler.view_calendarfeed"):
            context["related_links"] = [
                ("Calendar feed", reverse("admin:scheduler_calendarfeed_site", args=[obj.pk]))
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="due", ordering="visits_due")
    def visits_due(self, site: Any) -> int:
        return int(site.visits_due)

    @admin.display(description="booked", ordering="visits_booked")
    def visits_booked(self, site: Any) -> int:
        return int(site.visits_booked)

    @admin.display(description="done", ordering="visits_done")
    def visits_done(self, site: Any) -> int:
        return int(site.visits_done)

    @admin.display(description="missed", ordering="visits_missed")
    def visits_missed(self, site: Any) -> int:
        return int(site.visits_missed)

    @admin.display(description="out of window", ordering="visits_out_of_window")
    def visits_out_of_window(self, site: Any) -> int:
        return int(site.visits_out_of_window)

    @admin.display(description="overdue", ordering="visits_overdue")
    def visits_overdue(self, site: Any) -> int:
        return int(site.visits_overdue)


@admin.register(TrialSite)
class TrialSiteAdmin(AuditTrailAdmin):
    """A site in a trial and the protocol version its ethics approval covers: read-only here
    (sites are added on the trial's page); its History shows every approval recorded."""

    list_display = ["trial", "site", "activated_on", "protocol_version", "approved_on"]
    list_filter = ["trial", "site"]
    list_select_related = ["trial", "site", "protocol_version__trial"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
class ProtocolVersionAdmin(AuditTrailAdmin):
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
