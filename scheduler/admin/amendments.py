"""Protocol amendments in the admin: publish a version, then each site records its ethics
approval and moves its participants onto it, with a preview of every participant's calendar.

Both are lifecycle actions (scheduler/admin/actions.py): a form, a preview that writes
nothing, a confirm that calls the service once.
- Publishing is the data manager's (the role that holds a trial's protocols);
- a site's approval and move are its coordinators' and investigators' (the people who
  change calendars there), as in the REST API's …/sites/{site}/approval/.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scheduler.access import site_today
from scheduler.admin.actions import Done, LifecycleAction, Preview
from scheduler.admin.base import iso
from scheduler.forms import LifecycleForm, date_field, reason_field
from scheduler.services import site_move_to_version, site_move_to_version_preview
from trials.models import ProtocolVersion, TrialSite
from trials.services import protocol_version_publish


class SiteApprovalForm(LifecycleForm):
    version_id = forms.TypedChoiceField(label=gettext_lazy("Protocol version"), coerce=int)
    approved_on = date_field(gettext_lazy("Approved by the ethics committee on"))
    on = date_field(gettext_lazy("Move participants from (site-local)"))
    reason = reason_field(
        required=True, help_text=gettext_lazy("The amendment, as the audit trail says it.")
    )

    def __init__(self, *args: Any, versions: QuerySet[ProtocolVersion], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["version_id"].choices = [  # type: ignore[attr-defined]
            (version.pk, str(version)) for version in versions
        ]


def _approvable(trial_site: TrialSite) -> QuerySet[ProtocolVersion]:
    """Published versions of the trial other than the one the site is on."""
    versions = ProtocolVersion.objects.filter(
        trial=trial_site.trial_id, published_at__isnull=False
    ).select_related("trial")
    if trial_site.protocol_version_id is not None:
        versions = versions.exclude(pk=trial_site.protocol_version_id)
    return versions.order_by("-published_at")


class ApproveAndMove(LifecycleAction[TrialSite]):
    """Record the site's approval of a version and move its active participants onto it."""

    name = "approve"
    title = "Record approval and move participants"
    form_class = SiteApprovalForm
    confirm_label = "Confirm approval and move"

    def available(self, record: TrialSite) -> bool:
        return _approvable(record).exists()

    def initial(self, record: TrialSite) -> dict[str, Any]:
        today = site_today(record.site)
        return {"approved_on": today, "on": today}

    def form_kwargs(self, record: TrialSite) -> dict[str, Any]:
        return {"versions": _approvable(record)}

    def _wanted(self, record: TrialSite, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "site": record.site,
            "version": _approvable(record).get(pk=data["version_id"]),
            "approved_on": data["approved_on"],
            "on": data["on"],
        }

    def preview(self, record: TrialSite, data: dict[str, Any], form: LifecycleForm) -> Preview:
        wanted = self._wanted(record, data)
        moved = site_move_to_version_preview(**wanted)
        current = record.protocol_version
        return Preview(
            [
                ("Site", str(record.site), False),
                ("Approved now", str(current or _("the newest published")), False),
                (
                    "Will approve",
                    _("%(version)s, approved on %(day)s")
                    % {"version": wanted["version"], "day": iso(data["approved_on"])},
                    True,
                ),
                (
                    "Participants moved",
                    _("%(count)s, from %(day)s") % {"count": len(moved), "day": iso(data["on"])},
                    True,
                ),
                ("Reason", data["reason"], False),
            ],
            note=(
                "Participants who completed, withdrew or failed screening stay where they "
                "are; what lies before the move date keeps its version."
            ),
            context={"moved_participants": sorted(moved.items())},
        )

    def confirm(
        self, record: TrialSite, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        wanted = self._wanted(record, data)
        moved = site_move_to_version(**wanted, by=by, reason=data["reason"])
        return Done(
            _(
                "%(site)s approved %(version)s on %(approved_on)s; %(count)s participant(s) "
                "moved from %(day)s."
            )
            % {
                "site": record.site,
                "version": wanted["version"],
                "approved_on": iso(data["approved_on"]),
                "count": len(moved),
                "day": iso(data["on"]),
            },
            record,
        )


class PublishForm(LifecycleForm):
    reason = reason_field(required=False, help_text=gettext_lazy("Empty: “published”."))


class PublishVersion(LifecycleAction[ProtocolVersion]):
    """Publish a draft: from then on it is immutable and sites may approve it."""

    name = "publish"
    title = "Publish this version"
    form_class = PublishForm
    confirm_label = "Confirm: publish"

    def available(self, record: ProtocolVersion) -> bool:
        return not record.is_published

    def preview(
        self, record: ProtocolVersion, data: dict[str, Any], form: LifecycleForm
    ) -> Preview:
        sites = TrialSite.objects.filter(trial=record.trial_id).select_related("site")
        return Preview(
            [
                ("Version", str(record), True),
                (
                    "Sites that may then approve it",
                    ", ".join(str(t.site) for t in sites) or "—",
                    False,
                ),
            ],
            note=(
                "Once published, the version never changes: a correction is a new version. "
                "Nobody moves onto it until their site records its approval."
            ),
        )

    def confirm(
        self, record: ProtocolVersion, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        protocol_version_publish(version=record, by=by)
        return Done(_("%(version)s published.") % {"version": record}, record)
