from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _

from scheduler import access
from scheduler.admin.actions import LifecycleActions, Summary
from scheduler.admin.amendments import ApproveAndMove, PublishVersion
from scheduler.admin.base import VisitStatusColumns, posted
from scheduler.admin.scoping import ScopedAdmin, scoped_filter
from scheduler.checks import site_mailbox_warning
from scheduler.forms import (
    LifecycleForm,
)
from scheduler.governance import GovernanceError, trial_blinding_change
from scheduler.selectors import (
    VISIT_STATUS_KEYS,
    visit_status_filters_per_site,
)
from trials.admin import READS
from trials.admin import ProtocolVersionAdmin as ProtocolVersionRecordAdmin
from trials.admin import ScheduledActivityAdmin as ScheduledActivityRecordAdmin
from trials.admin import TrialAdmin as TrialRecordAdmin
from trials.admin import TrialSiteAdmin as TrialSiteRecordAdmin
from trials.models import ProtocolVersion, ScheduledActivity, Site, Trial, TrialSite
from trials.protocol_file import Blinding


def _governs(request: HttpRequest, opts: Any) -> bool:
    """Holds Django's own view or change permission on the model (governance, not a role)."""
    return _has_model_perm(request, opts, "view") or _has_model_perm(request, opts, "change")


class GovernedByPermissions:
    """Trials and sites: governed by Django's model permissions (add, change), and readable by
    every member of a trial, so coordinators see their own trials and sites, read-only."""

    opts: Any

    def governs(self, request: HttpRequest) -> bool:
        return _governs(request, self.opts)

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        if action in READS:
            return self.governs(request) or access.holds_role(
                request.user, access.READ_ROLES | access.PROTOCOL_ROLES
            )
        return action in ("add", "change") and _has_model_perm(request, self.opts, action)


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
    # By code, as the model: a member's scoped list comes without the model's ordering, and an
    # unordered list pages inconsistently.
    ordering = ["code"]
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
                ("Calendar feed", reverse("admin:scheduler_calendarfeed_site", args=[obj.pk])),
                # The site's bookings by resource (scheduler/admin/sitebookings.py).
                (
                    _("Bookings by resource"),
                    reverse("admin:scheduler_site_bookings", args=[obj.pk]),
                ),
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

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action == "view" and (
            access.holds_role(request.user, access.READ_ROLES | access.PROTOCOL_ROLES)
            or request.user.has_perm("trials.view_protocolversion")
        )


admin.site.unregister(ProtocolVersion)


@admin.register(ProtocolVersion)
class ProtocolVersionAdmin(LifecycleActions, ScopedAdmin, ProtocolVersionRecordAdmin):  # type: ignore[misc]
    """The protocol versions admin of trials/admin.py, scoped like trials: holders of
    Django's protocol permissions see every version; data managers and the other roles of a
    trial read its versions (imported from files, never edited here). A trial's data manager
    publishes a draft (scheduler/admin/amendments.py)."""

    read_roles = access.READ_ROLES | access.PROTOCOL_ROLES
    write_roles = access.PROTOCOL_ROLES
    lifecycle = [PublishVersion()]
    change_form_template = "admin/lifecycle/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        return [*self.lifecycle_urls(), *super().get_urls()]

    def summary(self, record: ProtocolVersion) -> Summary:
        return [("Protocol version", str(record)), ("Status", record.get_status_display())]

    inlines = [  # type: ignore[misc,assignment]
        type(inline.__name__, (ProtocolContentReading, inline), {})
        for inline in ProtocolVersionRecordAdmin.inlines
    ]

    def governs(self, request: HttpRequest) -> bool:
        return _governs(request, self.opts)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[ProtocolVersion]:
        if write:  # publishing: the trial's data managers, whatever Django's permissions
            trials = access.trials_for(request.user, roles=access.PROTOCOL_ROLES)
            return ProtocolVersion.objects.filter(trial__in=trials).select_related("trial")
        if self.governs(request):
            return ProtocolVersion.objects.all()
        return ProtocolVersion.objects.filter(trial__in=access.trials_for(request.user))

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        if action in READS:
            return self.governs(request) or super().permits(request, action, obj)
        return action == "change" and request.user.has_perm("trials.change_protocolversion")


# ----------------------------------------------------------------------------------------
# A site in a trial, and a protocol's schedule of activities: governed like trials and
# protocols. Holders of Django's permission on the model see every row; members read their
# own (trial, site) pairs and their trials' schedules; nobody edits either here.

PROTOCOL_READERS = access.READ_ROLES | access.PROTOCOL_ROLES

admin.site.unregister(TrialSite)


@admin.register(TrialSite)
class TrialSiteAdmin(LifecycleActions, GovernedByPermissions, ScopedAdmin, TrialSiteRecordAdmin):  # type: ignore[misc]
    """The trial-site admin of trials/admin.py, scoped: holders of Django's trial-site
    permissions see every site of every trial; a member sees the (trial, site) pairs it acts
    for (a trial-wide role: every site of its trial), so a coordinator never learns which
    other sites run its trial. Read-only for everyone: a site's approved protocol version
    changes only through site_move_to_version."""

    read_roles = PROTOCOL_READERS
    list_filter = [scoped_filter("trial"), scoped_filter("site")]  # type: ignore[misc,assignment]
    # A site's approval of an amendment, and moving its participants onto it, are its
    # coordinators' and investigators' (scheduler/admin/amendments.py), with a preview of
    # each participant's calendar.
    lifecycle = [ApproveAndMove()]
    action_select_related = ("trial", "site", "protocol_version__trial")
    change_form_template = "admin/lifecycle/change_form.html"

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[TrialSite]:
        if write:
            return access.trial_sites_for(request.user)
        if self.governs(request):
            return TrialSite.objects.all()
        return access.trial_sites_for(request.user, roles=PROTOCOL_READERS)

    def get_urls(self) -> list[URLPattern]:
        return [*self.lifecycle_urls(), *super().get_urls()]

    def summary(self, record: TrialSite) -> Summary:
        return [
            ("Trial", str(record.trial)),
            ("Site", f"{record.site}; dates are site-local, {record.site.timezone}"),
            ("Approved version", str(record.protocol_version or "the newest published")),
            ("Approved on", str(record.approved_on or "—")),
        ]

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action in READS and super().permits(request, action, obj)


admin.site.unregister(ScheduledActivity)


@admin.register(ScheduledActivity)
class ScheduledActivityAdmin(ScopedAdmin, ScheduledActivityRecordAdmin):  # type: ignore[misc]
    """The schedule of activities of trials/admin.py, scoped like protocol versions: holders
    of Django's permission on it see every trial's; members (data managers included) read
    their trials'. Imported from protocol files, never edited here."""

    read_roles = PROTOCOL_READERS
    list_filter = [scoped_filter("visit__version__trial")]

    def governs(self, request: HttpRequest) -> bool:
        return _governs(request, self.opts)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[ScheduledActivity]:
        if self.governs(request):
            return ScheduledActivity.objects.all()
        return access.scheduled_activities_for(request.user)

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action in READS and (self.governs(request) or super().permits(request, action, obj))


# The participant and membership admins are built on the services above; importing them
# registers them.
