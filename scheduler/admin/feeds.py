from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from participants.models import Participant
from scheduler import access
from scheduler.admin.base import SiteClockHistory, site_clock_column
from scheduler.admin.scoping import ScopedAdmin, is_primary_key
from scheduler.calendars.feeds import feed_create, feed_path, feed_regenerate, feed_revoke
from scheduler.models import (
    CalendarFeed,
)
from trials.admin import AuditTrailAdmin
from trials.models import Site


class FeedStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("active", "revoked"):
            return queryset.filter(revoked_at__isnull=self.value() == "active")
        return queryset


class FeedSiteFilter(admin.SimpleListFilter):
    """A site's own feed and its participants' feeds."""

    title = "site"
    parameter_name = "site"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        sites = access.sites_for(request.user).order_by("name")
        return [(str(site.pk), site.name) for site in sites]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        # A site id is ASCII digits ("abc" or "²" would be a ValueError, a 500): anything
        # else is the admin's "bad filter" redirect (?e=1), as for its own filters.
        if not (value.isascii() and value.isdigit()):
            raise IncorrectLookupParameters(f"site: {value!r} is not a site id")
        if not is_primary_key(Site, value):
            # Digits past the key's range: no site has that id (SQLite would overflow on it).
            return queryset.none()
        return queryset.filter(Q(site=value) | Q(participant__site=value))


class FeedChoiceForm(forms.Form):
    """The feed a Revoke or Regenerate button was pressed for: one of the owner's active feeds."""

    feed = forms.ModelChoiceField(queryset=CalendarFeed.objects.none())

    def __init__(self, data: Any, *, feeds: QuerySet[CalendarFeed]) -> None:
        super().__init__(data)
        feed_field = self.fields["feed"]
        assert isinstance(feed_field, forms.ModelChoiceField)
        feed_field.queryset = feeds.filter(revoked_at__isnull=True)


def feed_site(feed: CalendarFeed) -> Site:
    """The site on whose clock a feed's dates are shown: its own, or its participant's."""
    site = feed.site if feed.participant is None else feed.participant.site
    assert site is not None
    return site


def public_feed_url(feed: CalendarFeed, token: str) -> str:
    return settings.PUBLIC_URL.rstrip("/") + feed_path(feed=feed, token=token)


def feeds_url(owner: Participant | Site) -> str:
    kind = "participant" if isinstance(owner, Participant) else "site"
    return reverse(f"admin:scheduler_calendarfeed_{kind}", args=[owner.pk])


