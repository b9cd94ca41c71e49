"""Sign-ins, failures, sign-outs, permission and membership changes in the security audit:
who, what, when (UTC), from which address; a username and never a password
(scheduler/audittrail.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from scheduler.models import Membership, SecurityEvent
from tests.audit.conftest import NOW, PASSWORD, World, staff
from tests.conftest import otp_login

pytestmark = pytest.mark.django_db
FIELDS = ("at", "kind", "username", "ip_address", "participant_id", "surface", "detail")
LOGIN = reverse("admin:login")


class Since:
    """The security events written after this point, oldest first."""

    def __init__(self) -> None:
        self.last = max(SecurityEvent.objects.values_list("id", flat=True), default=0)

    def events(self) -> list[dict[str, Any]]:
        rows = SecurityEvent.objects.filter(id__gt=self.last).order_by("id")
        return list(rows.values(*FIELDS))


def event(kind: str, username: str, ip: str | None = "127.0.0.1", **detail: Any) -> dict[str, Any]:
    return {
        "at": NOW,
        "kind": kind,
        "username": username,
        "ip_address": ip,
        "participant_id": None,
        "surface": "",
        "detail": detail,
    }


def test_a_sign_in_a_failure_and_a_sign_out_are_recorded_without_the_password(
    world: World,
) -> None:
    since = Since()
    client = Client(REMOTE_ADDR="203.0.113.7")

    wrong = client.post(LOGIN, {"username": "coordinator", "password": "not-the-passphrase"})
    right = client.post(LOGIN, {"username": "coordinator", "password": PASSWORD})
    out = client.post(reverse("admin:logout"))

    assert (wrong.status_code, right.status_code, out.status_code) == (200, 302, 200)
    assert since.events() == [
        event("login_failed", "coordinator", "203.0.113.7", path="/admin/login/"),
        event("login", "coordinator", "203.0.113.7"),
        event("logout", "coordinator", "203.0.113.7"),
    ]
    stored = [str(row) for row in SecurityEvent.objects.values_list()]
    assert [row for row in stored if "not-the-passphrase" in row] == []


def test_a_failure_for_an_unknown_username_keeps_the_username_only(world: World) -> None:
    since = Since()

    Client().post(LOGIN, {"username": "nobody-here", "password": "a-secret-guess"})

    assert since.events() == [event("login_failed", "nobody-here", path="/admin/login/")]


def test_group_and_permission_changes_name_the_account_and_what_changed(world: World) -> None:
    user = world.coordinator
    since = Since()
    auditors = Group.objects.get(name="auditor")
    view_site = Permission.objects.get(codename="view_site", content_type__app_label="trials")

    user.groups.add(auditors)
    user.user_permissions.add(view_site)
    user.groups.remove(auditors)
    user.user_permissions.clear()
    auditors.user_set.add(user)
    auditors.permissions.add(view_site)

    # Outside a request (a shell, a command): nobody signed in, no address.
    assert since.events() == [
        event(
            "permission_change",
            "",
            None,
            user="coordinator",
            change="groups added",
            values=["auditor"],
        ),
        event(
            "permission_change",
            "",
            None,
            user="coordinator",
            change="user_permissions added",
            values=["trials.view_site"],
        ),
        event(
            "permission_change",
            "",
            None,
            user="coordinator",
            change="groups removed",
            values=["auditor"],
        ),
        event(
            "permission_change",
            "",
            None,
            user="coordinator",
            change="user_permissions cleared",
            values=["trials.view_site"],
        ),
        event(
            "permission_change",
            "",
            None,
            group="auditor",
            change="user_set added",
            values=["coordinator"],
        ),
        event(
            "permission_change",
            "",
            None,
            group="auditor",
            change="permissions added",
            values=["trials.view_site"],
        ),
    ]


def test_staff_and_superuser_flags_are_permission_changes(world: World) -> None:
    since = Since()
    user = world.coordinator

    user.is_superuser = True
    user.save()
    user.last_name = "Renamed"
    user.save()
    user.is_staff = False
    user.is_superuser = False
    user.save(update_fields=["is_staff", "is_superuser"])
    staff("newcomer")

    assert since.events() == [
        event(
            "permission_change",
            "",
            None,
            user="coordinator",
            change="account flags",
            values=["is_superuser=True"],
        ),
        event(
            "permission_change",
            "",
            None,
            user="coordinator",
            change="account flags",
            values=["is_staff=False", "is_superuser=False"],
        ),
        event(
            "permission_change",
            "",
            None,
            user="newcomer",
            change="account created",
            values=["is_staff=True"],
        ),
    ]


def test_a_sign_in_saves_no_flag_change(world: World) -> None:
    since = Since()

    Client().post(LOGIN, {"username": "coordinator", "password": PASSWORD})

    assert [row["kind"] for row in since.events()] == ["login"]


def test_a_membership_granted_in_the_admin_names_the_user_manager(
    world: World, django_user_model: Any
) -> None:
    manager = django_user_model.objects.create_superuser("manager", password=PASSWORD)
    client = otp_login(Client(), manager)
    since = Since()

    response = client.post(
        reverse("admin:scheduler_membership_add"),
        {
            "user": world.auditor.pk,
            "trial": world.participant.trial_id,
            "site": world.tokyo.pk,
            "role": "coordinator",
        },
    )
    granted = Membership.objects.get(user=world.auditor)
    granted.delete()

    assert response.status_code == 302
    membership = {"user": "auditor", "trial": world.participant.trial.code, "site": "tokyo"}
    assert since.events() == [
        event("membership_change", "manager", change="granted", role="coordinator", **membership),
        event("membership_change", "", None, change="revoked", role="coordinator", **membership),
    ]
