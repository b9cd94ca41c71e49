"""Every admin URL, as a coordinator of one site asking for another site's ids: 0 responses
with the other site's data, and every other-site object a 404.

The URL list is generated from the admin site's registry and each admin's URL patterns, and
the autocomplete sources from every relation of every model, so a new admin (or a new custom
view, filter or relation) is crawled without touching this file.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape, unescape
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import models
from django.urls import URLPattern, reverse
from django.urls.resolvers import RegexPattern, RoutePattern
from oauth2_provider.models import AccessToken, get_application_model

from participants.models import Participant
from scheduler.api.credentials import site_system_credentials_create
from scheduler.calendars.feeds import feed_create
from scheduler.models import CalendarFeed, CoordinatorNotification, Membership, Reminder
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for, site_feed_create
from trials.models import Arm, Site

Role = Membership.Role
NOW = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)
# What would give the other site away: its code and name, its participant's study id, email
# and phone. Distinctive on purpose ("tokyo" is in every zone list as Asia/Tokyo).
OTHER = {
    "code": "osaka-xq",
    "name": "Osaka Quokka Hospital",
    "study_id": "OSAKA-XQ-001",
    "email": "osaka-xq-001@example.org",
    "phone": "+81-6-0000-7777",
}
OWN = {
    "code": "berlin-xq",
    "name": "Berlin Quokka Clinic",
    "study_id": "BERLIN-XQ-001",
    "email": "berlin-xq-001@example.org",
    "phone": "+49-30-0000-7777",
}


@dataclass
class World:
    own_site: Site
    other_site: Site
    own: Participant
    other: Participant
    coordinator: Any
    everywhere: Any


@pytest.fixture
def world(import_seed, django_capture_on_commit_callbacks, django_user_model, time_machine):
    """The blinded NIAMS trial at two sites, one enrolled participant at each with reminders,
    a feed, a notice and an audit trail; a coordinator of the first site; and a reference
    user who works at both (whose list pages give the filter links to crawl)."""
    time_machine.move_to(NOW, tick=False)
    version = import_seed("000")
    people = {}
    for marks, zone in ((OWN, "Europe/Berlin"), (OTHER, "Asia/Tokyo")):
        site = SiteFactory.create(code=marks["code"], name=marks["name"], timezone=zone)
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 3, 2)},
            site=site,
            study_id=marks["study_id"],
            email=marks["email"],
            phone=marks["phone"],
            reminder_channels=["email", "sms"],
        )
        with django_capture_on_commit_callbacks(execute=True):
            participant_enroll(
                participant=participant,
                on=dt.date(2026, 2, 16),
                arm=Arm.objects.get(version=version, code="ANI"),
            )
        feed_create(participant=participant)
        site_feed_create(site=site)
        reminder = Reminder.objects.filter(participant=participant).order_by("id").first()
        assert reminder is not None
        CoordinatorNotification.objects.create(
            site=site, reminder=reminder, text=f"{marks['study_id']} could not be reached"
        )
        people[marks["code"]] = (site, participant)
        # The site's system: a machine user bound to it, its OAuth application and a token
        # (the user, group and credential admins are crawled too).
        application, _secret = site_system_credentials_create(
            name=f"{marks['code']}-system", trial=version.trial, sites=[site]
        )
        AccessToken.objects.create(
            user=application.user,
            application=application,
            token=secrets.token_urlsafe(32),
            expires=NOW + dt.timedelta(hours=1),
            scope="read",
        )
    (own_site, own), (other_site, other) = people[OWN["code"]], people[OTHER["code"]]
    coordinator = django_user_model.objects.create_user("anna", password="pw", is_staff=True)
    member(coordinator, trial=version.trial, site=own_site, role=Role.COORDINATOR)
    # Django's view permission on every model but the trials' (trials, sites and protocols
    # are governed by them, on purpose) changes nothing: what a coordinator sees comes from
    # memberships, and users, groups and credentials need `auth.change_user`.
    coordinator.user_permissions.add(
        *Permission.objects.filter(codename__startswith="view_").exclude(
            content_type__app_label="trials"
        )
    )
    everywhere = django_user_model.objects.create_user("ref", password="pw", is_staff=True)
    for site in (own_site, other_site):
        member(everywhere, trial=version.trial, site=site, role=Role.COORDINATOR)
        member(everywhere, trial=version.trial, site=site, role=Role.UNBLINDED_PHARMACIST)
    return World(own_site, other_site, own, other, coordinator, everywhere)


# ----------------------------------------------------------------------------------------
# Whose is a row


def site_of(row: models.Model) -> int | None:
    """The site a row belongs to, or None for rows of no site (trials, protocols, users
    without a membership): a user's is the one site of its memberships, an OAuth
    application's its machine user's, a token's or a grant's its application's."""
    if isinstance(row, Site):
        return row.pk
    if isinstance(row, get_user_model()):
        sites = set(row.memberships.values_list("site_id", flat=True))
        return sites.pop() if len(sites) == 1 else None
    if isinstance(row, get_application_model()):
        return site_of(row.user) if row.user is not None else None
    application = getattr(row, "application", None)
    if isinstance(application, get_application_model()):
        return site_of(application)
    participant_id = getattr(row, "participant_id", None)
    if participant_id is not None:
        return Participant.objects.get(pk=participant_id).site_id
    return getattr(row, "site_id", None)


