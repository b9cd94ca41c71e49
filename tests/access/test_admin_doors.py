"""The admin's doors, one test each (healthchecks' style): who sees which rows, which arm,
which contact details, who may write, and what another site's object looks like (a missing
one). The crawl over every admin URL is tests/access/test_admin_crawl.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import time_machine
from django.urls import reverse

from participants.models import TreatmentAssignment
from scheduler.models import Membership, ScheduledVisit
from scheduler.services import participant_enroll
from tests.access.test_blinding import refusal as blinding_refusal
from tests.conftest import sign_in
from tests.factories import SiteFactory, governs_trials, member, participant_for
from trials.models import Arm, Trial

Role = Membership.Role
NOW = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def niams(import_seed):
    """The blinded NIAMS trial at Berlin and Tokyo, one enrolled participant at each."""
    version = import_seed("000")
    people = {}
    for code, zone in (("berlin", "Europe/Berlin"), ("tokyo", "Asia/Tokyo")):
        site = SiteFactory.create(code=code, name=f"{code.title()} Site", timezone=zone)
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 3, 2)},
            site=site,
            study_id=f"{code.upper()}-001",
            email=f"{code}-001@example.org",
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 2, 16),
            arm=Arm.objects.get(version=version, code="ANI"),
        )
        people[code] = participant
    return people


def login(client, django_user_model, role: str, participant=None, *, trial=None, **flags):
    """A staff user holding `role` at the participant's site (trial-wide: in the trial)."""
    user = django_user_model.objects.create_user(role, password="pw", is_staff=True, **flags)
    if participant is not None:
        site = None if role in Membership.TRIAL_WIDE else participant.site
        member(user, trial=participant.trial, site=site, role=role)
    sign_in(client, user)
    return user


def change_url(obj) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def listed(response) -> list[str]:
    return [str(row) for row in response.context["cl"].result_list]


def test_it_hides_other_sites(client, django_user_model, niams) -> None:
    login(client, django_user_model, Role.COORDINATOR, niams["berlin"])
    tokyo_visit = ScheduledVisit.objects.filter(participant=niams["tokyo"]).earliest("id")

    other = client.get(change_url(niams["tokyo"]))
    missing = client.get(reverse("admin:participants_participant_change", args=[999999]))
    visit_page = client.get(change_url(tokyo_visit))
    book = client.post(
        reverse("admin:scheduler_scheduledvisit_book", args=[tokyo_visit.pk]), {"_confirm": "1"}
    )
    own = client.get(reverse("admin:participants_participant_changelist"))

    # Exactly what a participant that does not exist gets: nobody learns that it exists.
    assert (other.status_code, other.content) == (404, missing.content)
    assert (visit_page.status_code, book.status_code) == (404, 404)
    assert listed(own) == [str(niams["berlin"])]


def test_it_offers_only_own_sites_in_filters_and_autocomplete(
    client, django_user_model, niams
) -> None:
    login(client, django_user_model, Role.COORDINATOR, niams["berlin"])

    page = client.get(reverse("admin:scheduler_scheduledvisit_changelist"))
    found = client.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "scheduler",
            "model_name": "scheduledvisit",
            "field_name": "participant",
            "term": "0",
        },
    )

    # The trial and site filters offer the trials and sites of the rows listed: one of
    # each, so there is nothing to choose and Django leaves them out.
    assert [spec.title for spec in page.context["cl"].filter_specs] == [
        "export",
        "status",
        "needs attention",
        "window",
        "booked for",
        "deviation",
        "procedure",
        "resource",
    ]
    assert b"Tokyo" not in page.content
    assert [row["text"] for row in json.loads(found.content)["results"]] == [str(niams["berlin"])]


def test_it_requires_unblinded_role(client, django_user_model, niams) -> None:
    coordinator = login(client, django_user_model, Role.COORDINATOR, niams["berlin"])
    assignment = TreatmentAssignment.objects.get(participant=niams["berlin"])
    url = reverse("admin:participants_treatmentassignment_changelist")

    blinded = listed(client.get(url))
    blinded_page = client.get(change_url(assignment)).status_code
    member(
        coordinator,
        trial=niams["berlin"].trial,
        site=niams["berlin"].site,
        role=Role.UNBLINDED_PHARMACIST,
    )
    # An unblinded role needs a second factor: signed in again with one.
    sign_in(client, coordinator)
    unblinded = listed(client.get(url))

    assert (blinded, blinded_page) == ([], 404)
    # Only at the pharmacist's own site.
    assert unblinded == [str(assignment)]


