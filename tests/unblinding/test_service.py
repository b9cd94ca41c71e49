"""governance.participant_emergency_unblind: who may, what it refuses, what it writes."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.core import mail

from scheduler.governance import (
    GovernanceError,
    participant_emergency_unblind,
    unblinding_refusal,
)
from scheduler.models import EmergencyUnblinding, Membership, UnblindingNotice
from tests.factories import SiteFactory, member, participant_for
from tests.unblinding.conftest import PASSWORD, user

Role = Membership.Role
pytestmark = pytest.mark.django_db
REASON = "Suspected overdose; the emergency physician needs the arm"


def refusal(**kwargs) -> str:
    with pytest.raises(GovernanceError) as caught:
        participant_emergency_unblind(**kwargs)
    return str(caught.value)


def test_it_returns_that_participants_arm_only(world, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        unblinded = participant_emergency_unblind(
            participant=world.unblinded, by=world.investigator, password=PASSWORD, reason=REASON
        )

    assert (unblinded.arm.code, unblinded.arm.name) == ("ANI", "Anifrolumab")
    assert unblinded.entry == EmergencyUnblinding.objects.get()
    assert (unblinded.entry.participant, unblinded.entry.reason) == (world.unblinded, REASON)


@pytest.mark.parametrize(
    ("role", "site"),
    [
        (Role.COORDINATOR, "berlin"),
        (Role.SITE_SYSTEM, "berlin"),
        (Role.SPONSOR_MONITOR, None),
        (Role.DATA_MANAGER, None),
        (Role.INVESTIGATOR, "tokyo"),
        (Role.UNBLINDED_PHARMACIST, "tokyo"),
    ],
)
def test_it_refuses_every_other_role_and_site(world, django_user_model, role, site) -> None:
    someone = member(
        user(django_user_model, "someone"),
        trial=world.unblinded.trial,
        site=getattr(world, site) if site else None,
        role=role,
    )

    message = refusal(participant=world.unblinded, by=someone, password=PASSWORD, reason=REASON)

    assert message == (
        "Only the participant's site investigator or unblinded pharmacist may unblind in an "
        "emergency."
    )
    assert (EmergencyUnblinding.objects.count(), UnblindingNotice.objects.count()) == (0, 0)


def test_it_refuses_an_open_trial_and_a_participant_without_an_arm(
    world, import_seed, django_user_model
) -> None:
    tsukuba = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo", country="JP")
    open_participant = participant_for(tsukuba, anchors={}, site=site, study_id="TKB-001")
    member(world.investigator, trial=tsukuba.trial, site=site, role=Role.INVESTIGATOR)
    screening = participant_for(
        world.unblinded.protocol_version,
        anchors={"day1": dt.date(2026, 3, 2)},
        site=world.berlin,
        study_id="BERLIN-003",
    )

    open_trial = refusal(
        participant=open_participant, by=world.investigator, password=PASSWORD, reason=REASON
    )
    no_arm = refusal(participant=screening, by=world.investigator, password=PASSWORD, reason=REASON)

    assert open_trial == "This trial is not blinded: there is no code to break."
    assert no_arm == "This participant has no treatment assignment: there is no arm to show."
    assert EmergencyUnblinding.objects.count() == 0


def test_a_refused_attempt_is_logged_without_the_reason_or_the_arm(world, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="scheduler.governance"):
        message = refusal(
            participant=world.unblinded, by=world.investigator, password="guess", reason=REASON
        )

    assert message == unblinding_refusal("wrong_password")
    assert [record.getMessage() for record in caplog.records] == [
        f"emergency unblinding refused (wrong_password): user {world.investigator.pk}, "
        f"participant {world.unblinded.pk}"
    ]
    assert EmergencyUnblinding.objects.count() == 0


def test_inactive_contacts_are_not_told_and_one_without_an_address_is_told_in_the_app(
    world, django_capture_on_commit_callbacks
) -> None:
    world.pharmacist_tokyo.is_active = False
    world.pharmacist_tokyo.save()
    world.pharmacist_berlin.email = ""
    world.pharmacist_berlin.save()
    # A second role of the same person at another site still makes one contact.
    member(
        world.pharmacist_berlin,
        trial=world.unblinded.trial,
        site=world.tokyo,
        role=Role.UNBLINDED_PHARMACIST,
    )

    with django_capture_on_commit_callbacks(execute=True):
        participant_emergency_unblind(
            participant=world.unblinded, by=world.investigator, password=PASSWORD, reason=REASON
        )

    assert [n.recipient for n in UnblindingNotice.objects.all()] == [world.pharmacist_berlin]
    assert mail.outbox == []


def test_the_entry_and_its_notices_are_append_only(
    world, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        entry = participant_emergency_unblind(
            participant=world.unblinded, by=world.investigator, password=PASSWORD, reason=REASON
        ).entry
    notice = UnblindingNotice.objects.first()
    assert notice is not None

    entry.reason = "changed"
    with pytest.raises(ValueError, match="never changed"):
        entry.save()
    with pytest.raises(ValueError, match="never deleted"):
        entry.delete()
    with pytest.raises(ValueError, match="never changed"):
        notice.save()
    with pytest.raises(ValueError, match="never deleted"):
        notice.delete()
    assert EmergencyUnblinding.objects.get().reason == REASON
    assert UnblindingNotice.objects.count() == 2
