"""The world of the emergency-unblinding tests: the blinded NIAMS trial at Berlin and Tokyo."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
import time_machine

from participants.models import Participant
from scheduler.models import Membership
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, member, participant_for
from trials.models import Arm

Role = Membership.Role
NOW = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery staple"


@dataclass
class World:
    berlin: Any
    tokyo: Any
    unblinded: Participant  # BERLIN-001, on anifrolumab
    neighbour: Participant  # BERLIN-002, on placebo
    far: Participant  # TOKYO-001, on placebo
    investigator: Any
    pharmacist_berlin: Any
    pharmacist_tokyo: Any


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def user(django_user_model, name: str, **fields: Any) -> Any:
    return django_user_model.objects.create_user(
        name, password=PASSWORD, is_staff=True, email=f"{name}@example.org", **fields
    )


@pytest.fixture
def world(import_seed, django_user_model) -> World:
    version = import_seed("000")
    sites = {
        code: SiteFactory.create(code=code, name=f"{code.title()} Site", timezone=zone)
        for code, zone in (("berlin", "Europe/Berlin"), ("tokyo", "Asia/Tokyo"))
    }
    arms = {arm.code: arm for arm in Arm.objects.filter(version=version)}
    people = {}
    for study_id, site, arm in (
        ("BERLIN-001", "berlin", "ANI"),
        ("BERLIN-002", "berlin", "PBO"),
        ("TOKYO-001", "tokyo", "PBO"),
    ):
        participant = participant_for(
            version, anchors={"day1": dt.date(2026, 3, 2)}, site=sites[site], study_id=study_id
        )
        participant_enroll(participant=participant, on=dt.date(2026, 2, 16), arm=arms[arm])
        people[study_id] = participant
    trial = version.trial
    investigator = member(
        user(django_user_model, "ines", first_name="Ines", last_name="Weber"),
        trial=trial,
        site=sites["berlin"],
        role=Role.INVESTIGATOR,
    )
    pharmacists = {
        code: member(
            user(django_user_model, f"pharmacist-{code}"),
            trial=trial,
            site=sites[code],
            role=Role.UNBLINDED_PHARMACIST,
        )
        for code in ("berlin", "tokyo")
    }
    return World(
        berlin=sites["berlin"],
        tokyo=sites["tokyo"],
        unblinded=people["BERLIN-001"],
        neighbour=people["BERLIN-002"],
        far=people["TOKYO-001"],
        investigator=investigator,
        pharmacist_berlin=pharmacists["berlin"],
        pharmacist_tokyo=pharmacists["tokyo"],
    )