def test_it_shows_nothing_to_a_superuser_without_membership(
    client, django_user_model, niams
) -> None:
    login(client, django_user_model, "root", is_superuser=True)

    index = client.get(reverse("admin:index"))
    participants = client.get(reverse("admin:participants_participant_changelist"))
    page = client.get(change_url(niams["berlin"]))
    trials = client.get(reverse("admin:trials_trial_changelist"))

    models = sorted(m["object_name"] for app in index.context["app_list"] for m in app["models"])
    assert "Participant" not in models and "ScheduledVisit" not in models
    assert "Membership" in models and "Trial" in models
    assert (participants.status_code, page.status_code) == (403, 404)
    # Trials and users stay theirs to manage.
    assert listed(trials) == [str(niams["berlin"].trial)]


def test_sponsor_monitor_cannot_write(client, django_user_model, niams) -> None:
    login(client, django_user_model, Role.SPONSOR_MONITOR, niams["berlin"])
    visit = ScheduledVisit.objects.filter(participant=niams["tokyo"]).earliest("id")

    every_site = listed(client.get(reverse("admin:participants_participant_changelist")))
    page = client.get(change_url(niams["tokyo"]))
    edit = client.post(change_url(niams["tokyo"]), {"study_id": "CHANGED"})
    book = client.get(reverse("admin:scheduler_scheduledvisit_book", args=[visit.pk]))
    add = client.get(reverse("admin:participants_participant_add"))

    assert sorted(every_site) == sorted([str(niams["berlin"]), str(niams["tokyo"])])
    assert (page.status_code, page.context["has_change_permission"]) == (200, False)
    assert b"tokyo-001@example.org" not in page.content
    assert (edit.status_code, book.status_code, add.status_code) == (403, 403, 403)
    niams["tokyo"].refresh_from_db()
    assert niams["tokyo"].study_id == "TOKYO-001"


def test_it_shows_contact_details_only_to_coordinators_and_investigators(
    client, django_user_model, niams
) -> None:
    seen = {}
    for role in (Role.COORDINATOR, Role.INVESTIGATOR, Role.UNBLINDED_PHARMACIST):
        client.logout()
        login(client, django_user_model, role, niams["berlin"])
        seen[role.value] = (
            b"berlin-001@example.org" in client.get(change_url(niams["berlin"])).content
        )

    assert seen == {"coordinator": True, "investigator": True, "unblinded_pharmacist": False}


def test_register_offers_only_the_users_own_trial_sites(client, django_user_model, niams) -> None:
    login(client, django_user_model, Role.COORDINATOR, niams["berlin"])

    page = client.get(reverse("admin:participants_participant_add"))

    choices = [str(choice) for choice in page.context["choice_form"].fields["trial_site"].queryset]
    assert len(choices) == 1 and "berlin" in choices[0].lower()


def test_blinding_change_is_refused_to_a_coordinator_with_the_services_words(
    client, django_user_model, niams
) -> None:
    login(client, django_user_model, Role.COORDINATOR, niams["berlin"])
    trial = niams["berlin"].trial
    url = reverse("admin:trials_trial_blinding", args=[trial.pk])

    response = client.post(url, {"blinding": "open", "reason": "database lock"})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [blinding_refusal(trial)]
    assert Trial.objects.get(pk=trial.pk).blinding == "double"


def test_one_sites_pharmacist_alone_is_offered_no_blinding_change_and_is_refused_one(
    client, django_user_model, niams
) -> None:
    login(client, django_user_model, Role.UNBLINDED_PHARMACIST, niams["berlin"])
    trial = niams["berlin"].trial
    url = reverse("admin:trials_trial_blinding", args=[trial.pk])

    page = client.get(reverse("admin:trials_trial_change", args=[trial.pk]))
    response = client.post(url, {"blinding": "open", "reason": "database lock"})

    assert page.status_code == 200
    assert "Change blinding" not in page.content.decode()
    assert response.context["form"].non_field_errors() == [blinding_refusal(trial)]
    assert Trial.objects.get(pk=trial.pk).blinding == "double"
    assert Trial.history.filter(id=trial.pk).count() == 1


