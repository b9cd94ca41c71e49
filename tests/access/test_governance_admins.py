"""The admins that were governed by Django's model permissions alone: trial sites and the
schedule of activities (members read their own), users, groups and OAuth credentials (user
managers only), and deny by default for any admin that declares no rule."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import RequestFactory
from django.urls import reverse
from oauth2_provider.models import AccessToken, Application

from participants.models import Participant
from scheduler.admin.scoping import (
    DeniedAdmin,
    declares_rule,
    deny_undeclared,
    undeclared_admin_messages,
)
from scheduler.api.credentials import site_system_credentials_create
from scheduler.models import Membership, Reminder
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for
from trials.models import ScheduledActivity, TrialSite

Role = Membership.Role
NOW = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def niams(import_seed) -> dict[str, Any]:
    """NIAMS at Berlin and Tokyo with one participant each, a site system bound to Tokyo
    with a token, and another trial (Tsukuba's) at Tokyo only."""
    version = import_seed("000")
    people: dict[str, Any] = {"trial": version.trial}
    for code, zone in (("berlin", "Europe/Berlin"), ("tokyo", "Asia/Tokyo")):
        site = SiteFactory.create(code=code, name=f"{code.title()} Site", timezone=zone)
        participant = participant_for(
            version, anchors={"day1": dt.date(2026, 3, 2)}, site=site, study_id=f"{code}-001"
        )
        participant_enroll(participant=participant, on=dt.date(2026, 2, 16))
        people[code] = participant
    application, _secret = site_system_credentials_create(
        name="tokyo-lab", trial=version.trial, sites=[people["tokyo"].site]
    )
    AccessToken.objects.create(
        user=application.user,
        application=application,
        token="not-a-real-token-0000000000000000",
        expires=NOW + dt.timedelta(hours=1),
        scope="read",
    )
    people["application"] = application
    tsukuba = import_seed("001")
    TrialSite.objects.create(trial=tsukuba.trial, site=people["tokyo"].site)
    people["other_trial"] = tsukuba.trial
    return people


def staff(django_user_model: Any, name: str, *permissions: str, **flags: Any) -> Any:
    user = django_user_model.objects.create_user(name, is_staff=True, **flags)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def listed(response: Any) -> list[str]:
    return sorted(str(row) for row in response.context["cl"].result_list)


def index_models(client: Any) -> set[str]:
    index = client.get(reverse("admin:index"))
    return {m["object_name"] for app in index.context["app_list"] for m in app["models"]}


# ----------------------------------------------------------------------------------------
# Trial sites and the schedule of activities


def test_a_coordinator_sees_its_own_trial_site_only_and_changes_nothing(
    client, django_user_model, niams
) -> None:
    coordinator = staff(django_user_model, "anna")
    member(coordinator, trial=niams["trial"], site=niams["berlin"].site, role=Role.COORDINATOR)
    sign_in(client, coordinator)
    berlin = TrialSite.objects.get(trial=niams["trial"], site=niams["berlin"].site)
    tokyo = TrialSite.objects.get(trial=niams["trial"], site=niams["tokyo"].site)

    rows = listed(client.get(reverse("admin:trials_trialsite_changelist")))
    own = client.get(reverse("admin:trials_trialsite_change", args=[berlin.pk]))
    other = [
        client.get(reverse(name, args=[tokyo.pk])).status_code
        for name in ("admin:trials_trialsite_change", "admin:trials_trialsite_history")
    ]
    edit = client.post(reverse("admin:trials_trialsite_change", args=[berlin.pk]), {})

    assert rows == [str(berlin)]
    assert (own.status_code, own.context["has_change_permission"]) == (200, False)
    assert other == [404, 404]
    assert edit.status_code == 403


def test_a_monitor_sees_every_site_of_its_trial_and_no_other_trial(
    client, django_user_model, niams
) -> None:
    monitor = staff(django_user_model, "mo")
    member(monitor, trial=niams["trial"], role=Role.SPONSOR_MONITOR)
    sign_in(client, monitor)

    rows = listed(client.get(reverse("admin:trials_trialsite_changelist")))

    assert rows == sorted(str(ts) for ts in TrialSite.objects.filter(trial=niams["trial"]))
    assert len(rows) == 2


def test_the_schedule_of_activities_is_read_by_its_trials_members_only(
    client, django_user_model, niams
) -> None:
    manager = staff(django_user_model, "dm")
    member(manager, trial=niams["trial"], role=Role.DATA_MANAGER)
    nobody = staff(django_user_model, "nobody")
    url = reverse("admin:trials_scheduledactivity_changelist")
    theirs = ScheduledActivity.objects.filter(visit__version__trial=niams["trial"])
    other_trials = ScheduledActivity.objects.exclude(visit__version__trial=niams["trial"])

    sign_in(client, manager)
    read = client.get(url, {"all": ""})
    other_page = client.get(
        reverse("admin:trials_scheduledactivity_change", args=[other_trials.earliest("pk").pk])
    )
    sign_in(client, nobody)
    refused = client.get(url)

    assert sorted(row.pk for row in read.context["cl"].result_list) == sorted(
        theirs.values_list("pk", flat=True)
    )
    assert (theirs.count() > 0, other_trials.count() > 0) == (True, True)
    assert (other_page.status_code, refused.status_code) == (404, 403)


def test_holders_of_the_django_permission_govern_every_trial_site(
    client, django_user_model, niams
) -> None:
    governor = staff(django_user_model, "gov", "trials.view_trialsite")
    sign_in(client, governor)

    rows = listed(client.get(reverse("admin:trials_trialsite_changelist")))
    participants = client.get(reverse("admin:participants_participant_changelist"))

    assert rows == sorted(str(ts) for ts in TrialSite.objects.all())
    # Governance, not clinical data: no participant.
    assert participants.status_code == 403


# ----------------------------------------------------------------------------------------
# Users, groups and OAuth credentials: user managers only

GOVERNANCE = [
    ("auth", "user"),
    ("auth", "group"),
    ("oauth2_provider", "application"),
    ("oauth2_provider", "accesstoken"),
    ("oauth2_provider", "refreshtoken"),
    ("oauth2_provider", "idtoken"),
    ("oauth2_provider", "grant"),
    ("scheduler", "membership"),
]


def test_users_groups_and_credentials_are_closed_to_a_coordinator_with_every_view_permission(
    client, django_user_model, niams
) -> None:
    """Django's view permissions on these models give nothing: only managing users does."""
    coordinator = staff(
        django_user_model,
        "anna",
        *(f"{app}.view_{model}" for app, model in GOVERNANCE),
    )
    member(coordinator, trial=niams["trial"], site=niams["berlin"].site, role=Role.COORDINATOR)
    Group.objects.create(name="tokyo-coordinators")
    sign_in(client, coordinator)
    machine = niams["application"].user

    statuses = {
        f"{app}.{model}": client.get(reverse(f"admin:{app}_{model}_changelist")).status_code
        for app, model in GOVERNANCE
    }
    pages = [
        client.get(reverse("admin:auth_user_change", args=[machine.pk])).status_code,
        client.get(
            reverse("admin:oauth2_provider_application_change", args=[niams["application"].pk])
        ).status_code,
        client.get(
            reverse("admin:autocomplete"),
            {
                "app_label": "scheduler",
                "model_name": "membership",
                "field_name": "user",
                "term": "system",
            },
        ).status_code,
    ]

    assert statuses == {f"{app}.{model}": 403 for app, model in GOVERNANCE}
    assert pages == [403, 403, 403]
    assert not index_models(client) & {"User", "Group", "Application", "AccessToken"}


def test_a_user_manager_sees_users_and_each_applications_sites(
    client, django_user_model, niams
) -> None:
    manager = staff(django_user_model, "um", "auth.change_user")
    sign_in(client, manager)

    users = client.get(reverse("admin:auth_user_changelist"))
    applications = client.get(reverse("admin:oauth2_provider_application_changelist"))
    page = client.get(
        reverse("admin:oauth2_provider_application_change", args=[niams["application"].pk])
    )
    tokens = client.get(reverse("admin:oauth2_provider_accesstoken_changelist"))

    assert listed(users) == ["system:tokyo-lab", "um"]
    [application] = applications.context["cl"].result_list
    bound = applications.context["cl"].model_admin.bound_to(application)
    assert bound == f"{niams['trial'].code} @ tokyo"
    assert f"{niams['trial'].code} @ tokyo" in page.content.decode()
    # Credentials are issued by `manage.py api_client_create`, with their sites; not here.
    assert (page.context["has_change_permission"], applications.context["has_add_permission"]) == (
        False,
        False,
    )
    assert tokens.context["cl"].result_count == 1


def test_a_superuser_without_membership_manages_users_and_sees_no_clinical_data(
    client, django_user_model, niams
) -> None:
    root = staff(django_user_model, "root", is_superuser=True)
    sign_in(client, root)

    models = index_models(client)

    assert {"User", "Group", "Application", "Membership", "TrialSite"} <= models
    assert not models & {"Participant", "ScheduledVisit", "Reminder", "TreatmentAssignment"}


# ----------------------------------------------------------------------------------------
# Deny by default


def test_every_registered_admin_declares_its_rule() -> None:
    undeclared = sorted(
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not declares_rule(model_admin)
    )

    assert undeclared == []
    assert undeclared_admin_messages(admin.site) == []


def test_a_newly_registered_admin_without_a_rule_shows_nothing_even_to_a_superuser(
    django_user_model, niams
) -> None:
    site = admin.AdminSite(name="deny-by-default")
    for model in (Participant, Reminder, Application):
        site.register(model, admin.ModelAdmin)
    root = django_user_model.objects.create_user("root", is_staff=True, is_superuser=True)
    request = RequestFactory().get("/")
    request.user = root

    before = sorted(str(message.id) for message in undeclared_admin_messages(site))
    denied = deny_undeclared(site)
    after = sorted(str(message.id) for message in undeclared_admin_messages(site))
    shown = {
        model._meta.label: (
            model_admin.has_module_permission(request),
            model_admin.has_view_permission(request),
            model_admin.has_change_permission(request),
            model_admin.get_queryset(request).count(),
        )
        for model, model_admin in site._registry.items()
    }

    assert before == ["scheduler.E100"] * 3
    assert sorted(denied) == [
        "oauth2_provider.Application",
        "participants.Participant",
        "scheduler.Reminder",
    ]
    assert after == ["scheduler.W100"] * 3
    assert all(isinstance(model_admin, DeniedAdmin) for model_admin in site._registry.values())
    assert shown == dict.fromkeys(denied, (False, False, False, 0))
    # Not vacuous: the rows are there, and Django's own admin would have shown them all.
    assert (Participant.objects.count(), Reminder.objects.count() > 0) == (2, True)
    assert admin.ModelAdmin(Participant, site).get_queryset(request).count() == 2


def test_a_user_named_in_the_audit_trail_is_deactivated_not_deleted(
    client, django_user_model, niams
) -> None:
    manager = staff(django_user_model, "um", "auth.change_user", "auth.delete_user")
    author = staff(django_user_model, "author")
    participant = niams["berlin"]
    participant.weight_kg = 71
    participant._history_user = author
    participant.save()
    unnamed = staff(django_user_model, "typo")
    sign_in(client, manager)
    delete = reverse("admin:auth_user_delete", args=[author.pk])

    page = client.get(delete)
    refused = client.post(delete, {"post": "yes"})
    action = client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", "_selected_action": [author.pk, unnamed.pk], "post": "yes"},
    )

    reason = (
        "author is named in 1 audit entry of historical participants: the audit trail keeps "
        "who made each change, so deactivate the account instead (untick “Active”)"
    )
    assert page.status_code == refused.status_code == action.status_code == 200
    assert page.context["protected"] == [reason]
    assert action.context["protected"] == [reason]
    assert set(django_user_model.objects.values_list("username", flat=True)) >= {"author", "typo"}
    assert participant.history.filter(history_user=author).count() == 1

    # A user the trail does not name (an account made by mistake) is deleted as before.
    gone = client.post(reverse("admin:auth_user_delete", args=[unnamed.pk]), {"post": "yes"})
    assert gone.status_code == 302
    assert not django_user_model.objects.filter(username="typo").exists()
