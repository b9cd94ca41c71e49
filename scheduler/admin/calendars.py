"""Site calendars: opening hours, closures, resources (with their own hours and out-of-service
periods) and staff shifts, which booking holds visits against (scheduler/booking.py).

Governed like the sites they belong to (scheduler/admin/sites.py): members of a site's trials
read its calendar, rows scoped through `access.sites_for`; holders of Django's view or change
permission on sites read every site's; only holders of `trials.change_site` add, change or
delete anything. Public holidays are not here: they come from the `holidays` package for the
site's country and subdivision (set on the site).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from scheduler import access
from scheduler.admin.scoping import ScopedAdmin, scoped_filter
from trials.admin import READS, OneRule
from trials.models import (
    ResourceHours,
    ResourceOutOfService,
    SiteClosure,
    SiteHours,
    SiteResource,
    StaffShift,
)

CALENDAR_READERS = access.READ_ROLES | access.PROTOCOL_ROLES
CHANGE_SITE = "trials.change_site"


def _governs(request: HttpRequest) -> bool:
    user = request.user
    return user.has_perm("trials.view_site") or user.has_perm(CHANGE_SITE)


def _permits(request: HttpRequest, action: str) -> bool:
    if action in READS:
        return _governs(request) or access.holds_role(request.user, CALENDAR_READERS)
    return action in ("add", "change", "delete") and request.user.has_perm(CHANGE_SITE)


class SiteCalendarRule:
    """Rows of the sites the user reads; changed only with `trials.change_site`."""

    model: Any
    site_path = "site"
    read_roles: frozenset[str] = CALENDAR_READERS

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Any]:
        rows = self.model._default_manager.select_related(self.site_path)
        if write:
            return rows.all() if request.user.has_perm(CHANGE_SITE) else rows.none()
        if _governs(request):
            return rows.all()
        sites = access.sites_for(request.user, roles=CALENDAR_READERS)
        return rows.filter(**{f"{self.site_path}__in": sites})

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return _permits(request, action)


class CalendarInline(OneRule, admin.TabularInline):
    """Rows of a resource the user already may see: read by its readers, edited by holders
    of `trials.change_site`."""

    extra = 0

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return _permits(request, action)


class ResourceHoursInline(CalendarInline):
    model = ResourceHours
    verbose_name_plural = "own hours (none: the clinic's hours)"


class ResourceOutOfServiceInline(CalendarInline):
    model = ResourceOutOfService


@admin.register(SiteHours)
class SiteHoursAdmin(SiteCalendarRule, ScopedAdmin):
    list_display = ["site", "weekday", "start", "end"]
    list_filter = [scoped_filter("site")]


@admin.register(SiteClosure)
class SiteClosureAdmin(SiteCalendarRule, ScopedAdmin):
    list_display = ["site", "date", "reason"]
    list_filter = [scoped_filter("site")]
    date_hierarchy = "date"


@admin.register(SiteResource)
class SiteResourceAdmin(SiteCalendarRule, ScopedAdmin):
    """A resource's kind is what protocol procedures name in `resource:` (letter case aside)."""

    list_display = ["site", "kind", "name", "capacity"]
    list_filter = [scoped_filter("site"), "kind"]
    search_fields = ["name", "kind"]
    inlines = [ResourceHoursInline, ResourceOutOfServiceInline]


@admin.register(StaffShift)
class StaffShiftAdmin(SiteCalendarRule, ScopedAdmin):
    """One nurse who can watch two chairs at once is a count of 2."""

    list_display = ["site", "kind", "weekday", "start", "end", "count"]
    list_filter = [scoped_filter("site"), "kind"]
