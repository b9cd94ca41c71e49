"""One NIAMS participant enrolled at Berlin, one at Tokyo; a coordinator at Berlin, an
investigator at Berlin, and an auditor (the "auditor" group, no membership)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from participants.models import Participant
from scheduler.models import Membership
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, member, participant_for
from trials.models import Site

NOW = dt.datetime(2026, 1, 20, 8, 0, tzinfo=dt.UTC)
PASSWORD = "a-long-passphrase"  # noqa: S105 - a test account's


def staff(username: str, **fields: Any) -> Any:
    return get_user_model().objects.create_user(
        username, password=PASSWORD, is_staff=True, **fields
    )


@dataclass
class World:
    berlin: Site
    tokyo: Site
    participant: Participant  # at Berlin
    elsewhere: Participant  # at Tokyo
    coordinator: Any
    investigator: Any
    auditor: Any


@pytest.fixture
def frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def world(import_seed: Any, frozen: None) -> World:
    niams = import_seed("000")
    berlin = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    tokyo = SiteFactory.create(code="tokyo", timezone="Asia/Tokyo", country="JP")
    people = []
    for site, study_id in ((berlin, "B-001"), (tokyo, "T-001")):
        participant = participant_for(
            niams,
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            study_id=study_id,
            weight_kg=Decimal(70),
        )
        participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
        people.append(participant)
    coordinator = member(staff("coordinator"), trial=niams.trial, site=berlin)
    investigator = member(
        staff("investigator"), trial=niams.trial, site=berlin, role=Membership.Role.INVESTIGATOR
    )
    auditor = staff("auditor")
    # The group comes with migration 0012; a transactional test's flush empties it, so it is
    # made again as the migration makes it when an earlier test flushed it away.
    group, _ = Group.objects.get_or_create(name="auditor")
    group.permissions.add(
        Permission.objects.get(
            content_type__app_label="scheduler", codename="review_security_audit"
        )
    )
    auditor.groups.add(group)
    return World(berlin, tokyo, people[0], people[1], coordinator, investigator, auditor)
