"""Webhooks end to end: planned with the change, sent through the outbox to a real receiver on
127.0.0.1, retried with the outbox's backoff, signed, de-duplicable, scoped to their site."""

from __future__ import annotations

import datetime as dt
import socket
from collections import Counter

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import transaction

from scheduler.models import Membership, Reminder, WebhookDelivery
from scheduler.outbox.sweep import reminders_retry, reminders_sweep
from scheduler.outbox.webhooks import signed_headers, url_problem
from scheduler.services import participant_enroll, participant_withdraw, visit_book
from scheduler.webhooks import webhook_subscription_create, webhook_subscription_disable
from tests.webhooks.conftest import UTC, Receiver, World, subscribe

pytestmark = pytest.mark.django_db
ENROLLED_AT = dt.datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
BOOKED_AT = dt.datetime(2026, 3, 16, 8, 0, tzinfo=UTC)
MINUTE = dt.timedelta(minutes=1)


def enroll(world: World, study_id: str, capture) -> None:
    participant = world.people[study_id]
    with time_machine.travel(ENROLLED_AT, tick=False), capture(execute=True):
        participant_enroll(
            participant=participant,
            on=ENROLLED_AT.date(),
            arm=participant.protocol_version.arm_set.get(code="ANI"),
        )


def book_v4(world: World, study_id: str, capture) -> None:
    """V4 (window 2026-03-27..04-02) on 2026-03-30 at 09:30 local."""
    with time_machine.travel(BOOKED_AT, tick=False), capture(execute=True):
        visit_book(
            visit=world.visit(study_id, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),
            by=world.system,
        )


def sweep_at(moment: dt.datetime, capture) -> list[int]:
    with time_machine.travel(moment, tick=False), capture(execute=True):
        return reminders_sweep()


def enrolled_payload(world: World) -> dict:
    participant = world.people["BERLIN-001"]
    return {
        "type": "participant.enrolled",
        "timestamp": "2026-01-12T09:00:00Z",
        "data": {
            "trial": "niams-ani-vascular",
            "site": "berlin",
            "participant": {
                "id": participant.pk,
                "study_id": "BERLIN-001",
                "status": "enrolled",
                "enrolled_at": "2026-01-12T09:00:00Z",
                "enrolled_on": "2026-01-12",
                "ended_on": None,
            },
        },
    }


def booked_payload(world: World) -> dict:
    visit = world.visit("BERLIN-001", "V4")
    payload = enrolled_payload(world)
    return {
        "type": "visit.booked",
        "timestamp": "2026-03-16T08:00:00Z",
        "data": {
            **payload["data"],
            "visit": {
                "id": visit.pk,
                "code": "V4",
                "status": "booked",
                "target_date": "2026-03-30",
                "window_start": "2026-03-27",
                "window_end": "2026-04-02",
                # 09:30 in Berlin on the day after clocks went forward (CEST, UTC+2).
                "booked_start": "2026-03-30T07:30:00Z",
                "booked_date": "2026-03-30",
                "actual_date": None,
                "version": 2,
            },
        },
    }


def epoch(moment: dt.datetime) -> str:
    return str(int(moment.timestamp()))


