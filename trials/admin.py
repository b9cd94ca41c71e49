from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from simple_history.admin import SimpleHistoryAdmin

from trials.models import (
    Anchor,
    Arm,
    EligibilityCriterion,
    Epoch,
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    ScheduledActivity,
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


class OneRule:
    """Django asks an admin five questions (may this user see the door, view, add, change,
    delete?); every admin of this project answers them with one method, `permits`, so its rule
    reads in one place. `django_permits` is Django's own answer (model permissions, or a
    package admin's), for a rule that adds to it. Read-only is the default: nothing is
    permitted unless the rule says so."""

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return False

    def django_permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        method = getattr(super(), f"has_{action}_permission")
        if action == "module" or (action == "add" and not isinstance(self, InlineModelAdmin)):
            return bool(method(request))
        return bool(method(request, obj))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.permits(request, "module")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.permits(request, "view", obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.permits(request, "add", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.permits(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.permits(request, "delete", obj)


READS = ("module", "view")


class ReadOnlyInline(OneRule, admin.TabularInline):
    """Protocol content is imported from files; the admin shows it, never edits it."""

    extra = 0
    can_delete = False
    show_change_link = False

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action in READS and self.django_permits(request, action, obj)


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
class TrialAdmin(AuditTrailAdmin):
    list_display = ["code", "title", "phase", "sponsor", "blinding"]
    list_filter = ["phase", "blinding"]
    search_fields = ["code", "title", "registrations__identifier"]
    inlines = [RegistrationInline, TrialSiteInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        # Blinding never changes by an edit: that would unblind a trial without a reason or
        # the unblinded role (scheduler.governance.trial_blinding_change does it properly).
        if obj is not None and "blinding" not in readonly:
            readonly.append("blinding")
        return readonly


@admin.register(TrialSite)
class TrialSiteAdmin(OneRule, AuditTrailAdmin):
    """A site in a trial and the protocol version its ethics approval covers: read-only here
    (sites are added on the trial's page); its History shows every approval recorded.
    Registered again, scoped to the user's memberships, by scheduler/admin/sites.py."""

    list_display = ["trial", "site", "activated_on", "protocol_version", "approved_on"]
    list_filter = ["trial", "site"]
    list_select_related = ["trial", "site", "protocol_version__trial"]

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action in READS and self.django_permits(request, action, obj)


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
class ProtocolVersionAdmin(OneRule, AuditTrailAdmin):
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

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        # Versions come from protocol files (manage.py import_protocol), validated as a whole:
        # never added or deleted here.
        return action not in ("add", "delete") and self.django_permits(request, action, obj)


@admin.register(ScheduledActivity)
class ScheduledActivityAdmin(OneRule, admin.ModelAdmin):
    """Which procedure at which visit: read-only (protocol files are the source). Registered
    again, scoped to the user's trials, by scheduler/admin/sites.py."""

    list_display = ["visit", "procedure", "occurrences"]
    list_filter = ["visit__version__trial"]
    list_select_related = ["visit", "procedure"]

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action in READS and self.django_permits(request, action, obj)
