"""The screening log: everyone registered at the user's sites, from registration to the
outcome of screening, as a site keeps it for its monitor (ICH E6's screening log).

One row a participant: registered (site-local date), the machine eligibility checks for those
still in screening, the investigator's sign-off, and the outcome (enrolled, screen failed
with its reason, withdrawn or completed later). Rows in screening link to the two actions
that end screening: check eligibility and enroll, or screen failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from participants.models import Participant
from participants.selectors import machine_criteria_prefetch
from scheduler.access import site_today
from scheduler.display import site_time
from scheduler.services import participant_enroll_check

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

Status = Participant.Status
# Rows a page: the log of a large trial is read a page at a time, like the admin's lists.
PAGE_SIZE = 100


@dataclass(frozen=True)
class ScreeningRow:
    participant: Participant
    registered: str
    checks: list[str] | None  # None: not in screening any more
    sign_off: str
    outcome: str
    reason: str
    actions: list[tuple[str, str]]


# A participant's status in the reader's language (the model's labels are English).
STATUS_LABELS: dict[str, StrOrPromise] = {
    Status.SCREENING: gettext_lazy("Screening"),
    Status.SCREEN_FAILED: gettext_lazy("screen failed"),
    Status.ENROLLED: gettext_lazy("Enrolled"),
    Status.COMPLETED: gettext_lazy("Completed"),
    Status.WITHDRAWN: gettext_lazy("Withdrawn"),
}


def participant_status_text(participant: Participant) -> str:
    return str(STATUS_LABELS.get(participant.status, participant.get_status_display()))


def _outcome(participant: Participant) -> str:
    if participant.status == Status.SCREENING:
        return _("in screening")
    if participant.status == Status.SCREEN_FAILED:
        return _("screen failed on %(day)s") % {"day": participant.ended_on}
    status = participant_status_text(participant)
    if participant.enrolled_at is None:
        return _("%(status)s in screening on %(day)s") % {
            "status": status,
            "day": participant.ended_on,
        }
    # The day of the enrollment at the site (which a coordinator catching up records later),
    # not when it was recorded; participants enrolled before that day was stored have only
    # the instant.
    if participant.enrolled_on is not None:
        enrolled = _("enrolled on %(day)s") % {"day": participant.enrolled_on}
    else:
        enrolled = _("enrolled %(when)s") % {
            "when": site_time(participant.enrolled_at, participant.site)
        }
    if participant.status == Status.ENROLLED:
        return enrolled
    return _("%(enrolled)s; %(status)s on %(day)s") % {
        "enrolled": enrolled,
        "status": status,
        "day": participant.ended_on,
    }


class ScreeningLogMixin:
    """Adds the screening log to the participant admin (same rows: its own queryset)."""

    admin_site: Any
    model: Any
    scoped: Any
    may_write: Any
    action_url: Any

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        return [
            path(
                "screening-log/",
                self.admin_site.admin_view(self.screening_log_view),
                name=f"{opts.app_label}_{opts.model_name}_screening_log",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def screening_rows(self, request: HttpRequest) -> QuerySet[Participant]:
        rows: QuerySet[Participant] = (
            # The admin's scope without the list's visit counts (the log does not show them).
            self.scoped(request, write=False)
            .select_related("trial", "site", "protocol_version__trial", "eligibility_confirmed_by")
            .order_by("trial__code", "site__code", "created_at", "study_id")
            # What the machine checks of those in screening read: once for the page.
            .prefetch_related("anchors", machine_criteria_prefetch())
        )
        for name in ("trial", "site"):
            wanted = request.GET.get(name)
            if wanted:
                rows = rows.filter(**{f"{name}__code": wanted})
        return rows

    def screening_log_view(self, request: HttpRequest) -> HttpResponse:
        writable = self.may_write(request)
        rows = self.screening_rows(request)
        page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
        log = []
        for participant in page.object_list:
            screening = participant.status == Status.SCREENING
            checks = (
                participant_enroll_check(participant=participant, on=site_today(participant.site))
                if screening
                else None
            )
            actions: list[tuple[str, str]] = []
            if screening and writable:
                actions = [
                    (
                        "Check eligibility and enroll",
                        reverse("admin:participants_participant_enroll", args=[participant.pk]),
                    ),
                    ("Screen failed", self.action_url("screen_fail", participant)),
                ]
            confirmer = participant.eligibility_confirmed_by
            log.append(
                ScreeningRow(
                    participant=participant,
                    registered=site_time(participant.created_at, participant.site),
                    checks=checks,
                    sign_off=(
                        f"{confirmer.get_username()}, "
                        f"{site_time(participant.eligibility_confirmed_at, participant.site)}"
                        if confirmer is not None and participant.eligibility_confirmed_at
                        else "—"
                    ),
                    outcome=_outcome(participant),
                    reason=participant.ended_reason or "",
                    actions=actions,
                )
            )
        opts = self.model._meta
        return TemplateResponse(
            request,
            "admin/screening/log.html",
            {
                **self.admin_site.each_context(request),
                "opts": opts,
                "title": _("Screening log"),
                "rows": log,
                "page": page,
                "query": request.GET.copy(),
                "counts": rows.aggregate(
                    registered=Count("pk"),
                    in_screening=Count("pk", filter=Q(status=Status.SCREENING)),
                    screen_failed=Count("pk", filter=Q(status=Status.SCREEN_FAILED)),
                    enrolled=Count("pk", filter=Q(enrolled_at__isnull=False)),
                ),
            },
        )
