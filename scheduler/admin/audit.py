from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from simple_history.utils import get_history_model_for_model

from scheduler import access
from scheduler.admin.scoping import HIERARCHY_YEARS, ScopedAdmin, scoped_filter
from scheduler.display import site_time
from scheduler.models import (
    ScheduledMilestone,
    ScheduledVisit,
    visit_code,
)
from trials.models import Site


class SiteDayChangeList(ChangeList):
    """A list whose date drill-down (year, month, day) means the days of each row's site, as
    its dates are shown: Django's counts UTC days, so an entry made at 00:30 on the 11th at a
    site fourteen hours ahead of UTC was found under the 10th. The list spans sites in several
    zones: the range asked for is taken in each zone, for the rows of that zone's sites."""

    def get_filters_params(self, params: Any = None) -> Any:
        lookup_params = super().get_filters_params(params)
        field = self.date_hierarchy
        self.site_days = {
            part: lookup_params.pop(f"{field}__{part}")[-1]
            for part in ("year", "month", "day")
            if f"{field}__{part}" in lookup_params
        }
        return lookup_params

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> Any:
        queryset = super().get_queryset(request, exclude_parameters)
        asked = getattr(self, "site_days", {})
        if "year" not in asked:
            return queryset
        try:
            year, month, day = (int(asked.get(p, 1)) for p in ("year", "month", "day"))
            first = dt.date(year, month, day)
        except ValueError as error:
            raise IncorrectLookupParameters(error) from error
        if year not in HIERARCHY_YEARS:  # as ScopedAdmin.lookup_allowed bounds it
            raise IncorrectLookupParameters(f"{self.date_hierarchy}__year: {year}")
        if "day" in asked:
            after = first + dt.timedelta(days=1)
        elif "month" in asked:
            after = _month_after(first)
        else:
            after = first.replace(year=year + 1)
        return within_site_days(
            queryset, self.date_hierarchy, lambda today: (first, after), now=timezone.now()
        )


def within_site_days(
    queryset: QuerySet[Any],
    field: str,
    days: Callable[[dt.date], tuple[dt.date, dt.date]],
    *,
    now: dt.datetime,
) -> QuerySet[Any]:
    """The rows of `queryset` whose instant `field` falls, on the clock of the row's
    participant's site, within the days `days(that site's today)` gives (the first day in, the
    last day out). A list spans sites in several zones: each zone's range is taken for the
    rows of that zone's sites."""
    sites_by_zone: dict[str, list[int]] = defaultdict(list)
    site_ids = queryset.order_by().values("participant__site")
    for pk, zone in Site.objects.filter(pk__in=site_ids).values_list("pk", "timezone"):
        sites_by_zone[zone].append(pk)
    within = Q(pk__in=[])
    for zone, sites in sites_by_zone.items():
        tz = ZoneInfo(zone)
        first, after = days(now.astimezone(tz).date())
        within |= Q(
            participant__site__in=sites,
            **{
                f"{field}__gte": dt.datetime.combine(first, dt.time(), tzinfo=tz),
                f"{field}__lt": dt.datetime.combine(after, dt.time(), tzinfo=tz),
            },
        )
    return queryset.filter(within)


def _month_after(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


class SiteDaysFilter(admin.SimpleListFilter):
    """Django's quick date filter (Today, Past 7 days, This month, This year) on the days of
    each row's site, as the list shows its dates: Django's counts the days of the server's
    zone (UTC), so at 08:00 in Tokyo its "Today" began at 09:00 the day before."""

    title = "date"
    parameter_name = "changed_on"
    SPANS: dict[str, tuple[str, Callable[[dt.date], tuple[dt.date, dt.date]]]] = {
        "today": ("Today", lambda today: (today, today + dt.timedelta(days=1))),
        "past_7_days": (
            "Past 7 days",
            lambda today: (today - dt.timedelta(days=7), today + dt.timedelta(days=1)),
        ),
        "this_month": (
            "This month",
            lambda today: (today.replace(day=1), _month_after(today)),
        ),
        "this_year": (
            "This year",
            lambda today: (
                today.replace(month=1, day=1),
                today.replace(year=today.year + 1, month=1, day=1),
            ),
        ),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in self.SPANS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if value not in self.SPANS:
            raise IncorrectLookupParameters(f"{self.parameter_name}: {value!r}")
        return within_site_days(queryset, "history_date", self.SPANS[value][1], now=timezone.now())


class AuditRecordAdmin(ScopedAdmin):
    """Every audit entry of a model, to browse across records: read-only for everyone, and
    only the entries of participants the user may read (those of a record deleted since
    included: the entries carry the participant)."""

    date_hierarchy = "history_date"  # on each row's site's days: SiteDayChangeList
    list_filter = [
        "history_type",
        SiteDaysFilter,  # not Django's "history_date": it counts UTC days
        scoped_filter("participant__trial"),
        scoped_filter("participant__site"),
    ]
    ordering = ["-history_date", "-history_id"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SiteDayChangeList

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Any]:
        if write:
            return self.model._default_manager.none()
        return self.model._default_manager.filter(
            participant__in=access.participants_for(request.user)
        )

    @admin.display(description="changed by", ordering="history_user")
    def changed_by(self, entry: Any) -> str:
        return str(entry.history_user) if entry.history_user is not None else "—"

    @admin.display(description="date", ordering="history_date")
    def changed_at(self, entry: Any) -> str:
        # On the clock of the participant's site (the list can span sites).
        return site_time(entry.history_date, entry.participant.site)


@admin.register(get_history_model_for_model(ScheduledVisit))
class HistoricalScheduledVisitAdmin(AuditRecordAdmin):
    list_display = [
        "changed_at",
        "changed_by",
        "history_type",
        "history_change_reason",
        "record",
        "status",
        "target_date",
        "booked_date",
        "deviation_days",
        "version",
    ]
    list_filter = [*AuditRecordAdmin.list_filter, "status"]
    search_fields = ["participant__study_id", "visit_definition__code", "history_change_reason"]
    list_select_related = [
        "history_user",
        "participant__trial",
        "participant__site",
        "visit_definition",
    ]

    @admin.display(description="visit")
    def record(self, entry: Any) -> str:
        return format_html(
            '<a href="{}">{} {}</a>',
            reverse("admin:scheduler_scheduledvisit_change", args=[entry.id]),
            visit_code(entry.visit_definition, entry.occurrence),
            entry.participant,
        )


@admin.register(get_history_model_for_model(ScheduledMilestone))
class HistoricalScheduledMilestoneAdmin(AuditRecordAdmin):
    list_display = [
        "changed_at",
        "changed_by",
        "history_type",
        "history_change_reason",
        "record",
        "status",
        "due_date",
        "dose_mg",
        "flag",
    ]
    list_filter = [*AuditRecordAdmin.list_filter, "status"]
    search_fields = ["participant__study_id", "rule__code", "history_change_reason"]
    list_select_related = ["history_user", "participant__trial", "participant__site", "rule"]

    @admin.display(description="milestone")
    def record(self, entry: Any) -> str:
        return format_html(
            '<a href="{}">{} step {} {}</a>',
            reverse("admin:scheduler_scheduledmilestone_change", args=[entry.id]),
            entry.rule.code,
            entry.sequence,
            entry.participant,
        )


# ----------------------------------------------------------------------------------------
# Reminders: the outbox as coordinators see it
