"""The reminder outbox in one process: planned with the calendar, claimed once, retried."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from django.test import override_settings

from scheduler.models import CoordinatorNotification, Reminder, ScheduledVisit
from scheduler.outbox.sweep import (
    notifications_mark_read,
    reminder_send,
    reminders_retry,
    reminders_sweep,
)
from scheduler.services import (
    CalendarError,
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


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator")


@pytest.fixture
def niams(import_seed):
    site = SiteFactory.create(
        code="nih",
        name="NIH Clinical Center",
        timezone="America/New_York",
        email="visits@nih.example",
        phone="+1 301-496-2563",
    )
    with time_machine.travel(dt.datetime(2026, 1, 10, 12, tzinfo=UTC), tick=False):
        participant = participant_for(
            import_seed("000"),
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            email="p1@example.org",
            phone="+15551234567",
            reminder_channels=["email", "sms"],
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


def book_v4(participant, by) -> None:
    """Book NIAMS V4 (window 2026-03-27..04-02) for 2026-03-30 09:30 New York, on 2026-03-16."""
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(participant, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9, 30),
            by=by,
        )


def reminders_of(target: ScheduledVisit, *, audience: str = "participant") -> list[tuple]:
    return list(
        Reminder.objects.filter(visit=target, audience=audience)
        .exclude(event="invite")
        .order_by("due_at", "rule_code", "channel")
        .values_list("rule_code", "channel", "due_at", "status")
    )


def test_booking_plans_the_participant_reminders_in_the_same_transaction(
    niams, coordinator
) -> None:
    v10 = visit(niams, "V10")  # FDG-PET/CT: fasting, so an evening-before reminder too
    with time_machine.travel(dt.datetime(2026, 9, 1, tzinfo=UTC), tick=False):
        visit_book(
            visit=v10, local_date=dt.date(2026, 9, 14), local_time=dt.time(8, 30), by=coordinator
        )

    assert reminders_of(v10) == [
        ("P7D", "email", dt.datetime(2026, 9, 7, 13, 0, tzinfo=UTC), "pending"),
        ("P1D", "email", dt.datetime(2026, 9, 13, 13, 0, tzinfo=UTC), "pending"),
        ("P1D", "sms", dt.datetime(2026, 9, 13, 13, 0, tzinfo=UTC), "pending"),
        ("FAST", "email", dt.datetime(2026, 9, 13, 23, 0, tzinfo=UTC), "pending"),
        ("FAST", "sms", dt.datetime(2026, 9, 13, 23, 0, tzinfo=UTC), "pending"),
    ]
    # Booked: its coordinator "window open/closing unbooked" reminders are cancelled.
    assert {status for *_, status in reminders_of(v10, audience="coordinator")} == {
        "pending",
        "cancelled",
    }
    assert [r for r in reminders_of(v10, audience="coordinator") if r[-1] == "pending"] == [
        ("C_OVERDUE", "in_app", dt.datetime(2026, 9, 15, 12, 0, tzinfo=UTC), "pending"),
    ]


def test_rescheduled_after_the_7_day_reminder_gets_a_new_one_only_if_more_than_7_days_away(
    niams, coordinator, mailoutbox
) -> None:
    v4 = visit(niams, "V4")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=v4, local_date=dt.date(2026, 3, 30), local_time=dt.time(9, 30), by=coordinator
        )
    sent = Reminder.objects.get(visit=v4, rule_code="P7D")
    with time_machine.travel(dt.datetime(2026, 3, 23, 13, 1, tzinfo=UTC), tick=False):
        assert reminder_send(sent.pk) == "sent"
        # 5 days away: no new 7-day reminder.
        visit_book(
            visit=v4,
            local_date=dt.date(2026, 3, 28),
            local_time=dt.time(9, 30),
            by=coordinator,
            reason="participant asked",
        )
        near = [r for r in reminders_of(v4) if r[0] == "P7D"]
        # 10 days away: a new 7-day reminder, the sent one kept as history.
        visit_book(
            visit=v4,
            local_date=dt.date(2026, 4, 2),
            local_time=dt.time(9, 30),
            by=coordinator,
            reason="participant asked again",
        )
        far = [r for r in reminders_of(v4) if r[0] == "P7D"]

    assert near == [("P7D", "email", dt.datetime(2026, 3, 23, 13, 0, tzinfo=UTC), "sent")]
    assert far == [
        ("P7D", "email", dt.datetime(2026, 3, 23, 13, 0, tzinfo=UTC), "sent"),
        ("P7D", "email", dt.datetime(2026, 3, 26, 13, 0, tzinfo=UTC), "pending"),
    ]


def test_a_visit_moved_away_and_back_is_reminded_again(niams, coordinator) -> None:
    """Booked for the 30th, moved to the 31st, moved back: the reminders of the 30th, cancelled
    by the first move, are due again (the same rows, pending), and those of the 31st are
    cancelled. The same moment is never planned twice, so a cancelled row is what comes back."""
    v4 = visit(niams, "V4")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        for day, why in ((30, ""), (31, "participant asked"), (30, "participant asked again")):
            visit_book(
                visit=visit(niams, "V4"),
                local_date=dt.date(2026, 3, day),
                local_time=dt.time(9, 30),
                by=coordinator,
                reason=why,
            )
            if day == 31:
                moved = {r[:3]: r[3] for r in reminders_of(v4)}

    on_the_30th = [
        ("P7D", "email", dt.datetime(2026, 3, 23, 13, 0, tzinfo=UTC)),
        ("P1D", "email", dt.datetime(2026, 3, 29, 13, 0, tzinfo=UTC)),
        ("P1D", "sms", dt.datetime(2026, 3, 29, 13, 0, tzinfo=UTC)),
    ]
    on_the_31st = [
        ("P7D", "email", dt.datetime(2026, 3, 24, 13, 0, tzinfo=UTC)),
        ("P1D", "email", dt.datetime(2026, 3, 30, 13, 0, tzinfo=UTC)),
        ("P1D", "sms", dt.datetime(2026, 3, 30, 13, 0, tzinfo=UTC)),
    ]
    assert moved == {
        **dict.fromkeys(on_the_30th, "cancelled"),
        **dict.fromkeys(on_the_31st, "pending"),
    }
    assert reminders_of(v4) == sorted(
        [(*r, "pending") for r in on_the_30th] + [(*r, "cancelled") for r in on_the_31st],
        key=lambda r: (r[2], r[0], r[1]),
    )
    back = Reminder.objects.filter(visit=v4, rule_code="P1D", channel="sms", status="pending").get()
    assert (back.next_attempt_at, back.attempts, back.last_error) == (back.due_at, 0, "")


def test_cancelled_visit_and_withdrawal_cancel_pending_reminders(niams, coordinator) -> None:
    # 2 March at the site (New York), the day the withdrawal is dated.
    with time_machine.travel(dt.datetime(2026, 3, 2, 12, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(niams, "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(9),
            by=coordinator,
        )
        visit_cancel(visit=visit(niams, "V4"), by=coordinator, reason="unwell")
        v4_statuses = {r[-1] for r in reminders_of(visit(niams, "V4"))}
        participant_withdraw(
            participant=niams, on=dt.date(2026, 3, 2), by=coordinator, reason="moved"
        )

    assert v4_statuses == {"cancelled"}
    assert set(
        Reminder.objects.filter(participant=niams)
        .exclude(event="invite")
        .values_list("status", flat=True)
    ) == {"cancelled"}


def test_a_reminder_is_claimed_once_even_when_its_message_arrives_twice(
    niams, coordinator, mailoutbox
) -> None:
    book_v4(niams, coordinator)
    reminder = Reminder.objects.get(visit__visit_definition__code="V4", rule_code="P7D")
    mailoutbox.clear()

    with time_machine.travel(dt.datetime(2026, 3, 23, 13, 0, tzinfo=UTC), tick=False):
        outcomes = [reminder_send(reminder.pk), reminder_send(reminder.pk)]

    assert outcomes == ["sent", "not claimed"]
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert (
        message.subject
        == "Reminder: Treatment visit 3 (week 8), Monday, March 30, 2026 at 9:30\u202fAM"
    )
    assert message.extra_headers["Message-ID"] == f"<reminder-{reminder.pk}@trial-visit-scheduler>"
    assert [mimetype for _, mimetype in message.alternatives] == ["text/calendar; method=REQUEST"]
    reminder.refresh_from_db()
    assert (reminder.status, reminder.attempts, reminder.provider_message_id) == (
        "sent",
        1,
        f"<reminder-{reminder.pk}@trial-visit-scheduler>",
    )


def test_sweep_hands_due_reminders_to_workers_which_send_each_once(
    niams, coordinator, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    book_v4(niams, coordinator)
    mailoutbox.clear()

    moment = dt.datetime(2026, 3, 29, 13, 5, tzinfo=UTC)
    due = set(
        Reminder.objects.filter(status="pending", next_attempt_at__lte=moment).values_list(
            "pk", flat=True
        )
    )
    with (
        override_settings(SMS_BACKEND="tests.reminders.fakes.FakeTwilioBackend"),
        time_machine.travel(moment, tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        enqueued = reminders_sweep()
        again = reminders_sweep()

    assert set(enqueued) == due
    assert again == []  # nothing left due: all were claimed
    reminders = Reminder.objects.filter(pk__in=due).exclude(event="invite")
    assert set(reminders.values_list("status", flat=True)) == {"sent"}
    assert sorted(
        reminders.filter(audience="participant")
        .exclude(event="welcome")
        .values_list("rule_code", "channel")
    ) == [
        ("P1D", "email"),
        ("P1D", "sms"),
        ("P7D", "email"),
    ]
    # The welcome and the invites queued at enrollment and at booking (their after-commit
    # messages never ran in this test, as if Redis had lost them), and the invites whose day
    # (28 days before the window) has come: the sweep sends each once, except first invites
    # to windows that closed meanwhile. V4's invite, planned for 27 February, was replanned
    # when V4 was booked on 16 March and went out as its booking.
    invites = Reminder.objects.filter(pk__in=due, event="invite")
    assert sorted(
        invites.values_list("visit__visit_definition__code", "rule_code", "status", "last_error")
    ) == sorted(
        [
            (code, "INVITE-0", "cancelled", "its window closed before its first invite went out")
            for code in ("V1", "V2", "V3", "V3C")
        ]
        + [("V5", "INVITE-0", "sent", ""), ("V4", "INVITE-1", "sent", "")]
    )
    assert list(
        Reminder.objects.filter(
            participant=niams, visit__visit_definition__code="V4", event="invite"
        )
        .order_by("id")
        .values_list("rule_code", "status")
    ) == [("INVITE-0", "cancelled"), ("INVITE-1", "sent")]
    assert Reminder.objects.get(pk__in=due, event="welcome").status == "sent"
    to_participant = [m.subject for m in mailoutbox if m.to == ["p1@example.org"]]
    assert [s for s in to_participant if s.startswith("Reminder")] == [
        "Reminder: Treatment visit 3 (week 8), Monday, March 30, 2026 at 9:30\u202fAM",
    ] * 2
    assert len(to_participant) == 2 + 2 + 1


@override_settings(
    SMS_BACKEND="tests.reminders.fakes.FakeTwilioBackend",
    TWILIO_ACCOUNT_SID="ACtest",
    TWILIO_AUTH_TOKEN="secret",
    TWILIO_FROM_NUMBER="+15550000000",
    REMINDER_MAX_ATTEMPTS=3,
    REMINDER_BACKOFF_BASE_SECONDS=60,
)
def test_sms_provider_5xx_retries_with_backoff_then_dead_and_retry_brings_it_back(
    niams, coordinator
) -> None:
    book_v4(niams, coordinator)
    sms = Reminder.objects.get(visit__visit_definition__code="V4", rule_code="P1D", channel="sms")
    FakeTwilioHttp.script[:] = [503, 500, 502]
    FakeTwilioHttp.requests.clear()
    first_due = sms.due_at

    history: list[object] = []
    moment = first_due
    for _ in range(4):
        with time_machine.travel(moment, tick=False):
            history.append(reminder_send(sms.pk))
        sms.refresh_from_db()
        history.append((sms.status, sms.attempts, sms.next_attempt_at - moment))
        moment = sms.next_attempt_at

    assert history == [
        "failed",
        ("failed", 1, dt.timedelta(minutes=1)),
        "failed",
        ("failed", 2, dt.timedelta(minutes=2)),
        "dead",
        ("dead", 3, dt.timedelta(minutes=4)),
        "not claimed",
        ("dead", 3, dt.timedelta(0)),
    ]
    assert sms.last_error == "Twilio 502: Unable to create record: Service unavailable"
    assert len(FakeTwilioHttp.requests) == 3

    with time_machine.travel(moment + dt.timedelta(seconds=1), tick=False):
        assert reminders_retry(reminders=[sms]) == 1
        assert reminder_send(sms.pk) == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.provider_message_id) == ("sent", 1, f"SM{4:032d}")
    assert FakeTwilioHttp.requests[-1]["data"] == {
        "To": "+15551234567",
        "From": "+15550000000",
        "Body": "Reminder: Treatment visit 3 (week 8), Monday, March 30, 2026 at 9:30\u202fAM. "
        "When: Monday, March 30, 2026 at 9:30\u202fAM (America/New_York time)",
    }


def test_coordinator_in_app_reminder_names_the_trial_and_study_id_only(niams) -> None:
    reminder = Reminder.objects.filter(participant=niams, rule_code="C_OVERDUE").earliest("due_at")

    with time_machine.travel(reminder.due_at, tick=False):
        assert reminder_send(reminder.pk) == "sent"

    notification = CoordinatorNotification.objects.get(reminder=reminder)
    assert notification.text == (
        f"niams-ani-vascular {niams.study_id} · V1 Screening: overdue (window 2026-01-05 to "
        "2026-01-19), neither recorded nor rescheduled"
    )


def test_participant_details_save_replans_reminders_and_refuses_clinical_fields(
    niams, coordinator
) -> None:
    book_v4(niams, coordinator)
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        niams.reminders_opt_out = True
        participant_details_save(
            participant=niams, changed_fields=["reminders_opt_out"], by=coordinator
        )
        niams.status = "completed"
        with pytest.raises(CalendarError) as caught:
            participant_details_save(participant=niams, changed_fields=["status"], by=coordinator)

    assert str(caught.value) == ("status cannot be edited directly; use the participant's actions")
    assert set(
        Reminder.objects.filter(participant=niams, audience="participant")
        .exclude(event__in=["invite", "welcome"])  # not reminders: opting out keeps them
        .values_list("status", flat=True)
    ) == {"cancelled"}
    assert niams.history.latest().history_change_reason == "details edited"


def test_notifications_mark_read_marks_only_unread_ones(niams) -> None:
    reminder = Reminder.objects.filter(participant=niams, rule_code="C_OVERDUE").earliest("due_at")
    with time_machine.travel(reminder.due_at, tick=False):
        reminder_send(reminder.pk)
    notifications = CoordinatorNotification.objects.all()

    first = notifications_mark_read(notifications=notifications)
    second = notifications_mark_read(notifications=notifications)

    assert (first, second) == (1, 0)


class ExplodingBackend:
    def send(self, *, to: str, body: str, reference: str) -> str:
        raise RuntimeError("a provider library error nobody foresaw")


@override_settings(
    SMS_BACKEND="tests.reminders.test_outbox.ExplodingBackend", REMINDER_MAX_ATTEMPTS=2
)
def test_an_unforeseen_delivery_error_is_retried_then_dead_never_stuck_sending(
    niams, coordinator
) -> None:
    book_v4(niams, coordinator)
    sms = Reminder.objects.get(visit__visit_definition__code="V4", rule_code="P1D", channel="sms")

    outcomes = []
    for _ in range(2):
        sms.refresh_from_db()
        with time_machine.travel(sms.next_attempt_at, tick=False):
            outcomes.append(reminder_send(sms.pk))

    sms.refresh_from_db()
    assert outcomes == ["failed", "dead"]
    assert (sms.status, sms.attempts, sms.last_error) == ("dead", 2, "RuntimeError")


@override_settings(REMINDER_SENDING_TIMEOUT_SECONDS=300, REMINDER_MAX_ATTEMPTS=2)
def test_a_row_stuck_in_sending_is_reclaimed_then_dead_after_the_last_attempt(niams) -> None:
    reminder = Reminder.objects.filter(participant=niams, rule_code="C_OVERDUE").earliest("due_at")
    claimed = reminder.due_at + dt.timedelta(seconds=1)
    Reminder.objects.filter(pk=reminder.pk).update(status="sending", claimed_at=claimed, attempts=1)

    reminders_sweep(now=claimed + dt.timedelta(seconds=301))
    first = Reminder.objects.values_list("status", flat=True).get(pk=reminder.pk)
    Reminder.objects.filter(pk=reminder.pk).update(status="sending", claimed_at=claimed, attempts=2)
    reminders_sweep(now=claimed + dt.timedelta(seconds=301))

    reminder.refresh_from_db()
    assert first == "pending"
    assert (reminder.status, reminder.last_error) == (
        "dead",
        "the worker stopped while sending, on every attempt",
    )


def test_sending_a_reminder_takes_a_fixed_number_of_queries(
    niams, coordinator, django_assert_num_queries
) -> None:
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(niams, "V10"),
            local_date=dt.date(2026, 9, 14),
            local_time=dt.time(8, 30),
            by=coordinator,
        )  # 6 procedures to prepare for
    reminder = Reminder.objects.get(visit__visit_definition__code="V10", rule_code="P7D")

    # Claim; load the row with everything the text needs (participant, visit definition,
    # procedures, their definitions); record the outcome.
    with time_machine.travel(reminder.due_at, tick=False), django_assert_num_queries(7):
        assert reminder_send(reminder.pk) == "sent"


def test_reminder_texts_of_a_blinded_trial_never_name_the_arm_or_the_diagnosis(
    niams, coordinator, mailoutbox
) -> None:
    with time_machine.travel(dt.datetime(2026, 9, 1, tzinfo=UTC), tick=False):
        visit_book(
            visit=visit(niams, "V10"),
            local_date=dt.date(2026, 9, 14),
            local_time=dt.time(8, 30),
            by=coordinator,
        )
    FakeTwilioHttp.requests.clear()
    mailoutbox.clear()
    rows = Reminder.objects.filter(visit__visit_definition__code="V10", status="pending").exclude(
        event="invite"
    )  # invites are crawled in tests/calendars

    with override_settings(SMS_BACKEND="tests.reminders.fakes.FakeTwilioBackend"):
        for reminder in rows:
            with time_machine.travel(reminder.due_at, tick=False):
                assert reminder_send(reminder.pk) == "sent"

    texts = [m.subject + m.body for m in mailoutbox]
    texts += [content for m in mailoutbox for content, _ in m.alternatives]
    texts += [r["data"]["Body"] for r in FakeTwilioHttp.requests]
    texts += list(CoordinatorNotification.objects.values_list("text", flat=True))
    # 3 participant emails (text, and the invite they carry), 2 SMS, 1 in-app notification.
    assert len(texts) == 9
    for text in texts:
        assert re.search(r"anifrolumab|placebo|lupus", text, re.IGNORECASE) is None
        assert re.search(r"\b(ANI|PBO)\b", text) is None