@pytest.mark.parametrize("fails_after_storing", [False, True], ids=["fails", "answer-lost"])
def test_webhook_receiver_failing_twice_gets_each_event_once(
    world, receiver: Receiver, django_capture_on_commit_callbacks, fails_after_storing
) -> None:
    subscription = subscribe(world, receiver)
    receiver.fail_first = 2
    receiver.fails_after_storing = fails_after_storing
    capture = django_capture_on_commit_callbacks

    enroll(world, "BERLIN-001", capture)  # attempt 1, right after commit: 500
    sweep_at(ENROLLED_AT + MINUTE / 2, capture)  # not due yet: backoff is one minute
    sweep_at(ENROLLED_AT + MINUTE, capture)  # attempt 2: 500, next in two minutes
    sweep_at(ENROLLED_AT + 2 * MINUTE, capture)  # not due
    sweep_at(ENROLLED_AT + 3 * MINUTE, capture)  # attempt 3: 204
    sweep_at(ENROLLED_AT + 60 * MINUTE, capture)  # nothing left to send
    book_v4(world, "BERLIN-001", capture)
    sweep_at(BOOKED_AT + MINUTE, capture)
    sweep_at(BOOKED_AT + 3 * MINUTE, capture)
    sweep_at(BOOKED_AT + 60 * MINUTE, capture)

    deliveries = list(WebhookDelivery.objects.order_by("occurred_at"))
    enrolled_id, booked_id = (d.message_id for d in deliveries)
    assert [(a.webhook_id, a.timestamp, a.answered) for a in receiver.attempts] == [
        (enrolled_id, epoch(ENROLLED_AT), 500),
        (enrolled_id, epoch(ENROLLED_AT + MINUTE), 500),
        (enrolled_id, epoch(ENROLLED_AT + 3 * MINUTE), 204),
        (booked_id, epoch(BOOKED_AT), 500),
        (booked_id, epoch(BOOKED_AT + MINUTE), 500),
        (booked_id, epoch(BOOKED_AT + 3 * MINUTE), 204),
    ]
    # Every attempt of a message is the same bytes; only the timestamp and signature change.
    assert {a.webhook_id: a.body for a in receiver.attempts} == {
        d.message_id: d.body.encode() for d in deliveries
    }
    assert len({(a.webhook_id, a.body) for a in receiver.attempts}) == 2
    assert receiver.payloads() == [enrolled_payload(world), booked_payload(world)]
    assert receiver.refused_signatures == 0
    assert receiver.duplicates == (
        Counter({enrolled_id: 2, booked_id: 2}) if fails_after_storing else Counter()
    )
    assert list(
        Reminder.objects.filter(channel="webhook")
        .order_by("due_at")
        .values_list("rule_code", "status", "attempts", "provider_message_id", "last_error")
    ) == [
        (f"wh{subscription.pk}:participant.enrolled", "sent", 3, enrolled_id, ""),
        (f"wh{subscription.pk}:visit.booked:v2", "sent", 3, booked_id, ""),
    ]


