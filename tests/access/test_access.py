"""scheduler/access.py: one door per test, deny by default (healthchecks' style)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction

from participants.models import TreatmentAssignment
from scheduler import access
from scheduler.models import Membership, ScheduledVisit
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, participant_for
from trials.models import Arm

Role = Membership.Role


@pytest.fixture
def niams(import_seed, django_capture_on_commit_callbacks):
    """The blinded NIAMS trial at two sites, one enrolled participant at each."""
    version = import_seed("000")
    berlin = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    tokyo = SiteFactory.create(code="tokyo", timezone="Asia/Tokyo", country="JP")
    people = {}
    for site, study_id in ((berlin, "BERLIN-001"), (tokyo, "TOKYO-001")):
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            study_id=study_id,
            email=f"{study_id}@example.org",
        )
        with django_capture_on_commit_callbacks(execute=True):
            participant_enroll(
                participant=participant,
                on=dt.date(2026, 1, 5),
                arm=Arm.objects.get(version=version, code="ANI"),
            )
        people[site.code] = participant
    return version.trial, berlin, tokyo, people


def member(django_user_model, name, trial, site, role):
    user = django_user_model.objects.create_user(name)
    Membership.objects.create(user=user, trial=trial, site=site, role=role)
    return user


def study_ids(queryset) -> list[str]:
    return sorted(queryset.values_list("study_id", flat=True))


def visit_sites(queryset) -> list[str]:
    return sorted(set(queryset.values_list("participant__site__code", flat=True)))


@pytest.mark.django_db
def test_it_shows_nothing_to_a_user_without_membership_superuser_included(
    niams, django_user_model
) -> None:
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")

    assert study_ids(access.participants_for(root)) == []
    assert access.visits_for(root).count() == 0
    assert access.reminders_for(root).count() == 0
    assert list(access.sites_for(root)) == []
    assert list(access.trials_for(root)) == []
    assert access.assignments_for(root).count() == 0


@pytest.mark.django_db
def test_it_hides_other_sites_from_a_coordinator(niams, django_user_model) -> None:
    trial, berlin, _tokyo, _people = niams
    coordinator = member(django_user_model, "anna", trial, berlin, Role.COORDINATOR)

    assert study_ids(access.participants_for(coordinator)) == ["BERLIN-001"]
    assert study_ids(access.participants_for(coordinator, write=True)) == ["BERLIN-001"]
    assert visit_sites(access.visits_for(coordinator)) == ["berlin"]
    assert sorted(s.code for s in access.sites_for(coordinator)) == ["berlin"]
    assert set(
        access.reminders_for(coordinator).values_list("participant__site__code", flat=True)
    ) == {"berlin"}


@pytest.mark.django_db
def test_it_gives_a_sponsor_monitor_every_site_of_its_trial_read_only(
    niams, django_user_model, import_seed
) -> None:
    trial, _berlin, _tokyo, _people = niams
    monitor = member(django_user_model, "mo", trial, None, Role.SPONSOR_MONITOR)
    other_trial = import_seed("001").trial
    stranger = participant_for(
        other_trial.versions.get(), anchors={"psl_start": dt.date(2026, 1, 5)}, study_id="X-1"
    )

    assert study_ids(access.participants_for(monitor)) == ["BERLIN-001", "TOKYO-001"]
    assert study_ids(access.participants_for(monitor, write=True)) == []
    assert access.visits_for(monitor, write=True).count() == 0
    assert stranger.study_id not in study_ids(access.participants_for(monitor))
    assert sorted(s.code for s in access.sites_for(monitor)) == ["berlin", "tokyo"]


@pytest.mark.django_db
def test_it_gives_a_data_manager_protocols_but_no_participants(niams, django_user_model) -> None:
    trial, _berlin, _tokyo, _people = niams
    data_manager = member(django_user_model, "dm", trial, None, Role.DATA_MANAGER)

    assert study_ids(access.participants_for(data_manager)) == []
    assert [t.code for t in access.trials_for(data_manager)] == [trial.code]


@pytest.mark.django_db
def test_it_requires_unblinded_role_for_the_arm_of_a_blinded_trial(
    niams, django_user_model
) -> None:
    trial, berlin, tokyo, _people = niams
    coordinator = member(django_user_model, "anna", trial, berlin, Role.COORDINATOR)
    investigator = member(django_user_model, "ivo", trial, berlin, Role.INVESTIGATOR)
    monitor = member(django_user_model, "mo", trial, None, Role.SPONSOR_MONITOR)
    pharmacist = member(django_user_model, "pia", trial, berlin, Role.UNBLINDED_PHARMACIST)

    assert trial.is_blinded is True
    for blinded in (coordinator, investigator, monitor):
        assert access.can_see_arm(blinded, trial=trial, site=berlin) is False
        assert access.assignments_for(blinded).count() == 0
    assert access.can_see_arm(pharmacist, trial=trial, site=berlin) is True
    assert access.can_see_arm(pharmacist, trial=trial, site=tokyo) is False
    assert [a.participant.study_id for a in access.assignments_for(pharmacist)] == ["BERLIN-001"]
    # The pharmacist reads the calendar but does not change it.
    assert study_ids(access.participants_for(pharmacist, write=True)) == []


@pytest.mark.django_db
def test_it_shows_the_arm_of_an_open_trial_to_its_readers(
    import_seed, django_user_model, django_capture_on_commit_callbacks
) -> None:
    version = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo", country="JP")
    participant = participant_for(
        version, anchors={"psl_start": dt.date(2026, 1, 5)}, site=site, study_id="TKB-001"
    )
    with django_capture_on_commit_callbacks(execute=True):
        participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    coordinator = member(django_user_model, "kei", version.trial, site, Role.COORDINATOR)

    assert version.trial.is_blinded is False
    assert access.can_see_arm(coordinator, trial=version.trial, site=site) is True
    assert list(access.assignments_for(coordinator)) == list(
        TreatmentAssignment.objects.filter(participant=participant)
    )


@pytest.mark.django_db
def test_it_denies_inactive_and_anonymous_users(niams, django_user_model) -> None:
    from django.contrib.auth.models import AnonymousUser

    trial, berlin, _tokyo, _people = niams
    coordinator = member(django_user_model, "anna", trial, berlin, Role.COORDINATOR)
    coordinator.is_active = False
    coordinator.save(update_fields=["is_active"])

    assert access.visits_for(coordinator).count() == 0
    assert access.visits_for(AnonymousUser()).count() == 0
    assert ScheduledVisit.objects.count() > 0


@pytest.mark.django_db
def test_membership_site_follows_its_role(niams, django_user_model) -> None:
    trial, berlin, _tokyo, _people = niams
    user = django_user_model.objects.create_user("x")

    for role, site in ((Role.COORDINATOR, None), (Role.SPONSOR_MONITOR, berlin)):
        with pytest.raises(IntegrityError), transaction.atomic():
            Membership.objects.create(user=user, trial=trial, site=site, role=role)
    assert Membership.objects.count() == 0
