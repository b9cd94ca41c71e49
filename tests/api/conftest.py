from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler.models import Membership, ScheduledVisit
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, participant_for
from trials.models import Site, Trial

Role = Membership.Role
# Berlin's morning, two weeks before Day 1 of the seed participants.
NOW = dt.datetime(2026, 1, 20, 8, 0, tzinfo=dt.UTC)
ROLES = [
    Role.COORDINATOR,
    Role.INVESTIGATOR,
    Role.UNBLINDED_PHARMACIST,
    Role.SPONSOR_MONITOR,
    Role.DATA_MANAGER,
    Role.SITE_SYSTEM,
]


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(autouse=True)
def fresh_throttle_counts():
    # Throttle counts live in the cache, which outlives each test's database.
    cache.clear()
    yield
    cache.clear()


@dataclass
class World:
    trial: Trial  # NIAMS, blinded
    berlin: Site
    tokyo: Site
    other_trial: Trial  # Tsukuba, open
    osaka: Site
    people: dict[str, Participant]
    users: dict[str, Any] = field(default_factory=dict)

    def visit(self, study_id: str, code: str = "V2") -> ScheduledVisit:
        return ScheduledVisit.objects.get(
            participant=self.people[study_id], visit_definition__code=code, occurrence=1
        )

    def signed_in(self, role: str) -> Client:
        """The admin as that role's person sees it (staff, signed in), answering a server
        error with its page rather than raising it, as a browser would get it."""
        user = self.users[role]
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        person = Client(raise_request_exception=False)
        person.force_login(user)
        return person

    def client(self, role: str) -> APIClient:
        # A fresh user object, as each real request has: access.py caches memberships on it.
        user = type(self.users[role]).objects.get(pk=self.users[role].pk)
        client = APIClient()
        client.force_authenticate(user)
        return client


@pytest.fixture
def world(import_seed, django_user_model) -> World:
    """NIAMS (blinded) at Berlin and Tokyo, Tsukuba (open) at Osaka, one enrolled participant
    at each site, and one user per role acting for NIAMS at Berlin (trial-wide roles: at
    every NIAMS site)."""
    from trials.models import Arm

    niams = import_seed("000")
    tsukuba = import_seed("001")
    berlin = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    tokyo = SiteFactory.create(code="tokyo", timezone="Asia/Tokyo", country="JP")
    osaka = SiteFactory.create(code="osaka", timezone="Asia/Tokyo", country="JP")
    people: dict[str, Participant] = {}
    for version, site, study_id, anchors, arm in (
        (niams, berlin, "BERLIN-001", {"day1": dt.date(2026, 2, 2)}, "ANI"),
        (niams, tokyo, "TOKYO-001", {"day1": dt.date(2026, 2, 2)}, "ANI"),
        (tsukuba, osaka, "OSAKA-001", {"psl_start": dt.date(2026, 1, 5)}, None),
    ):
        participant = participant_for(
            version,
            anchors=anchors,
            site=site,
            study_id=study_id,
            email=f"{study_id.lower()}@example.org",
            phone="+49 30 1234567",
        )
        # Invites and reminders dispatched on commit never run here: the API is under test.
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 5),
            arm=Arm.objects.get(version=version, code=arm) if arm else None,
        )
        people[study_id] = participant
    world = World(niams.trial, berlin, tokyo, tsukuba.trial, osaka, people)
    for role in ROLES:
        user = django_user_model.objects.create_user(f"{role}-berlin")
        site = None if role in Membership.TRIAL_WIDE else berlin
        Membership.objects.create(user=user, trial=niams.trial, site=site, role=role)
        world.users[role] = user
    world.users["nobody"] = django_user_model.objects.create_user("nobody")
    return world