def test_webhook_rolled_back_change_sends_nothing(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    participant = world.people["BERLIN-001"]
    with (
        time_machine.travel(ENROLLED_AT, tick=False),
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        participant_enroll(participant=participant, on=ENROLLED_AT.date())
        raise RuntimeError("something after the enrollment failed")
    sweep_at(ENROLLED_AT + 10 * MINUTE, django_capture_on_commit_callbacks)
    assert receiver.attempts == []
    assert list(Reminder.objects.filter(channel="webhook")) == []
    assert list(WebhookDelivery.objects.all()) == []


def test_webhook_subscriber_of_one_site_gets_nothing_of_another(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    enroll(world, "TOKYO-001", django_capture_on_commit_callbacks)
    book_v4(world, "TOKYO-001", django_capture_on_commit_callbacks)
    assert receiver.attempts == []
    assert list(Reminder.objects.filter(channel="webhook")) == []


def test_webhook_subscription_refused_outside_the_owners_sites(world, receiver) -> None:
    with pytest.raises(ValidationError) as refused:
        webhook_subscription_create(
            owner=world.system,
            trial=world.trial,
            sites=[world.berlin, world.tokyo],
            url="http://ehr.example.org/hooks",
            events=["visit.booked", "visit.flew"],
            by=world.system,
        )
    assert refused.value.message_dict == {
        "sites": ["berlin-ehr does not act as a site system of niams-ani-vascular at tokyo"],
        "events": [
            "unknown event(s) visit.flew; the events are visit.booked, visit.moved, visit.done, "
            "visit.missed, visit.cancelled, participant.enrolled, participant.withdrawn"
        ],
        "url": ["events are only sent over https"],
    }


def test_webhook_final_answer_makes_the_row_dead_with_the_status_only(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    receiver.answer = 410
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    sweep_at(ENROLLED_AT + 60 * MINUTE, django_capture_on_commit_callbacks)
    assert [a.answered for a in receiver.attempts] == [410]
    assert list(
        Reminder.objects.filter(channel="webhook").values_list("status", "attempts", "last_error")
    ) == [("dead", 1, "the receiver answered HTTP 410; it will not be retried")]


@pytest.mark.parametrize("status", [408, 429, 503])
def test_webhook_transient_answers_are_retried(
    world, receiver: Receiver, django_capture_on_commit_callbacks, status
) -> None:
    subscribe(world, receiver)
    receiver.answer = status
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    assert list(
        Reminder.objects.filter(channel="webhook").values_list(
            "status", "attempts", "next_attempt_at", "last_error"
        )
    ) == [("failed", 1, ENROLLED_AT + MINUTE, f"the receiver answered HTTP {status}")]


@pytest.mark.parametrize(
    ("status", "header", "waited", "said"),
    [
        # Later than the backoff's first minute: not before then.
        (503, "1800", 30 * MINUTE, " (Retry-After: 1800 s)"),
        (429, " 120 ", 2 * MINUTE, " (Retry-After: 120 s)"),
        # An HTTP date, two hours after the attempt (09:00 UTC).
        (503, "Mon, 12 Jan 2026 11:00:00 GMT", 120 * MINUTE, " (Retry-After: 7200 s)"),
        # The two obsolete date forms RFC 9110 still asks a recipient to read.
        (503, "Monday, 12-Jan-26 10:00:00 GMT", 60 * MINUTE, " (Retry-After: 3600 s)"),
        (503, "Mon Jan 12 09:30:00 2026", 30 * MINUTE, " (Retry-After: 1800 s)"),
        # Sooner than the backoff: the backoff.
        (429, "10", MINUTE, " (Retry-After: 10 s)"),
        # At most a day, whatever it asks.
        (503, "99999999999999", 24 * 60 * MINUTE, " (Retry-After: 86400 s)"),
        (503, "Fri, 01 Jan 2100 00:00:00 GMT", 24 * 60 * MINUTE, " (Retry-After: 86400 s)"),
        # Past, zero, unreadable or not ASCII digits: as if none were sent.
        (503, "Mon, 12 Jan 2026 08:00:00 GMT", MINUTE, ""),
        (503, "0", MINUTE, ""),
        (503, "-60", MINUTE, ""),
        (503, "1.5", MINUTE, ""),
        (503, "soon", MINUTE, ""),
        (503, "\u0661\u0662\u0660", MINUTE, ""),  # Arabic-Indic 120
    ],
)
def test_webhook_retry_after_is_honoured_when_later_than_the_backoff(
    world, receiver: Receiver, django_capture_on_commit_callbacks, status, header, waited, said
) -> None:
    subscribe(world, receiver)
    receiver.answer, receiver.retry_after = status, header.encode("utf-8").decode("latin-1")
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)

    assert list(
        Reminder.objects.filter(channel="webhook").values_list(
            "status", "attempts", "next_attempt_at", "last_error"
        )
    ) == [("failed", 1, ENROLLED_AT + waited, f"the receiver answered HTTP {status}{said}")]
    # Not sent again before then, and sent then.
    receiver.answer, receiver.retry_after = 204, None
    sweep_at(ENROLLED_AT + waited - dt.timedelta(seconds=1), django_capture_on_commit_callbacks)
    assert len(receiver.attempts) == 1
    sweep_at(ENROLLED_AT + waited, django_capture_on_commit_callbacks)
    assert [a.answered for a in receiver.attempts] == [status, 204]


def test_webhook_unreachable_receiver_is_retried_then_dead(
    world, receiver: Receiver, django_capture_on_commit_callbacks, settings
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subscription = subscribe(world, receiver)
    subscription.url = f"http://127.0.0.1:{port}/hooks"
    subscription.save(update_fields=["url"])
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    # Backoff 1, 2, 4, 8 minutes: the fifth attempt is the last.
    for minutes in (1, 3, 7, 15, 60):
        sweep_at(ENROLLED_AT + minutes * MINUTE, django_capture_on_commit_callbacks)
    assert list(
        Reminder.objects.filter(channel="webhook").values_list("status", "attempts", "last_error")
    ) == [("dead", settings.REMINDER_MAX_ATTEMPTS, "could not connect to the receiver")]


def test_webhook_disabled_subscription_sends_nothing_more(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscription = subscribe(world, receiver)
    receiver.fail_first = 5
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    webhook_subscription_disable(subscription=subscription, by=world.system)
    sweep_at(ENROLLED_AT + 60 * MINUTE, django_capture_on_commit_callbacks)
    book_v4(world, "BERLIN-001", django_capture_on_commit_callbacks)
    assert [a.answered for a in receiver.attempts] == [500]
    assert list(Reminder.objects.filter(channel="webhook").values_list("status", "last_error")) == [
        ("cancelled", "the subscription was disabled")
    ]


def test_webhook_revoked_membership_stops_planned_deliveries(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    receiver.fail_first = 1
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    Membership.objects.filter(user=world.system).delete()
    sweep_at(ENROLLED_AT + 60 * MINUTE, django_capture_on_commit_callbacks)
    assert [a.answered for a in receiver.attempts] == [500]
    assert list(Reminder.objects.filter(channel="webhook").values_list("status", "last_error")) == [
        ("cancelled", "the subscriber no longer acts as a site system at this site")
    ]


def test_webhook_signature_matches_the_specs_example() -> None:
    # The example of the Standard Webhooks specification (and of its reference libraries).
    headers = signed_headers(
        secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=dt.datetime.fromtimestamp(1614265330, tz=UTC),
        body=b'{"test": 2432232314}',
    )
    assert headers == {
        "Content-Type": "application/json",
        "User-Agent": "trial-visit-scheduler-webhooks/1",
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


@pytest.mark.parametrize(
    ("url", "loopback_allowed", "problem"),
    [
        ("https://ehr.example.org/hooks", False, None),
        ("http://127.0.0.1:8080/hooks", True, None),
        ("http://localhost/hooks", True, None),
        (
            "http://127.0.0.1:8080/hooks",
            False,
            "plain http is only allowed to this machine in development; use https",
        ),
        ("http://ehr.example.org/hooks", True, "events are only sent over https"),
        ("ftp://ehr.example.org/hooks", True, "events are only sent over https"),
        (
            "https://user:pw@ehr.example.org/hooks",
            False,
            "put no credentials in the URL: receivers check the signature instead",
        ),
        ("https:///hooks", False, "the URL needs a host"),
    ],
)
def test_webhook_url_rules(settings, url, loopback_allowed, problem) -> None:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = loopback_allowed
    assert url_problem(url) == problem


def test_webhook_retry_of_a_dead_delivery_sends_the_same_message(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    receiver.answer = 404  # the receiver's route was missing
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    row = Reminder.objects.get(channel="webhook")
    assert row.status == "dead"
    receiver.answer = 204  # fixed; a coordinator retries it from the admin
    with time_machine.travel(ENROLLED_AT + 60 * MINUTE, tick=False):
        reminders_retry(reminders=[row])
    sweep_at(ENROLLED_AT + 61 * MINUTE, django_capture_on_commit_callbacks)
    message_id = WebhookDelivery.objects.get().message_id
    assert [(a.webhook_id, a.answered) for a in receiver.attempts] == [
        (message_id, 404),
        (message_id, 204),
    ]
    assert receiver.payloads() == [enrolled_payload(world)]


def test_webhook_withdrawal_announces_each_cancelled_visit_then_the_withdrawal(
    world, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver, events=("visit.cancelled", "participant.withdrawn"))
    enroll(world, "BERLIN-001", django_capture_on_commit_callbacks)
    participant = world.people["BERLIN-001"]
    withdrawn_at = dt.datetime(2026, 4, 10, 9, tzinfo=UTC)
    with (
        time_machine.travel(withdrawn_at, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        closure = participant_withdraw(
            participant=participant, on=withdrawn_at.date(), by=world.system, reason="moved away"
        )
    payloads = receiver.payloads()
    assert [(p["type"], p["data"].get("visit", {}).get("code")) for p in payloads] == [
        *(("visit.cancelled", v.code) for v in closure.cancelled_visits),
        ("participant.withdrawn", None),
    ]
    assert {p["data"]["visit"]["status"] for p in payloads[:-1]} == {"cancelled"}
    assert payloads[-1]["data"]["participant"] == {
        "id": participant.pk,
        "study_id": "BERLIN-001",
        "status": "withdrawn",
        "enrolled_at": "2026-01-12T09:00:00Z",
        "enrolled_on": "2026-01-12",
        "ended_on": "2026-04-10",
    }


def test_webhook_secrets_survive_a_key_rotation(settings) -> None:
    from cryptography.fernet import Fernet

    from scheduler.outbox.webhooks import secret_decrypt, secret_encrypt, secret_new

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOK_SECRET_KEYS = [old]
    secret = secret_new()
    stored = secret_encrypt(secret)
    settings.WEBHOOK_SECRET_KEYS = [new, old]
    assert secret_decrypt(stored) == secret
    assert secret not in stored
