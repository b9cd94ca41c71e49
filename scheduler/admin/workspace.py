"""The coordinator's start page: the admin index for everyone with a clinical role.

What it shows is `scheduler.workspace.workspace_for` (scoped by access.py, each site against its
own today); this module only turns it into rows and links. Each row links to the one action it
needs (book, record done, the taper decision, a reminder's retry), and each count to the admin
list of exactly its rows. Users without a clinical role (a data manager, whoever manages
users) keep Django's index. `WorkspaceAdminSite` (scheduler/apps.py) calls `start_page`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib.admin import AdminSite
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from scheduler import access
from scheduler.display import site_time
from scheduler.models import Reminder, ScheduledMilestone, ScheduledVisit
from scheduler.selectors import VISIT_GLANCE_LABELS, visit_glance_status
from scheduler.workspace import (
    CLOSING_SOON_DAYS,
    RECENT_MISSED_DAYS,
    SiteWork,
    procedure_resources,
    workspace_for,
)
from trials.models import Site, localized_name

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

SECTION_TITLES = {
    "today": gettext_lazy("Booked today"),
    "week": gettext_lazy("Booked later this week"),
    "due": gettext_lazy("Windows open, nothing booked"),
    "overdue": gettext_lazy("Overdue"),
    "missed": gettext_lazy("Missed (window closed in the last %(days)s days)"),
    "deviation": gettext_lazy("Deviations awaiting a reason"),
    "taper": gettext_lazy("Taper decisions due this week"),
    "outbox": gettext_lazy("Failed, dead and unknown reminders and webhook deliveries"),
}
# The statuses the start page shows, in the reader's language (the models' labels are English).
REMINDER_STATUS_LABELS: dict[str, StrOrPromise] = {
    Reminder.Status.FAILED: gettext_lazy("failed (will retry)"),
    Reminder.Status.DEAD: gettext_lazy("dead (gave up)"),
    Reminder.Status.UNKNOWN: gettext_lazy("outcome unknown"),
}
MILESTONE_STATUS_LABELS: dict[str, StrOrPromise] = {
    ScheduledMilestone.Status.PLANNED: gettext_lazy("Planned"),
    ScheduledMilestone.Status.DONE: gettext_lazy("Done"),
    ScheduledMilestone.Status.CANCELLED: gettext_lazy("Cancelled"),
}
CHANNEL_LABELS = {
    "email": gettext_lazy("email"),
    "sms": gettext_lazy("SMS"),
    "in_app": gettext_lazy("in-app notices"),
    "webhook": gettext_lazy("webhook deliveries"),
}


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    # A POST (a reminder's retry: an admin action) rather than a page to open.
    post: dict[str, str] | None = None


@dataclass(frozen=True)
class Row:
    who: Link
    what: str
    when: str
    procedures: str
    resources: str
    status: str
    action: Link
    # The trial's code: a study id is unique in its trial only.
    trial: str = ""
    # Shown in red: a window closing soon, a deviation, a failure.
    urgent: bool = False


@dataclass(frozen=True)
class Count:
    label: str
    number: int
    url: str


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    counts: list[Count]
    rows: list[Row]
    empty: str


def is_clinical(user: object) -> bool:
    """Holds a role that reads participants' calendars somewhere (the start page's audience)."""
    return access.holds_role(user, access.READ_ROLES)


def start_page(
    site: AdminSite, request: HttpRequest, extra_context: dict[str, Any] | None = None
) -> TemplateResponse | None:
    """The start page for a clinical role, else None (the caller shows Django's index)."""
    if not is_clinical(request.user):
        return None
    sites = [_site_block(request.user, work) for work in workspace_for(request.user)]
    context = {
        **site.each_context(request),
        "title": _("Today's work"),
        "subtitle": None,
        "site_blocks": sites,
        "many_sites": len(sites) > 1,
        **(extra_context or {}),
    }
    request.current_app = site.name
    return TemplateResponse(request, "admin/workspace/start.html", context)


# ----------------------------------------------------------------------------------------
# Links: every count lands on the admin list with exactly its rows (scheduler/admin/lists.py
# has the filters), every row on the one action it needs.


def _list_url(model: str, site: Site, **params: Any) -> str:
    query = {"participant__site__id__exact": site.pk, **params}
    return f"{reverse(f'admin:scheduler_{model}_changelist')}?{urlencode(query)}"


def visit_count_urls(work: SiteWork) -> dict[str, str]:
    """The visit list of exactly each section's rows at the site."""
    site = work.site
    return {
        "today": _list_url("scheduledvisit", site, status__exact="booked", booked="today"),
        "week": _list_url("scheduledvisit", site, status__exact="booked", booked="later"),
        "due": _list_url("scheduledvisit", site, status__exact="planned", window="open"),
        "closing": _list_url(
            "scheduledvisit", site, status__exact="planned", window=f"closing_{CLOSING_SOON_DAYS}"
        ),
        "overdue": _list_url("scheduledvisit", site, attention="overdue"),
        "missed": _list_url(
            "scheduledvisit", site, status__exact="missed", window=f"closed_{RECENT_MISSED_DAYS}"
        ),
        "deviation": _list_url("scheduledvisit", site, deviation="no_reason"),
    }


def taper_count_url(work: SiteWork) -> str:
    return _list_url(
        "scheduledmilestone",
        work.site,
        rule__kind__exact="taper",
        status__exact="planned",
        due_date__gte=work.today.isoformat(),
        due_date__lte=work.week_end.isoformat(),
    )


def outbox_count_url(work: SiteWork, channel: str) -> str:
    return _list_url("reminder", work.site, attention="failed_or_dead", channel__exact=channel)


def unknown_count_url(work: SiteWork, channel: str) -> str:
    return _list_url("reminder", work.site, attention="unknown", channel__exact=channel)


def _change_url(obj: Any) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def _visit_action(visit: ScheduledVisit, section: str, writes: bool) -> Link:
    if not writes:
        return Link(_("View"), _change_url(visit))
    if section in ("today", "overdue"):
        name, label = "record_done", _("Record done")
    elif section == "week":
        name, label = "book", _("Reschedule")
    elif section == "due":
        name, label = "book", _("Book")
    elif section == "missed":
        return Link(_("Open calendar"), _change_url(visit.participant))
    else:
        name, label = "deviation_reason", _("Give the reason")
    return Link(label, reverse(f"admin:scheduler_scheduledvisit_{name}", args=[visit.pk]))


# ----------------------------------------------------------------------------------------
# Rows


def _days(days: int) -> str:
    return ngettext("%(n)s day", "%(n)s days", days) % {"n": days}


def _window(visit: ScheduledVisit) -> str:
    return _("window %(start)s to %(end)s") % {
        "start": visit.window_start.isoformat(),
        "end": visit.window_end.isoformat(),
    }


def _visit_when(visit: ScheduledVisit, section: str, today: dt.date) -> tuple[str, bool]:
    site = visit.participant.site
    if section in ("today", "week"):
        return site_time(visit.booked_start, site), False
    if section == "due":
        left = (visit.window_end - today).days
        if left == 0:
            return _("%(window)s: closes today") % {"window": _window(visit)}, True
        text = _("%(window)s: closes in %(days)s") % {"window": _window(visit), "days": _days(left)}
        return text, left <= CLOSING_SOON_DAYS
    if section == "overdue":
        if visit.status == ScheduledVisit.Status.BOOKED:
            return _("booked for %(when)s") % {"when": site_time(visit.booked_start, site)}, True
        return _("%(window)s: closed %(days)s ago") % {
            "window": _window(visit),
            "days": _days((today - visit.window_end).days),
        }, True
    if section == "deviation":
        days = visit.deviation_days or 0
        done = (
            _("done %(date)s, %(days)s before the window")
            if days < 0
            else _("done %(date)s, %(days)s after the window")
        )
        return done % {
            "date": visit.actual_date.isoformat() if visit.actual_date else "—",
            "days": _days(abs(days)),
        }, True
    return _window(visit), False


def _visit_row(visit: ScheduledVisit, section: str, work: SiteWork, writes: bool) -> Row:
    when, urgent = _visit_when(visit, section, work.today)
    procedures = [scheduled.procedure for scheduled in visit.procedures.all()]
    return Row(
        who=Link(visit.participant.study_id, _change_url(visit.participant)),
        what=f"{visit.code} – {visit.name}",
        when=when,
        procedures=", ".join(localized_name(procedure) for procedure in procedures) or "—",
        resources=", ".join(procedure_resources(visit)) or "—",
        status=_(VISIT_GLANCE_LABELS[visit_glance_status(visit, today=work.today)]),
        action=_visit_action(visit, section, writes),
        trial=visit.participant.trial.code,
        urgent=urgent,
    )


def _taper_row(step: ScheduledMilestone, writes: bool) -> Row:
    participant = step.participant
    dose = (
        "—"
        if step.dose_mg is None
        else _("%(dose)s mg/day") % {"dose": f"{step.dose_mg.normalize():f}"}
    )
    action = (
        Link(
            _("Taper decision"),
            reverse("admin:participants_participant_taper", args=[participant.pk]),
        )
        if writes
        else Link(_("View"), _change_url(step))
    )
    return Row(
        who=Link(participant.study_id, _change_url(participant)),
        what=_("%(rule)s week %(week)s: %(dose)s")
        % {"rule": step.rule.code, "week": step.sequence, "dose": dose},
        when=step.due_date.isoformat(),
        procedures="—",
        resources="—",
        status=step.flag
        or str(MILESTONE_STATUS_LABELS.get(step.status, step.get_status_display())),
        action=action,
        trial=participant.trial.code,
    )


def _outbox_row(reminder: Reminder, writes: bool) -> Row:
    participant = reminder.participant
    if reminder.status == Reminder.Status.UNKNOWN:
        # Its worker stopped mid-send: a person decides, on the reminder's page, whether it
        # went (mark as sent) or goes again (send again), with a reason.
        action = Link(_("Decide") if writes else _("View"), _change_url(reminder))
    elif writes:
        action = Link(
            _("Retry"),
            reverse("admin:scheduler_reminder_changelist"),
            post={"action": "retry", "index": "0", "_selected_action": str(reminder.pk)},
        )
    else:
        action = Link(_("View"), _change_url(reminder))
    channel = str(CHANNEL_LABELS.get(reminder.channel, reminder.channel))
    return Row(
        who=Link(participant.study_id, _change_url(participant)),
        what=f"{reminder.event} · {channel}",
        when=site_time(reminder.due_at, participant.site),
        procedures="—",
        resources="—",
        status=_("%(status)s after %(attempts)s")
        % {
            "status": REMINDER_STATUS_LABELS.get(reminder.status, reminder.get_status_display()),
            "attempts": ngettext("%(n)s attempt", "%(n)s attempts", reminder.attempts)
            % {"n": reminder.attempts},
        },
        action=action,
        trial=participant.trial.code,
        urgent=True,
    )


def _site_block(user: object, work: SiteWork) -> dict[str, Any]:
    def writes(obj: Any) -> bool:
        participant = obj.participant
        return access.can_write_at(user, trial=participant.trial, site=participant.site)

    urls = visit_count_urls(work)
    counts = work.counts
    sections = []
    for key in ("today", "week", "due", "overdue", "missed", "deviation"):
        section_counts = [Count(_("all"), counts[key], urls[key])]
        if key == "due":
            section_counts.append(
                Count(
                    _("closing within %(days)s") % {"days": _days(CLOSING_SOON_DAYS)},
                    counts["closing"],
                    urls["closing"],
                )
            )
        sections.append(
            Section(
                key=key,
                title=str(SECTION_TITLES[key]) % {"days": RECENT_MISSED_DAYS}
                if key == "missed"
                else str(SECTION_TITLES[key]),
                counts=section_counts,
                rows=[_visit_row(v, key, work, writes(v)) for v in work.visits.get(key, [])],
                empty=_("Nothing."),
            )
        )
    sections.append(
        Section(
            key="taper",
            title=str(SECTION_TITLES["taper"]),
            counts=[Count(_("all"), counts["taper"], taper_count_url(work))],
            rows=[_taper_row(step, writes(step)) for step in work.tapers],
            empty=_("Nothing."),
        )
    )
    sections.append(
        Section(
            key="outbox",
            title=str(SECTION_TITLES["outbox"]),
            counts=[
                Count(str(CHANNEL_LABELS.get(channel, channel)), n, outbox_count_url(work, channel))
                for channel, n in sorted(work.outbox_counts.items())
            ]
            + [
                Count(
                    _("%(channel)s, outcome unknown")
                    % {"channel": CHANNEL_LABELS.get(channel, channel)},
                    n,
                    unknown_count_url(work, channel),
                )
                for channel, n in sorted(work.unknown_counts.items())
            ],
            rows=[_outbox_row(reminder, writes(reminder)) for reminder in work.outbox],
            empty=_("Nothing failed."),
        )
    )
    return {
        "site": work.site,
        "today": work.today,
        "clock": site_time(access.site_now(work.site), work.site),
        "zone": work.site.timezone,
        "sections": sections,
    }