def test_blinding_change_by_an_unblinded_role_with_a_reason_is_done_and_audited(
    client, django_user_model, niams
) -> None:
    pharmacist = governs_trials(
        login(client, django_user_model, Role.UNBLINDED_PHARMACIST, niams["berlin"])
    )
    trial = niams["berlin"].trial
    url = reverse("admin:trials_trial_blinding", args=[trial.pk])
    page = client.get(reverse("admin:trials_trial_change", args=[trial.pk]))
    assert ("Change blinding", url) in page.context["related_links"]

    without_reason = client.post(url, {"blinding": "open", "reason": ""})
    done = client.post(url, {"blinding": "open", "reason": "database lock"})

    assert without_reason.status_code == 200
    assert done.status_code == 302
    latest = Trial.history.filter(id=trial.pk).order_by("-history_id").first()
    assert (latest.blinding, latest.history_user, latest.history_change_reason) == (
        "open",
        pharmacist,
        "database lock",
    )


def test_another_trials_blinding_page_is_a_404(
    client, django_user_model, niams, import_seed
) -> None:
    login(client, django_user_model, Role.UNBLINDED_PHARMACIST, niams["berlin"])
    other_trial = import_seed("001").trial

    response = client.get(reverse("admin:trials_trial_blinding", args=[other_trial.pk]))

    assert response.status_code == 404


# Scoped lists cost the same whatever the number of rows (the membership read included).
@pytest.mark.parametrize(
    ("changelist", "queries"),
    [("participants_participant", 10), ("scheduler_scheduledvisit", 12)],
)
@pytest.mark.parametrize("per_site", [1, 4])
def test_scoped_changelists_cost_the_same_queries_at_any_size(
    client, django_user_model, import_seed, django_assert_num_queries, changelist, queries, per_site
) -> None:
    version = import_seed("000")
    berlin = SiteFactory.create(code="berlin", timezone="Europe/Berlin")
    tokyo = SiteFactory.create(code="tokyo", timezone="Asia/Tokyo")
    for site in (berlin, tokyo):
        for number in range(per_site):
            participant = participant_for(
                version,
                anchors={"day1": dt.date(2026, 3, 2)},
                site=site,
                study_id=f"{site.code}-{number}",
            )
            participant_enroll(participant=participant, on=dt.date(2026, 2, 16))
    user = django_user_model.objects.create_user("anna", is_staff=True)
    member(user, trial=version.trial, site=berlin, role=Role.COORDINATOR)
    sign_in(client, user)

    with django_assert_num_queries(queries):
        response = client.get(reverse(f"admin:{changelist}_changelist"))

    rows = response.context["cl"].result_list
    assert {
        row.site_id if changelist.startswith("participants") else row.participant.site_id
        for row in rows
    } == {berlin.pk}
    assert len(rows) == per_site * (1 if changelist.startswith("participants") else 12)


def test_data_manager_reads_its_trials_protocol_and_no_other(
    client, django_user_model, niams, import_seed
) -> None:
    login(client, django_user_model, Role.DATA_MANAGER, niams["berlin"])
    own = niams["berlin"].protocol_version
    other = import_seed("001")

    page = client.get(change_url(own))
    other_page = client.get(change_url(other))
    participants = client.get(reverse("admin:participants_participant_changelist"))

    assert (page.status_code, page.context["has_change_permission"]) == (200, False)
    assert [inline.opts.model.__name__ for inline in page.context["inline_admin_formsets"]] == [
        "Anchor",
        "Arm",
        "Epoch",
        "ProcedureDefinition",
        "VisitDefinition",
        "MilestoneRule",
        "EligibilityCriterion",
    ]
    # Protocols only: no participant, no calendar.
    assert (other_page.status_code, participants.status_code) == (404, 403)
