from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from icalendar import Calendar

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, participant_for
from trials.models import Arm, Site

NOW = dt.datetime(2026, 1, 20, 15, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(autouse=True)
def own_cache(settings, request):
    """A cache of this test's own. A feed's Last-Modified is kept in the cache (when its
    version was first served): in a Redis database that other processes of the run share or
    flush, or under load past the 0.5 s cache timeout, a test's second poll could find it
    gone and rightly answer 200 where the test expects 304. Tests that are about Redis set
    their own CACHES."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator")


@pytest.fixture
def nih(db) -> Site:
    return SiteFactory.create(
        code="nih-cc",
        name="NIH Clinical Center",
        timezone="America/New_York",
        address="10 Center Drive, Bethesda, MD 20892",
        phone="+1 301-496-2563",
        email="visits@nih.example",
    )


@pytest.fixture
def enroll_niams(import_seed, nih, django_capture_on_commit_callbacks):
    version = import_seed("000")

    def enroll(study_id: str = "NIH-001", arm: str = "ANI", **fields) -> Participant:
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 2, 2)},
            birth_date=dt.date(1980, 6, 15),
            site=nih,
            study_id=study_id,
            email=fields.pop("email", f"{study_id}@example.org"),
            **fields,
        )
        with django_capture_on_commit_callbacks(execute=True):
            participant_enroll(
                participant=participant,
                on=dt.date(2026, 1, 5),
                arm=Arm.objects.get(version=version, code=arm),
            )
        return participant

    return enroll


def ical_of(message) -> Calendar:
    [content] = [c for c, mimetype in message.alternatives if mimetype.startswith("text/calendar")]
    return Calendar.from_ical(content)


def event_of(message):
    [event] = ical_of(message).walk("VEVENT")
    return event


def visit_at(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )
