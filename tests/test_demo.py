from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from participants.models import Participant
from scheduler.models import ScheduledVisit
from tests.conftest import PROTOCOL_DIR
from trials.models import ProtocolVersion, Trial


@pytest.mark.django_db
def test_load_demo_loads_every_seed_protocol_and_enrolls_demo_participants() -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    assert ProtocolVersion.objects.count() == len(list(PROTOCOL_DIR.glob("*.yaml")))
    assert sorted(Trial.objects.values_list("code", flat=True)) == [
        "ani-lupus-nephritis",
        "ani-pediatric-sle",
        "ani-vitiligo-nbuvb",
        "jasmine-myositis",
        "lavender-cle",
        "niams-ani-vascular",
        "tsukuba-early-ani",
    ]
    assert {
        trial.code: trial.participants.filter(status="enrolled").count()
        for trial in Trial.objects.all()
    } == dict.fromkeys(Trial.objects.values_list("code", flat=True), 3)


@pytest.mark.django_db
def test_load_demo_twice_changes_nothing() -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    counts = (Participant.objects.count(), ScheduledVisit.objects.count())

    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    assert (Participant.objects.count(), ScheduledVisit.objects.count()) == counts


@pytest.mark.django_db
def test_load_demo_gives_calendars_a_past_and_a_next_booking() -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    statuses = set(ScheduledVisit.objects.values_list("status", flat=True))
    assert statuses == {"planned", "booked", "done"}
    assert ScheduledVisit.objects.filter(status="booked").count() == Participant.objects.count()