def rows_by_owner(model: type[models.Model], world: World) -> dict[str, list[models.Model]]:
    rows: dict[str, list[models.Model]] = {"own": [], "other": []}
    for row in model._default_manager.all():
        owner = site_of(row)
        if owner == world.own_site.pk:
            rows["own"].append(row)
        elif owner == world.other_site.pk:
            rows["other"].append(row)
    return rows


# ----------------------------------------------------------------------------------------
# The URLs


def argument_names(pattern: URLPattern) -> list[str]:
    if isinstance(pattern.pattern, RoutePattern):
        return list(pattern.pattern.converters)
    assert isinstance(pattern.pattern, RegexPattern)
    return [f"group{n}" for n in range(pattern.pattern.regex.groups)]


def object_urls(
    model_admin: admin.ModelAdmin, pattern: URLPattern, rows: list[models.Model]
) -> Iterator[str]:
    """The pattern's URL for each row it can take: an object of the admin's model, or (for
    "participant/<id>/" and "site/<id>/" pages) a participant or a site."""
    names = argument_names(pattern)
    for row in rows:
        owner_page = (names == ["participant_id"] and isinstance(row, Participant)) or (
            names == ["site_id"] and isinstance(row, Site)
        )
        if owner_page:
            yield reverse(f"admin:{pattern.name}", args=[row.pk])
        elif type(row) is not model_admin.model:
            continue
        elif len(names) == 1 and names[0] not in ("participant_id", "site_id"):
            yield reverse(f"admin:{pattern.name}", args=[row.pk])
        elif len(names) == 2 and hasattr(row, "history"):
            # simple-history's page of one past version: <object id>/history/<version id>/.
            for entry in row.history.all():  # type: ignore[attr-defined]
                yield reverse(f"admin:{pattern.name}", args=[row.pk, entry.pk])


def admin_patterns() -> Iterator[tuple[admin.ModelAdmin, URLPattern]]:
    for model_admin in admin.site._registry.values():
        for pattern in model_admin.get_urls():
            if isinstance(pattern, URLPattern) and pattern.name:
                yield model_admin, pattern


def query_links(html: str) -> list[str]:
    """The query strings a changelist page links to: each list filter value, the date
    hierarchy, sorting and pages."""
    return sorted({unescape(link) for link in re.findall(r'href="(\?[^"]*)"', html)})


def autocomplete_urls(terms: list[str]) -> Iterator[str]:
    """Django's autocomplete answers for any relation whose target has an admin with search
    fields, whether or not a form uses it: every relation of every model is a source."""
    for model in apps.get_models(include_auto_created=False):
        for field in model._meta.get_fields():
            if not (field.is_relation and field.concrete and field.related_model):
                continue
            for term in terms:
                query = {
                    "app_label": model._meta.app_label,
                    "model_name": model._meta.model_name,
                    "field_name": field.name,
                    "term": term,
                }
                yield reverse("admin:autocomplete") + "?" + urlencode(query)


# ----------------------------------------------------------------------------------------
# The crawl


