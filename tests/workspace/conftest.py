"""A coordinator's week, built through the services: two NIAMS sites' worth of work in New York
and a Tsukuba participant in Tokyo, seen on 10 March 2026 at 16:00 UTC, when it is 12:00 on
the 10th in New York and already 01:00 on the 11th in Tokyo.

New York (nih-cc), NIAMS (double-blind), each visit in exactly one section of the start page:
- P-001 (Day 1 = 2 Feb): V1 done 25 Jan, 6 days after its window, reason never recorded
  (a deviation awaiting a reason); V2 done; V3 marked missed (window closed 5 Mar); V3C
  planned, window 7 to 11 Mar (due, closing within 3 days).
- P-002 (Day 1 = 31 Mar): V1 booked for 9 Mar 10:00 and not recorded (overdue).
- P-003 (Day 1 = 31 Mar): V1 booked for 10 Mar 14:00 (today).
- P-004 (Day 1 = 4 Apr): V1 booked for 13 Mar 09:30 (later this week).
- P-001's first reminder is dead (email) and P-002's first failed (a webhook delivery).
Tokyo (tsukuba), Tsukuba trial (open label):
- T-001 (PSL start 2 Mar, Day 1 16 Mar): INF#1 booked for 11 Mar 10:00 JST (today in Tokyo),
  taper week 2 due 16 Mar (a taper decision this week); its first reminder is dead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model

from participants.models import Participant
from scheduler.models import Reminder, ScheduledVisit
from scheduler.services import (
    participant_enroll,
    visit_book,
    visit_mark_missed,
    visit_record_done,
)
from tests.factories import SiteFactory, member, participant_for
from trials.models import Arm, ProtocolVersion, Site

D = dt.date
NOW = dt.datetime(2026, 3, 10, 16, 0, tzinfo=dt.UTC)


def at(day: dt.date) -> time_machine.travel:
    """Noon UTC on `day`: the same date in New York and Tokyo."""
    return time_machine.travel(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC), tick=False)


def visit(participant: Participant, code: str, occurrence: int = 1) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("participant__site").get(
        participant=participant, visit_definition__code=code, occurrence=occurrence
    )


@dataclass
class World:
    niams: ProtocolVersion
    tsukuba_version: ProtocolVersion
    ny: Site
    tokyo: Site
    p1: Participant
    p2: Participant
    p3: Participant
    p4: Participant
    t1: Participant
    dead_email: Reminder
    failed_webhook: Reminder
    dead_tokyo: Reminder

    def v(self, participant: Participant, code: str, occurrence: int = 1) -> ScheduledVisit:
        return visit(participant, code, occurrence)


def niams_participant(
    version: ProtocolVersion, site: Site, study_id: str, day1: dt.date, arm: str
) -> Participant:
    participant = participant_for(version, anchors={"day1": day1}, site=site, study_id=study_id)
    participant_enroll(
        participant=participant, on=D(2026, 1, 5), arm=Arm.objects.get(version=version, code=arm)
    )
    return participant


def build_world(import_seed: Callable[[str], ProtocolVersion], user: Any) -> World:
    with at(D(2026, 1, 4)):
        niams = import_seed("000")
        tsukuba_version = import_seed("001")
        ny = SiteFactory.create(code="nih-cc", name="NIH Clinical Center")
        tokyo = SiteFactory.create(
            code="tsukuba", name="University of Tsukuba Hospital", timezone="Asia/Tokyo"
        )
        p1 = niams_participant(niams, ny, "P-001", D(2026, 2, 2), "ANI")
        p2 = niams_participant(niams, ny, "P-002", D(2026, 3, 31), "PBO")
        p3 = niams_participant(niams, ny, "P-003", D(2026, 3, 31), "ANI")
        p4 = niams_participant(niams, ny, "P-004", D(2026, 4, 4), "PBO")
        t1 = participant_for(
            tsukuba_version,
            anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
            weight_kg=Decimal(60),
            site=tokyo,
            study_id="T-001",
        )
        participant_enroll(participant=t1, on=D(2026, 3, 1))
    with at(D(2026, 1, 26)):
        visit_record_done(
            visit=visit(p1, "V1"), actual_date=D(2026, 1, 25), by=user, reason="came late"
        )
    # Recorded before reasons were required: the deviation still awaits its reason.
    ScheduledVisit.objects.filter(pk=visit(p1, "V1").pk).update(reason="")
    with at(D(2026, 2, 3)):
        visit_record_done(visit=visit(p1, "V2"), actual_date=D(2026, 2, 2), by=user)
    with at(D(2026, 3, 6)):
        visit_mark_missed(visit=visit(p1, "V3"), by=user, reason="did not come")
    with at(D(2026, 3, 1)):
        for participant, day, hour in ((p2, D(2026, 3, 9), 10), (p3, D(2026, 3, 10), 14)):
            visit_book(
                visit=visit(participant, "V1"), local_date=day, local_time=dt.time(hour), by=user
            )
        visit_book(
            visit=visit(p4, "V1"), local_date=D(2026, 3, 13), local_time=dt.time(9, 30), by=user
        )
        visit_book(
            visit=visit(t1, "INF", 1),
            local_date=D(2026, 3, 11),
            local_time=dt.time(10),
            by=user,
            reason="the participant travels that week",
        )
    first = {
        p.pk: Reminder.objects.filter(participant=p).order_by("due_at", "id")[0]
        for p in (p1, p2, t1)
    }
    Reminder.objects.filter(pk=first[p1.pk].pk).update(
        status=Reminder.Status.DEAD, channel="email", attempts=5
    )
    Reminder.objects.filter(pk=first[p2.pk].pk).update(
        status=Reminder.Status.FAILED, channel="webhook", attempts=2
    )
    Reminder.objects.filter(pk=first[t1.pk].pk).update(status=Reminder.Status.DEAD, attempts=5)
    reminders = {pk: Reminder.objects.get(pk=r.pk) for pk, r in first.items()}
    return World(
        niams=niams,
        tsukuba_version=tsukuba_version,
        ny=ny,
        tokyo=tokyo,
        p1=p1,
        p2=p2,
        p3=p3,
        p4=p4,
        t1=t1,
        dead_email=reminders[p1.pk],
        failed_webhook=reminders[p2.pk],
        dead_tokyo=reminders[t1.pk],
    )


@pytest.fixture
def builder(db: None) -> Any:
    return get_user_model().objects.create_user("builder", password="unused-builder")


@pytest.fixture
def world(import_seed: Callable[[str], ProtocolVersion], builder: Any) -> World:
    return build_world(import_seed, builder)


@pytest.fixture
def now() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def staff(username: str, *, trial: Any, site: Site | None, role: str = "coordinator") -> Any:
    user = get_user_model().objects.create_user(
        username, password="a-long-passphrase", is_staff=True
    )
    return member(user, trial=trial, site=site, role=role)


@pytest.fixture
def coordinator(world: World) -> Any:
    """A coordinator of NIAMS at New York only."""
    return staff("coordinator-ny", trial=world.niams.trial, site=world.ny)