@admin.register(CalendarFeed)
class CalendarFeedAdmin(ScopedAdmin, SiteClockHistory, AuditTrailAdmin):
    """Subscribable feeds, read-only. Only a hash of each feed's token is stored, so no page
    can show an existing feed's URL: the owner's "Calendar feed" page creates a feed (or
    replaces one) and shows its URL once; its History shows who created and revoked it."""

    list_display = ["id", "owner", "created", "created_by", "revoked"]
    list_filter = [FeedStateFilter, FeedSiteFilter]
    search_fields = ["participant__study_id", "site__code"]
    list_select_related = ["participant__trial", "participant__site", "site", "created_by"]
    ordering = ["-created_at", "-id"]
    actions = ["revoke"]
    fields = ["participant", "site", "created", "created_by", "revoked"]
    readonly_fields = ["created", "revoked"]
    created = site_clock_column("created_at", "created at", lambda feed: feed_site(feed))
    revoked = site_clock_column("revoked_at", "revoked at", lambda feed: feed_site(feed))

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[CalendarFeed]:
        of_participants = access.participant_feeds_for(request.user, write=write)
        of_sites = access.site_feeds_for(request.user, write=write)
        return CalendarFeed.objects.filter(
            Q(pk__in=of_participants.values("pk")) | Q(pk__in=of_sites.values("pk"))
        )

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.may_write(request)

    def history_site(self, obj: Any) -> Site:
        return feed_site(obj)

    @admin.display(description="feed of")
    def owner(self, feed: CalendarFeed) -> str:
        owner = feed.participant or feed.site
        assert owner is not None
        kind = "participant" if feed.participant is not None else "site"
        return format_html('<a href="{}">{} {}</a>', feeds_url(owner), kind, owner)

    @admin.action(description="Revoke the selected feeds", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[CalendarFeed]) -> None:
        writable = self.writable(request).values("pk")
        active = list(queryset.filter(revoked_at__isnull=True, pk__in=writable))
        for feed in active:
            feed_revoke(feed=feed, by=request.user)
        self.message_user(
            request,
            f"{len(active)} feed(s) revoked: their URLs answer 404 from now on.",
            messages.SUCCESS,
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "participant/<int:participant_id>/",
                self.admin_site.admin_view(self.participant_feeds_view),
                name="scheduler_calendarfeed_participant",
            ),
            path(
                "site/<int:site_id>/",
                self.admin_site.admin_view(self.site_feeds_view),
                name="scheduler_calendarfeed_site",
            ),
            *super().get_urls(),
        ]

    def participant_feeds_view(self, request: HttpRequest, participant_id: int) -> HttpResponse:
        participant = self.visible_object(
            request,
            participant_id,
            access.participants_for(request.user).select_related("trial", "site"),
        )
        may_write = access.participants_for(request.user, write=True).filter(pk=participant_id)
        return self._feeds_view(request, participant, may_write=may_write.exists())

    def site_feeds_view(self, request: HttpRequest, site_id: int) -> HttpResponse:
        site = self.visible_object(request, site_id, access.sites_for(request.user))
        may_write = access.sites_for(request.user, roles=access.WRITE_ROLES).filter(pk=site_id)
        return self._feeds_view(request, site, may_write=may_write.exists())

    def _feeds_view(
        self, request: HttpRequest, owner: Participant | Site, *, may_write: bool
    ) -> HttpResponse:
        """The owner's feeds, with buttons to create, revoke and regenerate (POST only).

        After a create or a regenerate the page itself is the answer, not a redirect: the new
        URL is in no message, session, log or database row, so it can be shown only now.
        """
        participant = owner if isinstance(owner, Participant) else None
        site = owner if isinstance(owner, Site) else None
        feeds = (
            CalendarFeed.objects.filter(participant=participant)
            if participant is not None
            else access.site_feeds_for(request.user).filter(site=site)
        )
        # Revoked or regenerated: a site feed only by whoever changes calendars of every
        # trial it shows (reading one of them is not enough).
        changeable = (
            feeds
            if participant is not None
            else access.site_feeds_for(request.user, write=True).filter(site=site)
        )
        # Creating, revoking and regenerating: a write role where the owner is.
        may_create = may_revoke = may_write
        new_feed_url = None
        if request.method == "POST":
            if "_create" in request.POST:
                if not may_create:
                    raise PermissionDenied
                trials = list(access.feed_trials_at(request.user, site) if site else ())
                if site is not None and not trials:
                    raise PermissionDenied  # a write role here, but for no trial of this site
                feed, token = feed_create(
                    participant=participant, site=site, trials=trials, by=request.user
                )
                new_feed_url = public_feed_url(feed, token)
            elif "_revoke" in request.POST or "_regenerate" in request.POST:
                if not may_revoke or ("_regenerate" in request.POST and not may_create):
                    raise PermissionDenied
                chosen = FeedChoiceForm(request.POST, feeds=changeable)
                if not chosen.is_valid():
                    self.message_user(
                        request,
                        "That feed is already revoked or is not one of these.",
                        messages.ERROR,
                    )
                    return HttpResponseRedirect(request.path)
                feed = chosen.cleaned_data["feed"]
                if "_revoke" in request.POST:
                    feed_revoke(feed=feed, by=request.user)
                    self.message_user(
                        request,
                        f"Feed {feed.pk} revoked: its URL answers 404 from now on.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(request.path)
                feed, token = feed_regenerate(feed=feed, by=request.user)
                new_feed_url = public_feed_url(feed, token)
        owner_opts = type(owner)._meta
        return TemplateResponse(
            request,
            "admin/feeds/owner_feeds.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "owner_opts": owner_opts,
                "title": f"Calendar feed of {owner}",
                "owner": owner,
                "owner_url": reverse(
                    f"admin:{owner_opts.app_label}_{owner_opts.model_name}_change", args=[owner.pk]
                ),
                "feeds": feeds.select_related("created_by").order_by("-created_at", "-id"),
                "zone": (participant.site if participant is not None else owner).timezone,
                "new_feed_url": new_feed_url,
                "may_create": may_create,
                "may_revoke": may_revoke,
            },
        )
