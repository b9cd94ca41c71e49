"""Adversarial review of the reminders and invites pipeline: participants in another zone than
their site's, clock changes, calendar changes while a reminder is being sent, gateway faults,
preferences changed after planning. The outside world (Twilio's HTTP layer, the mail server) is
faked as in the other outbox tests; everything else is the product's own code."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.test import override_settings
from twilio.http.response import Response

from scheduler.engine.localtime import local_to_utc
from scheduler.engine.reminders import (
    Recipients,
    ReminderRuleSpec,
    VisitFacts,
    in_quiet_hours,
    plan_reminders,
)
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.sweep import reminder_send, reminders_sweep
from scheduler.services import (
    participant_details_save,
    participant_enroll,
    participant_withdraw,
    visit_book,
    visit_cancel,
)
from tests.factories import SiteFactory, participant_for
from tests.reminders.fakes import FakeTwilioHttp

UTC = dt.UTC
pytestmark = pytest.mark.django_db
TWILIO = {
    "SMS_BACKEND": "tests.reminders.test_adversarial_review.HookedTwilioBackend",
    "TWILIO_ACCOUNT_SID": "ACtest",
    "TWILIO_AUTH_TOKEN": "secret",
    "TWILIO_FROM_NUMBER": "+15550000000",
}


class HookedTwilioHttp(FakeTwilioHttp):
    """Twilio's HTTP API (fakes.FakeTwilioHttp), which can also run something while it holds a
    request (what a coordinator does meanwhile) and answer with a body of its choice."""

    during: ClassVar[list[Any]] = []
    bodies: ClassVar[list[str | None]] = []

    def request(self, method: str, uri: str, *args: Any, **kwargs: Any) -> Response:
        if self.during:
            self.during.pop(0)()
        answer = super().request(method, uri, *args, **kwargs)
        body = self.bodies.pop(0) if self.bodies else None
        return answer if body is None else Response(answer.status_code, body)


class HookedTwilioBackend:
    def __new__(cls) -> Any:
        from scheduler.outbox.sms import TwilioSmsBackend

        return TwilioSmsBackend(http_client=HookedTwilioHttp())


@pytest.fixture
def gateway():
    FakeTwilioHttp.script = []
    FakeTwilioHttp.requests = []
    HookedTwilioHttp.during = []
    HookedTwilioHttp.bodies = []
    with override_settings(**TWILIO):
        yield HookedTwilioHttp


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator")


def enrolled(import_seed, *, zone: str, site_zone: str = "Europe/Berlin", **fields: Any):
    site = SiteFactory.create(
        code="berlin",
        name="Charité Berlin",
        timezone=site_zone,
        email="visits@charite.example",
        phone="+49 30 450 50",
    )
    with time_machine.travel(dt.datetime(2026, 1, 10, 12, tzinfo=UTC), tick=False):
        participant = participant_for(
            import_seed("000"),
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            email="p1@example.org",
            phone="+15551234567",
            reminder_channels=["email", "sms"],
            timezone=zone,
            **fields,
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 10),
            arm=participant.protocol_version.arm_set.get(code="ANI"),
        )
    return participant


def visit(participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )


def rows(participant, **filters: Any) -> list[tuple]:
    return list(
        Reminder.objects.filter(participant=participant, **filters)
        .order_by("due_at", "rule_code", "channel")
        .values_list("rule_code", "channel", "due_at", "status")
    )


# ----------------------------------------------------------------------------------------
# When: participant reminders on the participant's clock, coordinator ones on the site's, across
# zones with odd offsets and across clock changes in both hemispheres (pure engine).

BERLIN = "Europe/Berlin"


def _participant_rule(at: dt.time) -> ReminderRuleSpec:
    return ReminderRuleSpec(code="R", event="before_visit", at=at, days=1, channels=("sms",))


@pytest.mark.parametrize(
    ("zone", "visit_day", "at", "expected"),
    [
        # A Berlin visit on Mon 2026-03-30 09:30 CEST (07:30Z), each participant's 09:00 the
        # day before their own date of it.
        ("America/St_Johns", dt.date(2026, 3, 30), dt.time(9), dt.datetime(2026, 3, 29, 11, 30)),
        ("Asia/Kathmandu", dt.date(2026, 3, 30), dt.time(9), dt.datetime(2026, 3, 29, 3, 15)),
        ("Pacific/Chatham", dt.date(2026, 3, 30), dt.time(9), dt.datetime(2026, 3, 28, 19, 15)),
        ("Australia/Lord_Howe", dt.date(2026, 3, 30), dt.time(9), dt.datetime(2026, 3, 28, 22)),
        ("Pacific/Kiritimati", dt.date(2026, 3, 30), dt.time(9), dt.datetime(2026, 3, 28, 19)),
        ("Africa/Casablanca", dt.date(2026, 3, 30), dt.time(9), dt.datetime(2026, 3, 29, 8)),
        # Gaps (read with the offset before the jump) and folds (first run), both hemispheres.
        (
            "Australia/Lord_Howe",
            dt.date(2026, 10, 5),
            dt.time(2, 15),
            dt.datetime(2026, 10, 3, 15, 45),
        ),
        (
            "Australia/Lord_Howe",
            dt.date(2026, 4, 6),
            dt.time(1, 45),
            dt.datetime(2026, 4, 4, 14, 45),
        ),
        ("Pacific/Chatham", dt.date(2026, 9, 28), dt.time(3), dt.datetime(2026, 9, 26, 14, 15)),
        ("Pacific/Chatham", dt.date(2026, 4, 6), dt.time(3), dt.datetime(2026, 4, 4, 13, 15)),
        ("America/St_Johns", dt.date(2026, 3, 9), dt.time(2, 30), dt.datetime(2026, 3, 8, 6)),
        ("America/St_Johns", dt.date(2026, 11, 2), dt.time(1, 30), dt.datetime(2026, 11, 1, 4)),
        (
            "Africa/Casablanca",
            dt.date(2026, 2, 16),
            dt.time(2, 30),
            dt.datetime(2026, 2, 15, 1, 30),
        ),
        (
            "Africa/Casablanca",
            dt.date(2026, 3, 23),
            dt.time(2, 30),
            dt.datetime(2026, 3, 22, 2, 30),
        ),
    ],
)
def test_participant_reminders_follow_their_own_zone_and_the_clock_change_rule(
    zone, visit_day, at, expected
) -> None:
    start = (
        local_to_utc(visit_day, dt.time(9, 30), BERLIN)
        if visit_day == dt.date(2026, 3, 30)
        else local_to_utc(visit_day, dt.time(12), zone)
    )
    booked = VisitFacts("visit:1", "V4", "booked", start.date(), start.date(), start)
    opens = VisitFacts("visit:2", "V5", "planned", dt.date(2026, 3, 30), dt.date(2026, 4, 5))
    coordinator = ReminderRuleSpec(
        code="C_OPEN", event="window_opens_unbooked", at=dt.time(8), channels=("in_app",)
    )
    people = Recipients(zone, BERLIN, frozenset({"sms"}))

    due = plan_reminders(
        [_participant_rule(at), coordinator],
        [booked, opens],
        [],
        people,
        dt.datetime(2000, 1, 1, tzinfo=UTC),
    )

    assert [(d.rule_code, d.due_at) for d in due if d.rule_code == "R"] == [
        ("R", expected.replace(tzinfo=UTC))
    ]
    # The coordinator's "window opens" is 08:00 on the site's clock (CEST), whoever the
    # participant is.
    assert [d.due_at for d in due if d.rule_code == "C_OPEN"] == [
        dt.datetime(2026, 3, 30, 6, tzinfo=UTC)
    ]


# ----------------------------------------------------------------------------------------
# What a reminder says: the visit as it is now, on the site's clock and the participant's.


def test_a_moved_visits_reminder_names_its_new_day_and_time_with_both_zones(
    import_seed, coordinator, mailoutbox
) -> None:
    participant = enrolled(import_seed, zone="America/St_Johns")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 27),  # Friday 09:30 CET, before Berlin's change
            local_time=dt.time(9, 30),
            by=coordinator,
        )
    with time_machine.travel(dt.datetime(2026, 3, 20, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),  # Monday 09:30 CEST, after it
            local_time=dt.time(9, 30),
            by=coordinator,
            reason="participant asked",
        )
    pending = rows(participant, visit=visit(participant, "V4"), rule_code="P1D", status="pending")
    mailoutbox.clear()
    email = Reminder.objects.get(
        visit=visit(participant, "V4"), rule_code="P1D", channel="email", status="pending"
    )
    with time_machine.travel(email.due_at, tick=False):
        assert reminder_send(email.pk) == "sent"

    assert pending == [
        ("P1D", "email", dt.datetime(2026, 3, 29, 11, 30, tzinfo=UTC), "pending"),
        ("P1D", "sms", dt.datetime(2026, 3, 29, 11, 30, tzinfo=UTC), "pending"),
    ]
    [message] = mailoutbox
    assert (
        message.subject
        == "Reminder: Treatment visit 3 (week 8), Monday, March 30, 2026 at 9:30\u202fAM"
    )
    assert message.body.splitlines()[:2] == [
        "When: Monday, March 30, 2026 at 9:30\u202fAM (Europe/Berlin time)",
        "That is Monday, March 30, 2026 at 5:00\u202fAM where you are (America/St_Johns time).",
    ]


def test_an_sms_to_a_participant_in_another_zone_gives_the_time_on_their_clock(
    import_seed, coordinator, gateway
) -> None:
    participant = enrolled(import_seed, zone="Pacific/Kiritimati")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(18),
            by=coordinator,
        )
    sms = Reminder.objects.get(visit__participant=participant, rule_code="P1D", channel="sms")
    with time_machine.travel(sms.due_at, tick=False):
        assert reminder_send(sms.pk) == "sent"

    # Sent at 09:00 Monday in Kiritimati, the day before the visit on the participant's clock.
    assert sms.due_at == dt.datetime(2026, 3, 29, 19, tzinfo=UTC)
    body = gateway.requests[-1]["data"]["Body"]
    assert (
        "That is Tuesday, March 31, 2026 at 6:00\u202fAM where you are (Pacific/Kiritimati time)"
        in body
    ), body


# ----------------------------------------------------------------------------------------
# The calendar changes while a reminder is being sent.


def _cancel(participant, coordinator) -> None:
    visit_cancel(visit=visit(participant, "V4"), by=coordinator, reason="unwell")


def _move(participant, coordinator) -> None:
    visit_book(
        visit=visit(participant, "V4"),
        local_date=dt.date(2026, 4, 1),
        local_time=dt.time(10),
        by=coordinator,
        reason="participant asked",
    )


def _withdraw(participant, coordinator) -> None:
    participant_withdraw(
        participant=participant, on=dt.date(2026, 3, 29), by=coordinator, reason="moved away"
    )


def _opt_out(participant, coordinator) -> None:
    participant.refresh_from_db()
    participant.reminders_opt_out = True
    participant_details_save(
        participant=participant, changed_fields=["reminders_opt_out"], by=coordinator
    )


@pytest.mark.parametrize("change", [_cancel, _move, _withdraw, _opt_out])
def test_a_change_saved_while_a_reminder_is_sent_and_refused_stops_its_retry(
    import_seed, coordinator, gateway, change
) -> None:
    participant = enrolled(import_seed, zone="America/St_Johns")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),
            by=coordinator,
        )
    sms = Reminder.objects.get(visit__participant=participant, rule_code="P1D", channel="sms")
    # The coordinator saves the change while Twilio holds the request; Twilio answers 503.
    gateway.script[:] = [503]
    gateway.during[:] = [lambda: change(participant, coordinator)]
    with time_machine.travel(sms.due_at, tick=False):
        first = reminder_send(sms.pk)
    sms.refresh_from_db()
    with time_machine.travel(sms.next_attempt_at, tick=False):
        second = reminder_send(sms.pk)
    sms.refresh_from_db()

    assert first == "failed"
    assert len(gateway.requests) == 1, gateway.requests[-1]["data"]["Body"]
    assert (second, sms.status) == ("not claimed", "cancelled")


def test_a_reminder_swept_after_its_visit_began_is_not_sent(
    import_seed, coordinator, mailoutbox
) -> None:
    participant = enrolled(import_seed, zone="America/St_Johns")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),  # 07:30Z
            by=coordinator,
        )
    email = Reminder.objects.get(visit__participant=participant, rule_code="P1D", channel="email")
    mailoutbox.clear()
    # The outbox was down from before 2026-03-29 11:30Z (the reminder's moment) until after
    # the visit had begun.
    with time_machine.travel(dt.datetime(2026, 3, 30, 8, tzinfo=UTC), tick=False):
        result = reminder_send(email.pk)
    email.refresh_from_db()

    assert [m.subject for m in mailoutbox] == []
    assert (result, email.status) == ("not needed", "cancelled")


# ----------------------------------------------------------------------------------------
# Gateway faults.


def test_an_accepted_sms_whose_answer_cannot_be_read_is_never_sent_again(
    import_seed, coordinator, gateway
) -> None:
    participant = enrolled(import_seed, zone="Africa/Casablanca")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),
            by=coordinator,
        )
    sms = Reminder.objects.get(visit__participant=participant, rule_code="P1D", channel="sms")
    gateway.bodies[:] = ["<html><body>Message queued</body></html>"]  # a proxy's page, 201
    with time_machine.travel(sms.due_at, tick=False):
        first = reminder_send(sms.pk)
    sms.refresh_from_db()
    with time_machine.travel(sms.next_attempt_at + dt.timedelta(minutes=5), tick=False):
        reminders_sweep()
        second = reminder_send(sms.pk)
    sms.refresh_from_db()

    assert gateway.requests[0]["status"] == 201
    assert len(gateway.requests) == 1
    assert (first, second, sms.status) == ("unknown", "not claimed", "unknown")


def test_a_reminder_retried_after_a_gateway_failure_does_not_go_in_quiet_hours(
    import_seed, coordinator, gateway
) -> None:
    participant = enrolled(
        import_seed, zone="Asia/Kathmandu", quiet_hours=(dt.time(22), dt.time(9, 30))
    )
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),  # 13:15 in Kathmandu
            by=coordinator,
        )
    sms = Reminder.objects.get(visit__participant=participant, rule_code="P1D", channel="sms")
    gateway.script[:] = [503]
    with time_machine.travel(sms.due_at, tick=False):
        assert reminder_send(sms.pk) == "failed"
    sms.refresh_from_db()
    retry = sms.next_attempt_at.astimezone(ZoneInfo("Asia/Kathmandu"))

    # 09:00 is quiet: planned for 21:59 the evening before (+05:45).
    assert sms.due_at == dt.datetime(2026, 3, 28, 16, 14, tzinfo=UTC)
    assert not in_quiet_hours(retry.time(), dt.time(22), dt.time(9, 30)), retry


# ----------------------------------------------------------------------------------------
# Preferences changed after planning.


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        # 09:00 in Kathmandu (+05:45) on 2026-03-27.
        ("timezone", "Asia/Kathmandu", dt.datetime(2026, 3, 27, 3, 15, tzinfo=UTC)),
        # Quiet 08:00-10:00 Berlin: one minute before, 07:59 CET.
        ("quiet_hours", (dt.time(8), dt.time(10)), dt.datetime(2026, 3, 27, 6, 59, tzinfo=UTC)),
    ],
)
def test_a_first_invite_follows_a_zone_or_quiet_hours_changed_after_it_was_planned(
    import_seed, coordinator, field, value, expected
) -> None:
    participant = enrolled(import_seed, zone=BERLIN)
    planned = Reminder.objects.get(
        visit=visit(participant, "V5"), event="invite", status="pending"
    ).due_at
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        if field == "timezone":
            participant.timezone = value
            fields = ["timezone"]
        else:
            participant.quiet_hours_start, participant.quiet_hours_end = value
            fields = ["quiet_hours_start", "quiet_hours_end"]
        participant_details_save(participant=participant, changed_fields=fields, by=coordinator)

    assert planned == dt.datetime(2026, 3, 27, 8, tzinfo=UTC)  # 09:00 CET
    assert list(
        Reminder.objects.filter(
            visit=visit(participant, "V5"), event="invite", status="pending"
        ).values_list("due_at", flat=True)
    ) == [expected]


@pytest.mark.parametrize(
    ("status", "result", "error"),
    [
        (
            400,
            "dead",
            "Twilio 400: Invalid 'To' Phone Number: The number [phone number] is not valid",
        ),
        (503, "failed", "Twilio 503: Service Unavailable"),
    ],
)
def test_a_problem_details_answer_from_twilio_is_read_like_its_classic_errors(
    import_seed, coordinator, gateway, status, result, error
) -> None:
    """Twilio's RFC 9457 answers (TwilioServiceException, not a TwilioRestException): a 4xx
    gives up at once, a 5xx is retried; the words are kept, the number is not."""
    participant = enrolled(import_seed, zone=BERLIN)
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),
            by=coordinator,
        )
    sms = Reminder.objects.get(visit__participant=participant, rule_code="P1D", channel="sms")
    title = "Invalid 'To' Phone Number" if status == 400 else "Service Unavailable"
    detail = "The number +15551234567 is not valid" if status == 400 else None
    gateway.script[:] = [status]
    gateway.bodies[:] = [
        json.dumps(
            {
                "type": "https://www.twilio.com/docs/errors/21211",
                "title": title,
                "status": status,
                "code": 21211,
                "detail": detail,
            }
        )
    ]
    with time_machine.travel(sms.due_at, tick=False):
        assert reminder_send(sms.pk) == result
    sms.refresh_from_db()

    assert (sms.status, sms.attempts, sms.last_error) == (result, 1, error)


def test_a_retry_that_quiet_hours_would_push_past_the_visit_goes_in_them() -> None:
    """Kathmandu, quiet 22:00-09:30: a retry at 22:05 waits for 09:30, unless the visit
    begins by then (09:00 there): then it goes at 22:05, rather than after the visit."""
    from participants.models import Participant
    from scheduler.outbox.sweep import retry_at
    from trials.models import Site

    participant = Participant(
        timezone="Asia/Kathmandu",
        quiet_hours_start=dt.time(22),
        quiet_hours_end=dt.time(9, 30),
        site=Site(timezone=BERLIN),
    )
    at = dt.datetime(2026, 3, 28, 16, 20, tzinfo=UTC)  # 22:05 in Kathmandu (+05:45)
    later = dt.datetime(2026, 3, 29, 3, 45, tzinfo=UTC)  # 09:30 the next morning there

    def reminder(visit_starts: dt.datetime | None, audience: str = "participant") -> Reminder:
        booked = ScheduledVisit(booked_start=visit_starts)
        return Reminder(participant=participant, visit=booked, audience=audience)

    assert retry_at(reminder(dt.datetime(2026, 3, 30, 7, 30, tzinfo=UTC)), at) == later
    assert retry_at(reminder(dt.datetime(2026, 3, 29, 3, 15, tzinfo=UTC)), at) == at
    assert retry_at(reminder(None), at) == later
    # A coordinator's reminder keeps no participant's quiet hours; 14:00 there is not quiet.
    assert retry_at(reminder(None, audience="coordinator"), at) == at
    assert retry_at(reminder(None), at - dt.timedelta(hours=8)) == at - dt.timedelta(hours=8)
