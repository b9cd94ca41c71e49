"""The calendar an email carries (an iMIP invite, or the current invite a reminder of a booked
visit attaches) is written as plain text (`scheduler.calendars.ical.calendar_text`), byte for
byte what icalendar wrote for the same event before: checked here on whole messages, for a
visit with procedures to prepare for, unbooked and booked, a cancelled one (METHOD:CANCEL),
sites in three time zones none of them UTC, names and places that are not ASCII (a site's name
in the organizer's CN, an address, a Japanese reader), in a double-blind trial whose arm never
shows.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.utils import timezone, translation

from scheduler.access import participant_today, site_today
from scheduler.calendars.events import attendee_of, participant_visit_event
from scheduler.calendars.ical import Method, build_calendar
from scheduler.calendars.imip import invite_message
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.sweep import reminder_send
from scheduler.services import participant_enroll, visit_book, visit_cancel
from tests.factories import SiteFactory, participant_for
from trials.models import Arm

UTC = dt.UTC
pytestmark = pytest.mark.django_db
ENROLLED = dt.datetime(2026, 1, 10, 12, tzinfo=UTC)
BOOKED = dt.datetime(2026, 9, 1, 12, tzinfo=UTC)

SITES: dict[str, dict[str, Any]] = {
    "new-york": {
        "site": {
            "code": "nih",
            "name": "NIH Clinical Center",
            "timezone": "America/New_York",
            "address": "10 Center Drive, Bethesda, MD 20892",
            "email": "visits@nih.example",
            "phone": "+1 301-496-2563",
        },
        "participant": {"email": "p1@example.org"},
    },
    # The site's name is the organizer's CN (a quoted parameter value: ';', ',' and ':').
    "berlin, not ascii": {
        "site": {
            "code": "charite",
            "name": "Charité – Universitätsmedizin Berlin; Campus Benjamin Franklin",
            "timezone": "Europe/Berlin",
            "address": "Hindenburgdamm 30, 12203 Berlin-Steglitz (Haus II, Ebene 3: Ambulanz)",
            "email": "ambulanz@charite.example",
            "phone": "+49 30 450 50",
        },
        "participant": {"email": "zoe.mueller@example.de", "timezone": "Europe/Lisbon"},
    },
    "tokyo, japanese": {
        "site": {
            "code": "tsukuba",
            "name": "筑波大学附属病院",
            "timezone": "Asia/Tokyo",
            "address": "茨城県つくば市天久保2丁目1番地1",
            "email": "visits@tsukuba.example",
            "phone": "029-853-3186",
        },
        "participant": {"email": "p@example.jp", "language": "ja"},
    },
}


@pytest.fixture(params=list(SITES))
def participant(request: Any, import_seed: Any) -> Any:
    """A participant of the double-blind NIAMS trial, on its active arm, at the site."""
    where = SITES[request.param]
    site = SiteFactory.create(**where["site"])
    with time_machine.travel(ENROLLED, tick=False):
        participant = participant_for(
            import_seed("000"),
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            **where["participant"],
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 10),
            arm=Arm.objects.get(version=participant.protocol_version, code="ANI"),
        )
    assert participant.trial.blinding == "double"
    return participant


@pytest.fixture
def coordinator(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("coordinator")


def v10(participant: Any) -> ScheduledVisit:
    """NIAMS V10: six procedures, some with something to prepare."""
    return ScheduledVisit.objects.get(participant=participant, visit_definition__code="V10")


def book_v10(participant: Any, coordinator: Any) -> ScheduledVisit:
    with time_machine.travel(BOOKED, tick=False):
        visit_book(
            visit=v10(participant),
            local_date=dt.date(2026, 9, 14),
            local_time=dt.time(8, 30),
            by=coordinator,
        )
    return v10(participant)


def icalendar_bytes(visit: ScheduledVisit, method: Method) -> bytes:
    """What icalendar wrote for this visit's invite, now: the participant's view of the visit,
    in their language, with them (or their guardian) as its attendee."""
    participant = visit.participant
    with translation.override(participant.language):
        attendee = attendee_of(participant, participant_today(participant))
        event = participant_visit_event(
            visit, attendee=attendee, today=site_today(participant.site)
        )
    return build_calendar([event], method=method, stamp=timezone.now()).to_ical()


def calendar_part(message: Any) -> bytes:
    [(content, mimetype)] = [
        (content, mimetype)
        for content, mimetype in message.alternatives
        if mimetype.startswith("text/calendar")
    ]
    assert mimetype in ("text/calendar; method=REQUEST", "text/calendar; method=CANCEL")
    return str(content).encode()


def invite_bytes(visit: ScheduledVisit, method: Method, at: dt.datetime) -> bytes:
    """The invite `invite_message` sends for `visit` at `at`, checked to be the very bytes
    icalendar writes for it then."""
    with time_machine.travel(at, tick=False):
        message = invite_message(visit, method=method)
        expected = icalendar_bytes(visit, method)
    assert message is not None
    ics = calendar_part(message)
    assert ics == expected
    return ics


def assert_blind(ics: bytes, participant: Any) -> None:
    text = ics.decode()
    arms = list(Arm.objects.filter(version=participant.protocol_version))
    assert len(arms) == 2
    for arm in arms:
        assert arm.name.lower() not in text.lower()
        assert re.search(rf"\b{arm.code}\b", text) is None
    assert re.search(r"anifrolumab|placebo|lupus", text, re.IGNORECASE) is None


def test_an_invite_to_a_visit_not_booked_yet_is_icalendars_bytes(participant: Any) -> None:
    visit = v10(participant)
    assert visit.booked_start is None and visit.procedures.count() == 6

    ics = invite_bytes(visit, "REQUEST", BOOKED)

    assert b"\r\nMETHOD:REQUEST\r\n" in ics
    assert b"\r\nDTSTART;VALUE=DATE:" in ics
    assert b"\r\nDTSTAMP:20260901T120000Z\r\n" in ics
    assert_blind(ics, participant)


def test_an_invite_to_a_booked_visit_is_icalendars_bytes(
    participant: Any, coordinator: Any
) -> None:
    visit = book_v10(participant, coordinator)

    ics = invite_bytes(visit, "REQUEST", BOOKED)

    start = visit.booked_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")  # type: ignore[union-attr]
    assert f"\r\nDTSTART:{start}\r\n".encode() in ics
    assert b"RSVP=TRUE" in ics
    assert_blind(ics, participant)


def test_a_cancellation_is_icalendars_bytes(participant: Any, coordinator: Any) -> None:
    book_v10(participant, coordinator)
    with time_machine.travel(BOOKED, tick=False):
        visit_cancel(visit=v10(participant), by=coordinator, reason="not needed")
    visit = v10(participant)
    assert visit.status == ScheduledVisit.Status.CANCELLED

    ics = invite_bytes(visit, "CANCEL", BOOKED + dt.timedelta(hours=1))

    assert b"\r\nMETHOD:CANCEL\r\n" in ics
    assert b"\r\nSTATUS:CANCELLED\r\n" in ics
    assert b"RSVP" not in ics
    assert_blind(ics, participant)


def test_a_reminder_of_a_booked_visit_carries_icalendars_bytes(
    participant: Any, coordinator: Any, mailoutbox: Any
) -> None:
    visit = book_v10(participant, coordinator)
    reminder = Reminder.objects.get(visit=visit, rule_code="P7D", channel="email")
    mailoutbox.clear()

    with time_machine.travel(reminder.due_at, tick=False):
        assert reminder_send(reminder.pk) == "sent"
        expected = icalendar_bytes(visit, "REQUEST")
        with translation.override(participant.language):
            description = participant_visit_event(visit).description

    [message] = mailoutbox
    ics = calendar_part(message)
    assert ics == expected
    # The text is the same event's description (written once for both).
    assert message.body == description
    booked = {"en": "Status: booked", "ja": "状況: 予約済み"}[participant.language]
    assert booked in message.body.splitlines()
    assert_blind(ics, participant)
    assert_blind((message.subject + message.body).encode(), participant)
