"""A minor's SMS go to the guardian's phone when the site has it, as a minor's emails go to the
guardian's address; otherwise to the phone on file (what a site entered for the family before
there was a guardian's phone). Sent through the outbox to a fake Twilio (the outside world)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine

from participants.contact import participant_contact_gap, sms_number
from participants.models import Participant
from scheduler.models import Reminder
from scheduler.outbox.plan import participant_channels
from scheduler.outbox.sweep import reminders_send_batch
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, booked_ahead, participant_for

pytestmark = pytest.mark.django_db
D = dt.date
UTC = dt.UTC
CHILD, GUARDIAN = "+1 301 555 0100", "+1 301 555 0142"
ENROLLED_AT = dt.datetime(2026, 3, 2, 15, tzinfo=UTC)
NOW = dt.datetime(2026, 3, 20, 13, tzinfo=UTC)


def pediatric(import_seed: Any, **fields: Any) -> Any:
    """A participant of the pediatric SLE trial (ages 5 to 17) in New York, enrolled, SMS
    only, the outbox empty."""
    version = import_seed("003b")
    site = SiteFactory.create(code="nyc", name="NYC Children's", timezone="America/New_York")
    with time_machine.travel(ENROLLED_AT, tick=False):
        participant = participant_for(
            version,
            anchors={a.code: D(2026, 3, 16) for a in version.anchor_set.filter(relative_to="")},
            site=site,
            birth_date=D(2015, 5, 1),
            reminder_channels=["sms"],
            **fields,
        )
        participant_enroll(participant=participant, on=ENROLLED_AT.date())
    Reminder.objects.filter(participant=participant).delete()
    return participant


def sent_to(participant: Any, twilio: Any) -> list[str]:
    """Where one due SMS reminder of `participant` went."""
    visit = participant.visits.order_by("target_date")[0]
    booked_ahead([visit])
    reminder = Reminder.objects.create(
        participant=participant,
        visit=visit,
        target_key=f"visit:{visit.pk}",
        rule_code="R1",
        event="before_visit",
        channel="sms",
        audience="participant",
        due_at=NOW - dt.timedelta(minutes=1),
        next_attempt_at=NOW - dt.timedelta(minutes=1),
    )
    with time_machine.travel(NOW, tick=False):
        assert reminders_send_batch([reminder.pk]) == {reminder.pk: "sent"}
    return [request["data"]["To"] for request in twilio.requests]


def test_a_minors_sms_goes_to_the_guardians_phone(import_seed: Any, twilio: Any) -> None:
    child = pediatric(import_seed, phone=CHILD, guardian_phone=GUARDIAN)

    assert sent_to(child, twilio) == [GUARDIAN]


def test_without_a_guardians_phone_a_minors_sms_goes_to_the_phone_on_file(
    import_seed: Any, twilio: Any
) -> None:
    child = pediatric(import_seed, phone=CHILD)

    assert sent_to(child, twilio) == [CHILD]


def test_a_guardians_phone_alone_reaches_a_minor(import_seed: Any, twilio: Any) -> None:
    child = pediatric(import_seed, guardian_phone=GUARDIAN)
    today = D(2026, 3, 20)

    assert participant_channels(child, today) == frozenset({"sms"})
    assert participant_contact_gap(child, today=today) is None
    assert sent_to(child, twilio) == [GUARDIAN]


@pytest.mark.parametrize(
    ("today", "number"),
    [
        (D(2033, 4, 30), GUARDIAN),  # the day before the 18th birthday
        (D(2033, 5, 1), CHILD),  # the birthday (the participant's own date)
    ],
)
def test_the_guardians_phone_is_used_until_the_participants_18th_birthday(
    today: dt.date, number: str
) -> None:
    participant = Participant(birth_date=D(2015, 5, 1), phone=CHILD, guardian_phone=GUARDIAN)

    assert sms_number(participant, today=today) == number


def test_an_adults_sms_goes_to_their_own_phone_whatever_guardian_is_on_file() -> None:
    adult = Participant(birth_date=D(1980, 1, 1), phone=CHILD, guardian_phone=GUARDIAN)

    assert sms_number(adult, today=D(2026, 3, 20)) == CHILD
    assert (
        sms_number(
            Participant(birth_date=D(1980, 1, 1), guardian_phone=GUARDIAN), today=D(2026, 3, 20)
        )
        == ""
    )
