"""Site calendars: opening hours, closures, resources (with their own hours and out-of-service
periods) and staff shifts, which booking holds visits against (scheduler/booking.py).

Governed like the sites they belong to (scheduler/admin/sites.py): members of a site's trials
read its calendar, rows scoped through `access.sites_for`; holders of Django's view or change
permission on sites read every site's; only holders of `trials.change_site` add, change or
delete anything. Public holidays are not here: they come from the `holidays` package for the
site's country and subdivision (set on the site).

An out-of-service period and a closure each have "Re-plan affected bookings": the bookings it
breaks and a new slot for each (scheduler.services.site_replan_preview), confirmed through the
one preview → confirm view (scheduler/admin/actions.py). It is the site's coordinators' and
investigators' (the people who book there), and moves only the visits they may change.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from scheduler import access
from scheduler.admin.actions import (
    Done,
    LifecycleAction,
    LifecycleActions,
    Outcome,
    Preview,
    Summary,
)
from scheduler.admin.base import iso
from scheduler.admin.scoping import ScopedAdmin, scoped_filter
from scheduler.calendar import VisitChange
from scheduler.display import site_time, zone_time
from scheduler.forms import LifecycleForm, reason_field
from scheduler.services import ReplanCause, ReplanMove, site_replan, site_replan_preview
from scheduler.slotwords import slot_words
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
    # Its own page has "Re-plan affected bookings".
    show_change_link = True


@admin.register(SiteHours)
class SiteHoursAdmin(SiteCalendarRule, ScopedAdmin):
    list_display = ["site", "weekday", "start", "end"]
    list_filter = [scoped_filter("site")]


# ----------------------------------------------------------------------------------------
# Re-planning the bookings a closure or an out-of-service period breaks


class ReplanForm(LifecycleForm):
    reason = reason_field(
        required=True,
        help_text=gettext_lazy("Kept in each moved visit's audit trail and its reschedule."),
    )
    # The preview's digest, carried to the confirm: a confirm whose bookings changed since
    # is refused by the service.
    digest = forms.CharField(widget=forms.HiddenInput, required=False)


def _change_words(change: VisitChange) -> str:
    assert change.new_window is not None
    words = _("%(visit)s: target %(old)s → %(new)s, window %(start)s to %(end)s") % {
        "visit": change.visit_code
        if change.occurrence <= 1
        else f"{change.visit_code} #{change.occurrence}",
        "old": iso(change.old_target),
        "new": iso(change.new_target),
        "start": iso(change.new_window[0]),
        "end": iso(change.new_window[1]),
    }
    if change.out_of_window:
        words += _("; its booking (%(day)s) would then lie outside it") % {
            "day": iso(change.booked_date)
        }
    return words


def _move_words(move: ReplanMove, zone: str) -> str:
    old = zone_time(move.old_start, zone)
    if move.slot is None:
        return _("%(old)s → not moved: %(why)s") % {"old": old, "why": move.reason}
    new = slot_words(move.slot, zone)
    if not move.deviation:
        return f"{old} → {new}"
    days = abs(move.slot.days_out)
    return _("%(old)s → %(new)s: DEVIATION, %(days)s out of the window; %(why)s") % {
        "old": old,
        "new": new,
        "days": ngettext("%(days)d day", "%(days)d days", days) % {"days": days},
        "why": move.reason,
    }


class ReplanBookings(LifecycleAction[Any]):
    """Re-plan the bookings a closure or out-of-service period breaks: the preview lists
    each with its proposed slot (deviations marked) and the calendars that move with it; the
    confirm rebooks them all, refused if anything changed since the preview."""

    name = "replan"
    title = "Re-plan affected bookings"
    form_class = ReplanForm
    confirm_label = "Confirm: rebook them"

    def __init__(self, user: Any = None) -> None:
        self.user = user

    def for_user(self, user: Any) -> ReplanBookings:
        """The action for one request's user: what it previews and moves are their visits."""
        return type(self)(user)

    def _visits(self) -> Any:
        return access.visits_for(self.user, write=True)

    def initial(self, record: ReplanCause) -> dict[str, Any]:
        return {"reason": record.reason}

    def preview(self, record: ReplanCause, data: dict[str, Any], form: LifecycleForm) -> Preview:
        replan = site_replan_preview(cause=record, visits=self._visits())
        # The digest rides in the preview's hidden fields to the confirm.
        form.data = {**form.data, form.add_prefix("digest"): replan.digest}
        zone = replan.site.timezone
        outcome: Outcome = [("Cause", replan.cause, False)]
        for move in replan.moves:
            outcome.append(
                (
                    f"{move.visit.participant.study_id} {move.visit.code}",
                    _move_words(move, zone),
                    move.slot is None or move.deviation,
                )
            )
        if not replan.moves:
            outcome.append(("Broken bookings", _("none you may move"), False))
        for participant, diff in replan.knock_on:
            for change in diff.visits:
                if change.new_window is None:
                    continue
                outcome.append(
                    (
                        _("%(participant)s: moves with it") % {"participant": participant.study_id},
                        _change_words(change),
                        change.out_of_window,
                    )
                )
        if replan.not_yours:
            outcome.append(
                (
                    "Broken bookings you may not move",
                    _("%(count)s (other trials at the site: their coordinators re-plan them)")
                    % {"count": replan.not_yours},
                    True,
                )
            )
        outcome.append(("Reason", data["reason"], False))
        return Preview(
            outcome,
            note=(
                "Each booking moves to the first feasible start inside its window (days "
                "nearest its target first, then the earliest time), in the order of the old "
                "bookings; none collides with another. A deviation is booked with the reason "
                "given; a booking not moved stays where it is."
            ),
        )

    def confirm(
        self, record: ReplanCause, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        result = site_replan(
            cause=record,
            digest=data.get("digest") or "",
            reason=data["reason"],
            by=by,
            visits=self._visits(),
        )
        site = record.resource.site if isinstance(record, ResourceOutOfService) else record.site
        message = _("%(count)s booking(s) moved: %(moves)s.") % {
            "count": len(result.booked),
            "moves": ", ".join(
                f"{b.visit_code} {site_time(b.booked_start, site)}" for b in result.booked
            )
            or "—",
        }
        if result.unplaced:
            message += " " + _("Not moved (no slot near the window): %(visits)s.") % {
                "visits": ", ".join(
                    f"{m.visit.participant.study_id} {m.visit.code}" for m in result.unplaced
                )
            }
        return Done(message, record)


class ReplanActions(LifecycleActions):
    """A calendar row with "Re-plan affected bookings", run by the site's coordinators and
    investigators (a write role at its site), not by who edits the calendar."""

    lifecycle = [ReplanBookings()]
    site_path: str

    def writable(self, request: HttpRequest) -> QuerySet[Any]:
        sites = access.sites_for(request.user, roles=access.WRITE_ROLES)
        return self.model._default_manager.select_related(self.site_path).filter(
            **{f"{self.site_path}__in": sites}
        )

    def get_urls(self) -> list[Any]:
        return [*self.lifecycle_urls(), *super().get_urls()]  # type: ignore[misc]

    def lifecycle_view(
        self, request: HttpRequest, object_id: Any, *, action: LifecycleAction[Any]
    ) -> HttpResponse:
        if isinstance(action, ReplanBookings):
            action = action.for_user(request.user)
        return super().lifecycle_view(request, object_id, action=action)

    def summary(self, record: ReplanCause) -> Summary:
        if isinstance(record, ResourceOutOfService):
            site = record.resource.site
            return [
                ("Site", f"{site}; times are site-local, {site.timezone}"),
                ("Resource", str(record.resource)),
                (
                    "Out of service",
                    f"{site_time(record.start, site)} – {site_time(record.end, site)}",
                ),
                ("Reason", record.reason),
            ]
        return [
            ("Site", f"{record.site}; dates are site-local, {record.site.timezone}"),
            ("Closed on", iso(record.date)),
            ("Reason", record.reason),
        ]


@admin.register(SiteClosure)
class SiteClosureAdmin(ReplanActions, SiteCalendarRule, ScopedAdmin):
    list_display = ["site", "date", "reason"]
    list_filter = [scoped_filter("site")]
    date_hierarchy = "date"
    action_select_related = ("site",)
    change_form_template = "admin/lifecycle/change_form.html"


@admin.register(ResourceOutOfService)
class ResourceOutOfServiceAdmin(ReplanActions, SiteCalendarRule, ScopedAdmin):
    """Out-of-service periods, also edited on their resource's page."""

    site_path = "resource__site"
    list_display = ["resource", "start", "end", "reason"]
    list_filter = [scoped_filter("resource__site")]
    action_select_related = ("resource__site",)
    change_form_template = "admin/lifecycle/change_form.html"


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