@dataclass
class Crawl:
    client: Any
    requests: int = 0

    def __post_init__(self) -> None:
        self.leaks: list[str] = []

    def get(self, url: str) -> Any:
        return self._check("GET", url, self.client.get(url))

    def post(self, url: str, data: dict[str, Any]) -> Any:
        return self._check("POST", url, self.client.post(url, data))

    def _check(self, method: str, url: str, response: Any) -> Any:
        self.requests += 1
        # An export streams its rows (CSV): read them all, they are pages like any other.
        content = b"".join(response.streaming_content) if response.streaming else response.content
        body = content.decode(errors="replace")
        # A search box and the filter links echo what was asked for (?q=OSAKA…): that is the
        # user's own words, not the other site's data, so they are taken out first.
        for value in parse_qs(urlsplit(url).query).get("q", []):
            for echo in (quote_plus(value), escape(value), value):
                body = body.replace(echo, "")
        found = [value for value in OTHER.values() if value.lower() in body.lower()]
        if found:
            self.leaks.append(f"{method} {url} -> {response.status_code} shows {found}")
        return response


def other_site_state(world: World) -> tuple[Any, ...]:
    """What a write at the other site would change: its feeds, reminders, notices, calendar
    and its participant's audit trail."""
    return (
        sorted(
            CalendarFeed.objects.filter(participant=world.other).values_list("pk", "revoked_at")
        ),
        sorted(CalendarFeed.objects.filter(site=world.other_site).values_list("pk", "revoked_at")),
        sorted(Reminder.objects.filter(participant=world.other).values_list("pk", "status")),
        sorted(
            CoordinatorNotification.objects.filter(site=world.other_site).values_list(
                "pk", "read_at"
            )
        ),
        sorted(world.other.visits.values_list("pk", "status", "version")),
        world.other.history.count(),
    )


@pytest.mark.django_db
def test_admin_crawl_shows_a_coordinator_nothing_of_another_site(world, client) -> None:
    reference = type(client)()
    sign_in(reference, world.everywhere)
    sign_in(client, world.coordinator)
    crawl = Crawl(client)
    wrong_status: list[str] = []
    before = other_site_state(world)

    # Rows of every admin's model, and participants and sites (the feed pages take them).
    models_crawled: list[type[models.Model]] = [*admin.site._registry, Site]
    rows = {model: rows_by_owner(model, world) for model in models_crawled}
    extra = {"own": [world.own, world.own_site], "other": [world.other, world.other_site]}

    for model_admin, pattern in admin_patterns():
        assert pattern.name is not None
        if not argument_names(pattern):
            url = reverse(f"admin:{pattern.name}")
            crawl.get(url)
            if pattern.name.endswith("_changelist"):
                # Each filter value (as linked for a user who works at both sites, so the
                # values include the other site's), a search for each site's data, and each
                # action on the other site's rows.
                reference_page = reference.get(url)
                for link in query_links(reference_page.content.decode()):
                    crawl.get(url + link)
                for term in (OTHER["study_id"], OTHER["code"], OWN["study_id"], "XQ"):
                    crawl.get(url + "?" + urlencode({"q": term}))
                other_ids = [row.pk for row in rows[model_admin.model]["other"]]
                for action in model_admin.get_actions(reference_page.wsgi_request):
                    crawl.post(url, {"action": action, "_selected_action": other_ids})
            continue
        own = rows[model_admin.model]["own"] + extra["own"]
        other = rows[model_admin.model]["other"] + extra["other"]
        own_urls = list(object_urls(model_admin, pattern, own))
        own_status = {
            "GET": {crawl.get(url).status_code for url in own_urls},
            "POST": {crawl.post(url, {}).status_code for url in own_urls},
        }
        for url in object_urls(model_admin, pattern, other):
            # Another site's object is a 404. Only where the user's own objects get the same
            # refusal (a door closed to them: 403, or 405 for a read-only page) may the other
            # site's get it too: an answer that is the same for every id says nothing.
            for method, response in (
                ("GET", crawl.get(url)),
                ("POST", crawl.post(url, {"_create": "1", "_confirm": "1", "reason": "x"})),
            ):
                status = response.status_code
                closed_door = own_status[method] == {status} and status in (403, 405)
                if status != 404 and not closed_door:
                    wrong_status.append(f"{method} {url} -> {status}")

    for url in autocomplete_urls(["", OTHER["study_id"], OTHER["code"], "XQ"]):
        crawl.get(url)

    print(f"admin crawl: {crawl.requests} requests as a coordinator of {OWN['code']}")
    assert "\n".join(crawl.leaks) == ""
    assert wrong_status == []
    assert other_site_state(world) == before
    # Not vacuous: the coordinator does see their own site through the same pages.
    own_page = client.get(reverse("admin:participants_participant_change", args=[world.own.pk]))
    assert (own_page.status_code, OWN["email"] in own_page.content.decode()) == (200, True)
