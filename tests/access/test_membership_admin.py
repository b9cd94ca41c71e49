"""Memberships are managed in the admin by whoever may manage users, and audited."""

from __future__ import annotations

import pytest

from scheduler.models import Membership
from tests.conftest import sign_in
from tests.factories import SiteFactory


@pytest.fixture
def niams_at_berlin(import_seed):
    version = import_seed("000")
    return version.trial, SiteFactory.create(code="berlin", timezone="Europe/Berlin")


@pytest.mark.django_db
def test_membership_admin_grants_a_role_and_audits_who_did_it(
    niams_at_berlin, admin_client, admin_user, django_user_model
) -> None:
    trial, berlin = niams_at_berlin
    anna = django_user_model.objects.create_user("anna")

    response = admin_client.post(
        "/admin/scheduler/membership/add/",
        {"user": anna.pk, "trial": trial.pk, "site": berlin.pk, "role": "coordinator"},
    )

    assert response.status_code == 302
    membership = Membership.objects.get()
    assert (membership.user, membership.trial, membership.site, membership.role) == (
        anna,
        trial,
        berlin,
        "coordinator",
    )
    assert [(h.history_type, h.history_user) for h in membership.history.all()] == [
        ("+", admin_user)
    ]


@pytest.mark.django_db
def test_membership_admin_refuses_a_site_for_a_trial_wide_role(
    niams_at_berlin, admin_client, django_user_model
) -> None:
    trial, berlin = niams_at_berlin
    mo = django_user_model.objects.create_user("mo")

    response = admin_client.post(
        "/admin/scheduler/membership/add/",
        {"user": mo.pk, "trial": trial.pk, "site": berlin.pk, "role": "sponsor_monitor"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "A sponsor monitor or a data manager acts at every site of the trial: leave the site "
        "empty. Every other role needs its site."
    ]
    assert Membership.objects.count() == 0


@pytest.mark.django_db
def test_membership_admin_is_closed_to_staff_who_do_not_manage_users(
    niams_at_berlin, client, django_user_model
) -> None:
    staff = django_user_model.objects.create_user("kim", is_staff=True)
    sign_in(client, staff)

    assert client.get("/admin/scheduler/membership/").status_code == 403
    assert client.get("/admin/scheduler/membership/add/").status_code == 403
