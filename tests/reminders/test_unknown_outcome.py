"""A send whose outcome was not recorded: held through a database outage, re-sent as the same
message on channels whose receiver de-duplicates, parked as "unknown" for a person otherwise.

Faults come from the outside world only: a Twilio that accepts (Twilio's HTTP layer), and a
database that refuses statements for a while (Django's execute wrapper raising what a lost
server raises)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import OperationalError, connection, transaction
from django.test import override_settings
from django.urls import reverse

from config.celery import app
from scheduler.calendars.events import UID_DOMAIN
from scheduler.models import Reminder
from scheduler.outbox.dispatch import SEND_TASK, send_after_commit
from scheduler.outbox.outcomes import (
    Outcome,
    journal_pending,
    journal_write,
    outcome_record,
    outcomes_replay,
)
from scheduler.outbox.sms import TwilioSmsBackend
from scheduler.outbox.sweep import (
    NOT_TRIED,
    UNKNOWN_ERROR,
    reminder_send,
    reminders_decide_unknown,
    reminders_send_batch,
    reminders_sweep,
)
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, booked_ahead, member_of_every_trial_site, participant_for
from tests.outages import Blackhole, configured

UTC = dt.UTC
pytestmark = pytest.mark.django_db
CLAIMED = dt.datetime(2026, 3, 20, 13, 0, tzinfo=UTC)
AFTER_LEASE = CLAIMED + dt.timedelta(seconds=301)


@pytest.fixture
def participant(import_seed: Any) -> Any:
    site = SiteFactory.create(code="nih", name="NIH Clinical Center", timezone="America/New_York")
    with time_machine.travel(dt.datetime(2026, 1, 10, 12, tzinfo=UTC), tick=False):
        enrolled = participant_for(
            import_seed("000"),
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            email="p1@example.org",
            phone="+15551234567",
            reminder_channels=["email", "sms"],
        )
        participant_enroll(participant=enrolled, on=dt.date(2026, 1, 10))
    Reminder.objects.filter(participant=enrolled).delete()
    return enrolled


def row(participant: Any, channel: str, rule_code: str = "P1D", **fields: Any) -> Reminder:
    """A participant reminder of channel `channel` about their first visit (booked in a
    month: a reminder of a visit not booked, or begun, is not sent), due at CLAIMED."""
    visit = participant.visits.order_by("target_date").first()
    booked_ahead([visit])
    return Reminder.objects.create(
        participant=participant,
        visit=visit,
        target_key=f"visit:{visit.pk}",
        rule_code=rule_code,
        event="before_visit",
        channel=channel,
        audience="participant",
        due_at=CLAIMED - dt.timedelta(minutes=1),
        next_attempt_at=CLAIMED - dt.timedelta(minutes=1),
        **fields,
    )


def state(reminder: Reminder) -> tuple[Any, ...]:
    reminder.refresh_from_db()
    return (reminder.status, reminder.attempts, reminder.last_error, reminder.provider_message_id)


# ----------------------------------------------------------------------------------------
# The lease expires: SMS waits for a person, email goes again as the same message


def test_lease_expiry_parks_an_sms_as_unknown_and_never_sends_it_again(
    participant: Any, twilio: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sms = row(participant, "sms", status="sending", claimed_at=CLAIMED, attempts=1)

    with django_capture_on_commit_callbacks(execute=True):
        assert reminders_sweep(now=AFTER_LEASE) == []
    with django_capture_on_commit_callbacks(execute=True):
        assert reminders_sweep(now=AFTER_LEASE + dt.timedelta(hours=1)) == []
    with time_machine.travel(AFTER_LEASE, tick=False):
        assert reminder_send(sms.pk) == "not claimed"  # a redelivered message sends nothing

    assert state(sms) == ("unknown", 1, UNKNOWN_ERROR, "")
    assert twilio.requests == []


def test_lease_expiry_sends_an_email_again_with_the_same_message_id(
    participant: Any, mailoutbox: Any, django_capture_on_commit_callbacks: Any
) -> None:
    email = row(participant, "email")
    with time_machine.travel(CLAIMED, tick=False):
        assert reminder_send(email.pk) == "sent"
    # The worker died after the server accepted and before the row said so.
    Reminder.objects.filter(pk=email.pk).update(
        status="sending", claimed_at=CLAIMED, sent_at=None, provider_message_id=""
    )

    with (
        time_machine.travel(AFTER_LEASE, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert reminders_sweep(now=AFTER_LEASE) == [email.pk]

    message_id = f"<reminder-{email.pk}@{UID_DOMAIN}>"
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [message_id, message_id]
    assert state(email) == ("sent", 2, "", message_id)


# ----------------------------------------------------------------------------------------
# The database is away when the outcome is written


# Outside a transaction, as in a worker: a refused statement does not doom the next one.
@pytest.mark.django_db(transaction=True)
def test_an_outcome_is_held_through_a_database_outage_then_recorded(
    participant: Any, journal: Path
) -> None:
    sms = row(participant, "sms", status="sending", claimed_at=CLAIMED, attempts=1)
    outcome = Outcome(
        reminder_id=sms.pk,
        claimed_at=CLAIMED,
        status="sent",
        sent_at=CLAIMED,
        provider_message_id="SM0001",
    )
    refused: list[str] = []
    held_on_disk: list[int] = []

    def database_away_for_three_updates(execute: Any, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE") and len(refused) < 3:
            refused.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, *args)

    def sleep(seconds: float) -> None:
        held_on_disk.append(len(journal_pending()))
        slept.append(seconds)

    slept: list[float] = []
    with connection.execute_wrapper(database_away_for_three_updates):
        assert outcome_record(outcome, sleep=sleep) is True

    assert len(refused) == 3
    assert slept == [0.5, 1.0, 2.0]
    assert held_on_disk == [1, 1, 1]  # on disk while it waited
    assert journal_pending() == []  # and gone once recorded
    assert state(sms) == ("sent", 1, "", "SM0001")


# Outside a transaction, as in a worker: a refused statement does not doom the next one.
@pytest.mark.django_db(transaction=True)
@override_settings(REMINDER_OUTCOME_RETRY_SECONDS=0)
def test_an_outcome_the_database_never_took_is_replayed_from_the_journal(
    participant: Any, journal: Path
) -> None:
    sms = row(participant, "sms", status="sending", claimed_at=CLAIMED, attempts=1)
    outcome = Outcome(
        reminder_id=sms.pk,
        claimed_at=CLAIMED,
        status="sent",
        sent_at=CLAIMED,
        provider_message_id="SM0002",
    )

    def database_away(execute: Any, sql: str, *args: Any) -> Any:
        raise OperationalError("could not connect to server")

    with connection.execute_wrapper(database_away):
        assert outcome_record(outcome, sleep=lambda seconds: None) is False
    assert [path.name for path in journal_pending()] == [
        f"reminder-{sms.pk}-20260320T130000000000.json"
    ]
    # The lease expired meanwhile: the sweep parked it. The held outcome still wins.
    reminders_sweep(now=AFTER_LEASE)
    assert state(sms)[0] == "unknown"

    assert outcomes_replay() == 1

    assert state(sms) == ("sent", 1, "", "SM0002")
    assert journal_pending() == []
    assert outcomes_replay() == 0


def test_a_held_failure_does_not_overwrite_a_later_claim(participant: Any) -> None:
    email = row(participant, "email", status="sending", claimed_at=AFTER_LEASE, attempts=2)
    journal_write(
        Outcome(
            reminder_id=email.pk,
            claimed_at=CLAIMED,
            status="failed",
            last_error="email not accepted: SMTPServerDisconnected",
            next_attempt_at=CLAIMED + dt.timedelta(minutes=1),
        )
    )

    assert outcomes_replay() == 1

    assert state(email) == ("sending", 2, "", "")


# ----------------------------------------------------------------------------------------
# A person decides: mark as sent, or send again (audited)


def test_mark_as_sent_records_who_and_why_and_sends_nothing(
    participant: Any, admin_client: Any, admin_user: Any, twilio: Any
) -> None:
    sms = row(participant, "sms", status="unknown", claimed_at=CLAIMED, attempts=1)
    url = reverse("admin:scheduler_reminder_mark_sent", args=[sms.pk])

    with member_of_every_trial_site(admin_user):
        refused = admin_client.post(url, {"reason": "   ", "_confirm": "1"})
        done = admin_client.post(
            url, {"reason": "She confirmed by phone it arrived", "_confirm": "1"}
        )

    assert refused.status_code == 200
    assert refused.context["form"].errors == {"reason": ["This field is required."]}
    assert done.status_code == 302
    sms.refresh_from_db()
    assert (sms.status, sms.sent_at, sms.attempts) == ("sent", CLAIMED, 1)
    latest = sms.history.latest()
    assert (latest.history_user, latest.history_change_reason, latest.status) == (
        admin_user,
        "marked as sent: She confirmed by phone it arrived",
        "sent",
    )
    assert twilio.requests == []


def test_send_again_queues_it_once_with_who_and_why(
    participant: Any,
    admin_client: Any,
    admin_user: Any,
    twilio: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sms = row(participant, "sms", status="unknown", claimed_at=CLAIMED, attempts=1)
    url = reverse("admin:scheduler_reminder_send_again", args=[sms.pk])

    with member_of_every_trial_site(admin_user):
        preview = admin_client.post(url, {"reason": "Not received, she says"})
        done = admin_client.post(url, {"reason": "Not received, she says", "_confirm": "1"})
    with django_capture_on_commit_callbacks(execute=True):
        assert reminders_sweep() == [sms.pk]
    with django_capture_on_commit_callbacks(execute=True):
        assert reminders_sweep() == []

    assert [(label, value) for label, value, _ in preview.context["outcome"]][2] == (
        "What happens",
        "sent again with the next sweep: the participant may get it twice",
    )
    assert done.status_code == 302
    assert state(sms) == ("sent", 1, "", "SM00000000000000000000000000000001")
    assert len(twilio.requests) == 1
    decided = sms.history.filter(history_change_reason__startswith="sent again").get()
    assert (decided.history_user, decided.history_change_reason, decided.status) == (
        admin_user,
        "sent again: Not received, she says",
        "pending",
    )


def test_a_decision_leaves_a_row_that_is_no_longer_unknown(
    participant: Any, admin_user: Any
) -> None:
    sent = row(participant, "sms", status="sent", claimed_at=CLAIMED, attempts=1)

    assert (
        reminders_decide_unknown(
            reminders=[sent], decision="send_again", by=admin_user, reason="double check"
        )
        == 0
    )
    with pytest.raises(ValueError, match="give a reason"):
        reminders_decide_unknown(reminders=[sent], decision="mark_sent", by=admin_user, reason="")
    assert state(sent) == ("sent", 1, "", "")


def test_the_start_page_lists_the_unknown_row_with_its_decision(
    participant: Any, admin_client: Any, admin_user: Any
) -> None:
    sms = row(participant, "sms", status="unknown", claimed_at=CLAIMED, attempts=1)

    with member_of_every_trial_site(admin_user):
        page = admin_client.get(reverse("admin:index"))
        (block,) = page.context["site_blocks"]
        outbox = next(s for s in block["sections"] if s.key == "outbox")
        listed = admin_client.get(outbox.counts[0].url)
        decision_page = admin_client.get(outbox.rows[0].action.url)

    assert [(str(c.label), c.number) for c in outbox.counts] == [("SMS, outcome unknown", 1)]
    assert [o.pk for o in listed.context["cl"].result_list] == [sms.pk]
    assert [(r.what, r.status, r.action.label) for r in outbox.rows] == [
        ("before_visit · SMS", "outcome unknown after 1 attempt", "Decide")
    ]
    assert outbox.rows[0].action.url == reverse("admin:scheduler_reminder_change", args=[sms.pk])
    assert decision_page.context["lifecycle_actions"] == [
        ("Mark as sent", reverse("admin:scheduler_reminder_mark_sent", args=[sms.pk])),
        ("Send again", reverse("admin:scheduler_reminder_send_again", args=[sms.pk])),
    ]


def test_lease_expiry_queues_a_webhook_again_its_receiver_dedupes_on_webhook_id(
    participant: Any,
) -> None:
    webhook = row(participant, "webhook", status="sending", claimed_at=CLAIMED, attempts=1)

    assert reminders_sweep(now=AFTER_LEASE) == [webhook.pk]

    assert state(webhook) == ("pending", 1, "", "")


# ----------------------------------------------------------------------------------------
# The broker is away when a change commits


@pytest.fixture
def broker_away() -> Any:
    """This process publishes to a port where nothing listens (the outside world: Redis down),
    instead of running tasks inline."""
    previous = (app.conf.task_always_eager, app.conf.broker_url)
    app.conf.task_always_eager = False
    app.conf.broker_url = "redis://127.0.0.1:9/0"  # discard port: connection refused
    app.amqp._producer_pool = None
    yield
    app.conf.task_always_eager, app.conf.broker_url = previous
    app.amqp._producer_pool = None


def test_a_publish_the_broker_refuses_leaves_the_row_for_the_sweep(
    participant: Any,
    broker_away: None,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    email = row(participant, "email", enqueued_at=CLAIMED)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        send_after_commit(SEND_TASK, [email.pk])

    email.refresh_from_db()
    assert (email.status, email.enqueued_at) == ("pending", None)
    assert [r.getMessage() for r in caplog.records if r.name == "scheduler.outbox.dispatch"] == [
        f"broker unavailable (OperationalError): 1 outbox row(s) left for the sweep, "
        f"first id {email.pk}"
    ]


@pytest.fixture
def broker_silent() -> Any:
    """This process publishes, with the transport options a deployment has (config/settings.py
    with REDIS_URL), to a server that takes the connection and never answers: a Redis behind a
    failing-over proxy, or across a partition. Without socket timeouts a publish waited on it
    for as long as the connection stayed open."""
    previous = (
        app.conf.task_always_eager,
        app.conf.broker_url,
        app.conf.broker_transport_options,
    )
    options = configured("CELERY_BROKER_TRANSPORT_OPTIONS", REDIS_URL="redis://127.0.0.1:6379/0")
    with Blackhole() as silent:
        app.conf.task_always_eager = False
        app.conf.broker_url = silent.url()
        app.conf.broker_transport_options = options
        app._pool = None
        app.amqp._producer_pool = None
        yield silent
        app.conf.task_always_eager, app.conf.broker_url = previous[:2]
        app.conf.broker_transport_options = previous[2]
        app._pool = None
        app.amqp._producer_pool = None


def test_a_publish_to_a_broker_that_never_answers_gives_up_in_seconds_for_the_sweep(
    participant: Any,
    broker_silent: Blackhole,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    email = row(participant, "email", enqueued_at=CLAIMED)
    started = time.perf_counter()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        send_after_commit(SEND_TASK, [email.pk])
    took = time.perf_counter() - started

    assert broker_silent.accepted >= 1
    # Two reads of REDIS_BROKER_TIMEOUT_SECONDS (2 s) each: about 4 s, where the page that
    # committed the change used to wait until the connection died.
    assert took < 8
    email.refresh_from_db()
    assert (email.status, email.enqueued_at) == ("pending", None)
    assert [r.getMessage() for r in caplog.records if r.name == "scheduler.outbox.dispatch"] == [
        f"broker unavailable (OperationalError): 1 outbox row(s) left for the sweep, "
        f"first id {email.pk}"
    ]


# ----------------------------------------------------------------------------------------
# A provider that takes the connection and never answers


class SilentTwilioBackend(TwilioSmsBackend):
    """The production Twilio backend with its production HTTP client (the configured
    timeout), only sending to SILENT_TWILIO[0] instead of https://api.twilio.com."""

    def __init__(self) -> None:
        super().__init__()
        http = self.client.http_client
        http.session.trust_env = False  # no proxy from the environment for 127.0.0.1
        send = http.request

        def request(method: str, url: str, **kwargs: Any) -> Any:
            return send(method, url.replace("https://api.twilio.com", SILENT_TWILIO[0]), **kwargs)

        http.request = request


