"""Emergency unblinding: one participant's arm, for the one person who needs it now.

- `EmergencyUnblindingActions`, a mixin of the participant admin: an "Emergency unblinding"
  link on the page of a participant of a blinded trial, shown to the site's investigator and
  unblinded pharmacist (access.can_emergency_unblind); its page asks for the user's password
  and a reason, calls governance.participant_emergency_unblind, and shows that participant's
  arm once, on the response (never in a message, the session or a redirect), with the
  reference of the audit entry. Anybody else who reads the participant gets a 403; another
  site's participant is a 404, like a missing one.
- The audit entries, read-only, for the trial's monitors and unblinded roles; the notices,
  read-only, for their recipients.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.contrib import admin
from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from participants.models import Participant
from scheduler import access, audittrail
from scheduler.admin.scoping import ScopedAdmin, scoped_filter
from scheduler.display import site_time
from scheduler.governance import GovernanceError, participant_emergency_unblind
from scheduler.models import EmergencyUnblinding, UnblindingNotice
from scheduler.security import unlock_at

if TYPE_CHECKING:
    from scheduler.admin.base import CalendarActionsAdmin

    _Base = CalendarActionsAdmin
else:
    _Base = object


class EmergencyUnblindingForm(forms.Form):
    # Not required here: the service refuses a blank password or reason in its own words.
    password = forms.CharField(
        label=gettext_lazy("Your password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=gettext_lazy("Re-enter the password you signed in with."),
    )
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy(
            "Why the arm must be known now. Kept in the audit entry and sent to the "
            "trial's unblinded contacts."
        ),
    )


def may_unblind(user: Any, participant: Participant) -> bool:
    """Whether to offer the link: a blinded trial, and an unblinding role at the site."""
    return participant.trial.is_blinded and access.can_emergency_unblind(
        user, trial_id=participant.trial_id, site_id=participant.site_id
    )


class EmergencyUnblindingActions(_Base):
    """The participant admin's "Emergency unblinding" link and page (see the module)."""

    def get_urls(self) -> list[URLPattern]:
        return [
            self.action_path("emergency-unblind", "emergency_unblind", self.emergency_unblind_view),
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
        response = super().render_change_form(request, context, add, change, form_url, obj)
        # Added to the links the participant admin chose (it sets them itself), before the
        # page renders.
        shown = getattr(response, "context_data", None)
        if obj is not None and shown is not None and may_unblind(request.user, obj):
            shown["related_links"] = [
                *shown.get("related_links", []),
                (_("Emergency unblinding"), self.action_url("emergency_unblind", obj)),
            ]
        return response

    def emergency_unblind_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        participant: Participant = self.visible_object(
            request,
            object_id,
            access.participants_for(request.user).select_related("trial", "site"),
        )
        if not access.can_emergency_unblind(
            request.user, trial_id=participant.trial_id, site_id=participant.site_id
        ):
            raise PermissionDenied
        audittrail.record_view(
            request, participant_id=participant.pk, surface="admin", page="emergency_unblinding"
        )
        form = EmergencyUnblindingForm(request.POST if request.method == "POST" else None)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": participant,
            "original_url": reverse("admin:participants_participant_change", args=[participant.pk]),
            "title": _("Emergency unblinding"),
            "summary": [
                (_("Participant"), str(participant)),
                (_("Site"), participant.site.name),
                (_("Trial blinding"), participant.trial.blinding),
            ],
        }
        if request.method == "POST" and form.is_valid():
            locked = _password_guesses_spent(request, form.cleaned_data["password"])
            if locked:
                form.add_error(None, locked)
                return TemplateResponse(
                    request, "admin/unblinding/form.html", {**context, "form": form}
                )
            try:
                unblinded = participant_emergency_unblind(
                    participant=participant,
                    by=request.user,
                    password=form.cleaned_data["password"],
                    reason=form.cleaned_data["reason"],
                )
            except GovernanceError as refusal:
                form.add_error(None, str(refusal))
            else:
                entry = unblinded.entry
                return TemplateResponse(
                    request,
                    "admin/unblinding/result.html",
                    {
                        **context,
                        "arm": unblinded.arm,
                        "entry": entry,
                        "entry_at": site_time(entry.at, participant.site),
                        "notified": entry.notices.count(),
                    },
                )
        return TemplateResponse(request, "admin/unblinding/form.html", {**context, "form": form})


def _password_guesses_spent(request: HttpRequest, password: str) -> str:
    """Why the password re-entered cannot be checked ("" when it can), after checking it as a
    sign-in would.

    The password goes through authentication, so django-axes counts a wrong one against the
    account as it counts a failed sign-in: after AXES_FAILURE_LIMIT of them (sign-ins and
    unblinding attempts together) the account is locked for AXES_COOLOFF_MINUTES, and the
    form refuses even the right password meanwhile. Someone at an unattended, signed-in
    workstation cannot try passwords here without end. The service checks the password
    again (`participant_emergency_unblind`) and says whether it was wrong.
    """
    username = request.user.get_username()  # type: ignore[union-attr]
    credentials = {"username": username}
    if not AxesProxyHandler.is_locked(request, credentials) and password:
        authenticate(request, username=username, password=password)
    if not AxesProxyHandler.is_locked(request, credentials):
        return ""
    until = unlock_at(username)
    return _(
        "Too many wrong passwords for this account: it is locked until %(until)s (signing in "
        "too). Nothing was unblinded."
    ) % {"until": until.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if until else "?"}


# ----------------------------------------------------------------------------------------
# The audit entries and the notices: written only by the service, never edited or deleted.


@admin.register(EmergencyUnblinding)
class EmergencyUnblindingAdmin(ScopedAdmin):
    """Who broke which participant's code, when and why (never the arm): read by the trial's
    monitors (every site) and unblinded pharmacists (their site)."""

    read_roles = access.UNBLINDING_AUDIT_ROLES
    list_display = ["reference", "participant", "user", "unblinded_at", "reason"]
    list_filter = [scoped_filter("participant__trial"), scoped_filter("participant__site")]
    list_select_related = ["participant__trial", "participant__site", "user"]
    search_fields = ["participant__study_id"]
    fields = ["participant", "user", "unblinded_at", "reason"]
    readonly_fields = ["participant", "user", "unblinded_at", "reason"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[EmergencyUnblinding]:
        if write:
            return EmergencyUnblinding.objects.none()
        return access.emergency_unblindings_for(request.user)

    @admin.display(description=gettext_lazy("reference"), ordering="pk")
    def reference(self, entry: EmergencyUnblinding) -> str:
        return f"#{entry.pk}"

    @admin.display(description=gettext_lazy("unblinded at (site time)"), ordering="at")
    def unblinded_at(self, entry: EmergencyUnblinding) -> str:
        return site_time(entry.at, entry.participant.site)


@admin.register(UnblindingNotice)
class UnblindingNoticeAdmin(ScopedAdmin):
    """A recipient's own notices of emergency unblindings in their trials."""

    read_roles = access.UNBLINDED_ROLES
    list_display = ["received_at", "text"]
    list_select_related = ["unblinding__participant__site"]
    fields = ["received_at", "text"]
    readonly_fields = ["received_at", "text"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[UnblindingNotice]:
        if write:
            return UnblindingNotice.objects.none()
        return access.unblinding_notices_for(request.user)

    @admin.display(description=gettext_lazy("received at (site time)"), ordering="created_at")
    def received_at(self, notice: UnblindingNotice) -> str:
        return site_time(notice.created_at, notice.unblinding.participant.site)
