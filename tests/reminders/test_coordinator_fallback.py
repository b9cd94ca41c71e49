"""Coordinator reminders reach someone: an email for a site without a mailbox becomes an in-app
notice, and the row says it fell back (no contact details)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from scheduler.models import CoordinatorNotification, Reminder
from scheduler.outbox.sweep import reminder_send
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, participant_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def enrolled(import_seed):
    """A NIAMS participant enrolled on 10 January at a site with or without a mailbox."""

    def make(*, site_email: str) -> object:
        site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center", email=site_email)
        with time_machine.travel(dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC), tick=False):
            participant = participant_for(
                import_seed("000"),
                anchors={"day1": dt.date(2026, 2, 2)},
                site=site,
                study_id="BERLIN-001",
                email="p@example.org",
            )
            participant_enroll(
                participant=participant,
                on=dt.date(2026, 1, 10),
                arm=participant.protocol_version.arm_set.get(code="ANI"),
            )
        return participant

    return make


def closing_reminders(participant, code: str = "V2") -> tuple[Reminder, Reminder]:
    rows = Reminder.objects.filter(
        participant=participant, rule_code="C_CLOSE", visit__visit_definition__code=code
    )
    return rows.get(channel="email"), rows.get(channel="in_app")


V2_CLOSING = (
    "niams-ani-vascular BERLIN-001 · V2 Treatment visit 1 (week 0): window closes 2026-02-02, "
    "still not booked"
)


def test_a_coordinator_email_without_a_mailbox_becomes_an_in_app_notice(enrolled) -> None:
    participant = enrolled(site_email="")
    email, in_app = closing_reminders(participant)
    # As under a protocol whose C_CLOSE rule notifies by email only.
    in_app.delete()

    with time_machine.travel(email.due_at, tick=False):
        outcome = reminder_send(email.pk)

    email.refresh_from_db()
    notification = CoordinatorNotification.objects.get()
    assert outcome == "sent"
    assert (notification.reminder, notification.site, notification.text) == (
        email,
        participant.site,
        V2_CLOSING,
    )
    assert (email.status, email.provider_message_id, email.last_error) == (
        "sent",
        f"in-app-{notification.pk} (fallback: the site has no mailbox)",
        "",
    )


def test_the_fallback_does_not_repeat_a_notice_the_same_rule_already_gives_in_app(
    enrolled,
) -> None:
    participant = enrolled(site_email="")
    email, in_app = closing_reminders(participant)

    with time_machine.travel(email.due_at, tick=False):
        outcomes = [reminder_send(in_app.pk), reminder_send(email.pk)]

    email.refresh_from_db()
    assert outcomes == ["sent", "sent"]
    assert list(CoordinatorNotification.objects.values_list("reminder", "text")) == [
        (in_app.pk, V2_CLOSING)
    ]
    assert email.provider_message_id == (
        f"in-app reminder {in_app.pk} (fallback: the site has no mailbox)"
    )


def test_a_site_with_a_mailbox_gets_the_email_naming_trial_and_study_id(
    enrolled, mailoutbox
) -> None:
    participant = enrolled(site_email="visits@nih.example")
    email, _in_app = closing_reminders(participant)
    mailoutbox.clear()

    with time_machine.travel(email.due_at, tick=False):
        assert reminder_send(email.pk) == "sent"

    [message] = mailoutbox
    assert (message.to, message.subject, message.body) == (
        ["visits@nih.example"],
        V2_CLOSING,
        V2_CLOSING,
    )
    assert CoordinatorNotification.objects.count() == 0
