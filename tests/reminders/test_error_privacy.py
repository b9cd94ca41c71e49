"""Provider error texts never store (or log) contact details: an SMS provider's or a mail
server's reason is scrubbed of phone numbers and addresses when the error is raised, and keeps
the provider's code and reason (scheduler/outbox/errors.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
from typing import Any

import pytest
import time_machine
from django.core.mail.backends.base import BaseEmailBackend
from django.test import override_settings
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twilio.http import HttpClient
from twilio.http.response import Response

from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.errors import (
    NotNeeded,
    PermanentDeliveryError,
    TransientDeliveryError,
    scrub_contact_details,
    smtp_reason,
)
from scheduler.outbox.sms import TwilioSmsBackend
from scheduler.outbox.sweep import reminder_send
from scheduler.services import participant_enroll, visit_book
from tests.conftest import bounded
from tests.factories import SiteFactory, participant_for

UTC = dt.UTC

# ----------------------------------------------------------------------------------------
# Exact examples, as providers word them


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        # Twilio 21211, 21614, 21408 and a "To"/"From" pair (its own words).
        (
            "Unable to create record: The 'To' number +15551234567 is not a valid phone number.",
            "Unable to create record: The 'To' number [phone number] is not a valid phone number.",
        ),
        (
            "Unable to create record: 'To' number +44 7700 900123 is not a valid mobile number",
            "Unable to create record: 'To' number [phone number] is not a valid mobile number",
        ),
        (
            "Permission to send an SMS has not been enabled for the region indicated by the "
            "'To' number: +81-6-0000-7777.",
            "Permission to send an SMS has not been enabled for the region indicated by the "
            "'To' number: [phone number].",
        ),
        (
            "The 'To' phone number: (301) 555-0199, is not currently reachable using the "
            "'From' phone number: +1 301.555.0100 via SMS.",
            "The 'To' phone number: [phone number], is not currently reachable using the "
            "'From' phone number: [phone number] via SMS.",
        ),
        # Codes and statuses a coordinator needs stay.
        (
            "Twilio 400: Unable to create record: Attempt to send to unsubscribed recipient",
            "Twilio 400: Unable to create record: Attempt to send to unsubscribed recipient",
        ),
        ("error 21211, HTTP 429", "error 21211, HTTP 429"),
        # SMTP replies (Postfix, Exchange, Gmail).
        (
            "550 5.1.1 <jane.doe+trial-7@example.org>: Recipient address rejected: User unknown "
            "in virtual mailbox table",
            "550 5.1.1 <[email address]>: Recipient address rejected: User unknown in virtual "
            "mailbox table",
        ),
        (
            "552 5.2.2 The email account that you tried to reach is over quota: "
            "Jane.Doe@Example.ORG.",
            "552 5.2.2 The email account that you tried to reach is over quota: [email address].",
        ),
        (
            '550 5.1.10 RESOLVER.ADR.RecipientNotFound; "jane doe"@hospital.example not found',
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; [email address] not found",
        ),
        ("mailto:o'brien@xn--bcher-kva.example", "mailto:[email address]"),
    ],
)
def test_provider_texts_keep_their_reason_without_the_number_or_address(
    said: str, stored: str
) -> None:
    assert scrub_contact_details(said) == stored
    # Idempotent: a scrubbed text scrubbed again is the same text.
    assert scrub_contact_details(stored) == stored


def test_every_delivery_error_scrubs_its_message_whoever_raises_it() -> None:
    raised = [
        str(error("to +15551234567 or jane@example.org"))
        for error in (TransientDeliveryError, PermanentDeliveryError, NotNeeded)
    ]

    assert raised == ["to [phone number] or [email address]"] * 3


def test_a_mail_servers_refusal_keeps_its_code_and_text_without_the_address() -> None:
    refused = smtplib.SMTPRecipientsRefused(
        {
            "jane+trial@example.org": (
                550,
                b"5.1.1 <jane+trial@example.org>: Recipient address rejected",
            )
        }
    )
    full = smtplib.SMTPDataError(552, b"5.2.2 Mailbox full: jane+trial@example.org")

    assert [smtp_reason(refused), smtp_reason(full), smtp_reason(ConnectionRefusedError())] == [
        "SMTPRecipientsRefused: 550 5.1.1 <[email address]>: Recipient address rejected",
        "SMTPDataError: 552 5.2.2 Mailbox full: [email address]",
        "ConnectionRefusedError",
    ]


# ----------------------------------------------------------------------------------------
# Properties: any number or address, in any format, embedded in any text, does not survive

DIGIT = "0123456789"
SEPARATORS = [" ", "-", ".", "\u00a0", " - ", "/"]


@st.composite
def phone_numbers(draw: Any) -> str:
    """E.164, or national numbers grouped with spaces, dashes, dots or brackets."""
    if draw(st.booleans()):
        return "+" + draw(st.text(DIGIT, min_size=8, max_size=15))
    groups = draw(st.lists(st.text(DIGIT, min_size=1, max_size=5), min_size=1, max_size=5))
    while sum(len(group) for group in groups) < 7:
        groups.append(draw(st.text(DIGIT, min_size=1, max_size=4)))
    separator = draw(st.sampled_from(SEPARATORS))
    number = separator.join(groups)
    if draw(st.booleans()) and len(groups) > 1:
        number = f"({groups[0]}) " + separator.join(groups[1:])
    prefix = draw(st.sampled_from(["", "+", "+1 ", "+44 ", "0049 ", "+81-"]))
    return prefix + number


LOCAL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@st.composite
def email_addresses(draw: Any) -> str:
    """Local parts with dots, plus tags and the other characters addresses allow; domains of
    several labels, some in Unicode."""
    local = draw(st.text(LOCAL + ".!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=20))
    if draw(st.booleans()):
        local += "+" + draw(st.text(LOCAL, min_size=1, max_size=8))
    labels = draw(
        st.lists(st.text(LOCAL + "-äöüé", min_size=1, max_size=10), min_size=1, max_size=3)
    )
    return f"{local}@{'.'.join(labels)}.{draw(st.sampled_from(['org', 'com', 'co.jp', 'de']))}"


# Text around them: letters, spaces and the punctuation providers use, no digit and no "@",
# so after scrubbing any digit or "@" left would be a piece of the contact detail.
PROSE = st.text(
    st.characters(categories=["L", "Zs"], include_characters=".,;:!?'\"()<>[]-_/").filter(
        lambda c: not c.isdigit() and c != "@"
    ),
    max_size=40,
)
QUOTES = st.sampled_from(["", " ", ": ", " '", "'", " <", ">", " (", ")", '"', ", ", ".", "\n"])


@settings(max_examples=bounded(2_000), deadline=None)
@given(before=PROSE, left=QUOTES, number=phone_numbers(), right=QUOTES, after=PROSE)
@example(before="The 'To' number", left=" ", number="+15551234567", right=" ", after="is bad")
def test_no_phone_number_survives_scrubbing(
    before: str, left: str, number: str, right: str, after: str
) -> None:
    scrubbed = scrub_contact_details(before + left + number + right + after)

    assert number not in scrubbed
    assert not any(character.isdigit() for character in scrubbed)
    assert "[phone number]" in scrubbed


@settings(max_examples=bounded(2_000), deadline=None)
@given(before=PROSE, left=QUOTES, address=email_addresses(), right=QUOTES, after=PROSE)
@example(before="550 5.1.1", left=" <", address="jane+trial@example.org", right=">", after=": x")
def test_no_email_address_survives_scrubbing(
    before: str, left: str, address: str, right: str, after: str
) -> None:
    scrubbed = scrub_contact_details(before + left + address + right + after)

    assert address not in scrubbed
    assert "@" not in scrubbed
    assert "[email address]" in scrubbed


@settings(max_examples=bounded(2_000), deadline=None)
@given(
    before=st.text(max_size=40),
    number=phone_numbers(),
    address=email_addresses(),
    after=st.text(max_size=40),
)
def test_no_contact_detail_survives_in_any_text(
    before: str, number: str, address: str, after: str
) -> None:
    scrubbed = scrub_contact_details(f"{before} {number}, {address} {after}")

    assert number not in scrubbed
    assert address not in scrubbed


# ----------------------------------------------------------------------------------------
# Through the outbox: what the row stores and what the logs say


class InvalidNumberHttp(HttpClient):
    """Twilio's Messages API refusing the number, quoting it as it does (error 21211)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("fake-twilio"), False)

    def request(self, method: str, uri: str, data: Any = None, **kwargs: Any) -> Response:
        to = dict(data or {}).get("To", "")
        return Response(
            400,
            json.dumps(
                {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number."}
            ),
        )


class InvalidNumberTwilio(TwilioSmsBackend):
    def __init__(self) -> None:
        super().__init__(http_client=InvalidNumberHttp())


class RefusingRecipientSmtp(BaseEmailBackend):
    """A mail server that refuses the recipient, quoting the address."""

    def send_messages(self, email_messages: Any) -> int:
        address = email_messages[0].to[0]
        raise smtplib.SMTPRecipientsRefused(
            {address: (550, f"5.1.1 <{address}>: Recipient address rejected".encode())}
        )


@pytest.fixture
def participant(import_seed):
    site = SiteFactory.create(code="nih", timezone="America/New_York", email="v@nih.example")
    with time_machine.travel(dt.datetime(2026, 1, 10, 12, tzinfo=UTC), tick=False):
        participant = participant_for(
            import_seed("000"),
            anchors={"day1": dt.date(2026, 2, 2)},
            site=site,
            email="jane.doe+niams@example.org",
            phone="+1 301 555 0199",
            reminder_channels=["email", "sms"],
        )
        participant_enroll(participant=participant, on=dt.date(2026, 1, 10))
    # Texts are sent for booked visits: V4 (window 2026-03-27..04-02), booked on 2026-03-16.
    v4 = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V4")
    with time_machine.travel(dt.datetime(2026, 3, 16, tzinfo=UTC), tick=False):
        visit_book(visit=v4, local_date=dt.date(2026, 3, 30), local_time=dt.time(9, 30), by=None)
    return participant


@pytest.mark.django_db
@override_settings(
    SMS_BACKEND=f"{__name__}.InvalidNumberTwilio",
    EMAIL_BACKEND=f"{__name__}.RefusingRecipientSmtp",
    TWILIO_ACCOUNT_SID="ACtest",
    TWILIO_AUTH_TOKEN="secret",
    TWILIO_FROM_NUMBER="+15550000000",
)
def test_the_outbox_stores_and_logs_the_providers_reason_without_contact_details(
    participant, caplog
) -> None:
    sms = Reminder.objects.get(participant=participant, channel="sms", rule_code="P1D")
    email = Reminder.objects.get(participant=participant, event="welcome")

    with caplog.at_level(logging.DEBUG):
        for reminder in (sms, email):
            with time_machine.travel(reminder.due_at, tick=False):
                reminder_send(reminder.pk)
    sms.refresh_from_db()
    email.refresh_from_db()

    assert (sms.status, sms.last_error) == (
        "dead",
        "Twilio 400: Unable to create record: The 'To' number [phone number] is not a valid "
        "phone number.",
    )
    assert (email.status, email.last_error) == (
        "failed",
        "email not accepted: SMTPRecipientsRefused: 550 5.1.1 <[email address]>: Recipient "
        "address rejected",
    )
    logged = caplog.text + "".join(str(record.exc_info) for record in caplog.records)
    for detail in ("301 555 0199", "3015550199", "jane.doe", "example.org"):
        assert detail not in logged
    assert "reminder" in logged  # not vacuous: the outbox did log its attempts