SILENT_TWILIO: list[str] = []
SILENT_MAIL_SETTINGS: dict[str, Any] = {
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "EMAIL_HOST": "127.0.0.1",
    "EMAIL_USE_TLS": False,
    "EMAIL_TIMEOUT": 1,
    "REMINDER_BACKOFF_BASE_SECONDS": 60,
}
SILENT_TWILIO_SETTINGS: dict[str, Any] = {
    "SMS_BACKEND": f"{__name__}.SilentTwilioBackend",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "test-token",
    "TWILIO_FROM_NUMBER": "+12025550199",
    "TWILIO_TIMEOUT_SECONDS": 1,
}


def test_providers_are_given_up_on_after_thirty_seconds_by_default() -> None:
    # Django's SMTP connection and Twilio's client have no timeout of their own.
    assert configured("EMAIL_TIMEOUT") == configured("TWILIO_TIMEOUT_SECONDS") == 30
    assert configured("EMAIL_TIMEOUT", EMAIL_TIMEOUT="12") == 12


@override_settings(**SILENT_TWILIO_SETTINGS)
def test_an_sms_twilio_never_answers_is_parked_as_unknown_not_sent_again(
    participant: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sms = row(participant, "sms")
    with Blackhole() as silent:
        SILENT_TWILIO[:] = [f"http://127.0.0.1:{silent.port}"]
        started = time.perf_counter()
        with time_machine.travel(CLAIMED, tick=False):
            result = reminder_send(sms.pk)
        took = time.perf_counter() - started
        with django_capture_on_commit_callbacks(execute=True):
            later = [reminders_sweep(now=CLAIMED + dt.timedelta(hours=h)) for h in (1, 24)]
        reached = silent.accepted

    assert (result, reached, later) == ("unknown", 1, [[], []])
    assert took < 5  # the configured second, not until the connection dies
    assert state(sms) == (
        "unknown",
        1,
        "Twilio did not answer within 1 s: the SMS may or may not have gone; mark it as sent "
        "or send it again",
        "",
    )


@override_settings(**SILENT_MAIL_SETTINGS)
def test_an_email_the_mail_server_never_answers_is_retried_later(participant: Any) -> None:
    email = row(participant, "email")
    with Blackhole() as silent, override_settings(EMAIL_PORT=silent.port):
        started = time.perf_counter()
        with time_machine.travel(CLAIMED, tick=False):
            result = reminder_send(email.pk)
        took = time.perf_counter() - started

    assert result == "failed"
    assert took < 5
    email.refresh_from_db()
    assert (email.status, email.attempts, email.last_error) == (
        "failed",
        1,
        "email not accepted: SMTPServerDisconnected: Connection unexpectedly closed: timed out",
    )
    # Sent again later as the same message (email de-duplicates on Message-ID).
    assert email.next_attempt_at == CLAIMED + dt.timedelta(minutes=1)


def rows_of(participant: Any, channel: str, count: int) -> list[int]:
    """`count` due reminders of `channel` about the participant's first visit."""
    return [row(participant, channel, rule_code=f"SILENT-{n}").pk for n in range(count)]


@override_settings(**SILENT_MAIL_SETTINGS)
def test_a_batch_stops_trying_a_mail_server_that_stayed_silent(participant: Any) -> None:
    ids = rows_of(participant, "email", 4)
    with Blackhole() as silent, override_settings(EMAIL_PORT=silent.port):
        started = time.perf_counter()
        with time_machine.travel(CLAIMED, tick=False):
            results = reminders_send_batch(ids)
        took = time.perf_counter() - started
        reached = silent.accepted

    assert results == dict.fromkeys(ids, "failed")
    assert reached == 1  # one wait of EMAIL_TIMEOUT, not one a row
    assert took < 4
    rows = {r.pk: r for r in Reminder.objects.filter(pk__in=ids)}
    assert [(rows[pk].status, rows[pk].attempts, rows[pk].last_error) for pk in ids] == [
        (
            "failed",
            1,
            "email not accepted: SMTPServerDisconnected: Connection unexpectedly closed: timed out",
        ),
        # Not tried: the claim is not counted, so they cannot run out of attempts untried.
        *[("failed", 0, NOT_TRIED)] * 3,
    ]
    assert {rows[pk].next_attempt_at for pk in ids} == {CLAIMED + dt.timedelta(minutes=1)}


@override_settings(**SILENT_TWILIO_SETTINGS)
@pytest.mark.parametrize(
    ("scheme", "first"),
    [
        # The request went out and no answer came: the SMS may exist.
        ("http", ("unknown", "Twilio did not answer within 1 s: the SMS may or may not have gone; "
                  "mark it as sent or send it again")),
        # The TLS handshake never finished (urllib3 calls it a read timeout): nothing went.
        ("https", ("failed", "Twilio did not answer: no connection within the timeout")),
    ],
)  # fmt: skip
def test_a_batch_leaves_the_other_sms_unclaimed_once_twilio_stayed_silent(
    participant: Any, scheme: str, first: tuple[str, str]
) -> None:
    ids = rows_of(participant, "sms", 3)
    with Blackhole() as silent:
        SILENT_TWILIO[:] = [f"{scheme}://127.0.0.1:{silent.port}"]
        with time_machine.travel(CLAIMED, tick=False):
            results = reminders_send_batch(ids)
        reached = silent.accepted

    rows = {r.pk: r for r in Reminder.objects.filter(pk__in=ids)}
    assert (results[ids[0]], rows[ids[0]].last_error) == first
    assert [results[pk] for pk in ids[1:]] == ["not claimed", "not claimed"]
    assert [(rows[pk].status, rows[pk].attempts) for pk in ids[1:]] == [("pending", 0)] * 2
    assert reached == 1
