"""Clearing a participant's last contact channel warns that invites and reminders stop, and the
participant's page says so while it is true."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.urls import reverse

from participants.contact import participant_contact_gap
from participants.models import Participant
from scheduler.services import participant_details_save, participant_enroll
from tests.factories import member_of_every_trial_site, participant_for

D = dt.date
NOW = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db

ADULT_GAP = (
    "niams-ani-vascular/P-001 has no email address and no phone number: invites and reminders "
    "are not sent."
)
ADULT_CLEARED = (
    "The last contact channel of niams-ani-vascular/P-001 was cleared: invites and reminders "
    "will stop until an email address or a phone number is added."
)


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def niams(import_seed):
    return import_seed("000")


def enrolled(version, **fields: Any) -> Participant:
    participant = participant_for(version, anchors={"day1": D(2026, 3, 16)}, **fields)
    participant_enroll(participant=participant, on=D(2026, 3, 2))
    return participant


def change_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_change", args=[participant.pk])


def change_form_data(page: Any, **changes: Any) -> dict[str, Any]:
    """What the change page would post back unchanged (the form and every inline's management
    data and rows), with `changes` applied."""
    data: dict[str, Any] = {}
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    data.update(changes)
    return data


def warnings_shown(page: Any) -> list[str]:
    return re.findall(
        r'<ul class="messagelist" id="page-warnings"><li class="warning">([^<]*)</li>',
        page.content.decode(),
    )


def test_clearing_the_email_of_an_adult_without_a_phone_warns_at_save(admin_client, niams) -> None:
    participant = enrolled(niams, email="pat@example.org", study_id="P-001")
    page = admin_client.get(change_url(participant))

    response = admin_client.post(
        change_url(participant), change_form_data(page, email="", _continue="1"), follow=True
    )

    assert [(m.level_tag, str(m)) for m in response.context["messages"]] == [
        ("warning", ADULT_CLEARED),
        (
            "success",
            f'The participant “<a href="{change_url(participant)}">{participant}</a>” was '
            "changed successfully. You may edit it again below.",
        ),
    ]
    assert response.context["page_warnings"] == [ADULT_GAP]
    assert warnings_shown(response) == [ADULT_GAP]
    participant.refresh_from_db()
    assert participant.email == ""


def test_page_says_so_while_true_and_not_once_a_phone_is_added(admin_client, niams) -> None:
    participant = enrolled(niams, study_id="P-001")
    without = admin_client.get(change_url(participant))
    participant.phone = "+1 301 555 0100"
    participant_details_save(participant=participant, changed_fields=["phone"], by=None)

    with_phone = admin_client.get(change_url(participant))

    assert without.context["page_warnings"] == [ADULT_GAP]
    assert with_phone.context["page_warnings"] == []
    assert warnings_shown(with_phone) == []


def test_clearing_the_email_while_a_phone_remains_saves_without_a_warning(niams) -> None:
    participant = enrolled(niams, email="pat@example.org", phone="+1 301 555 0100")
    participant.email = ""

    saved = participant_details_save(participant=participant, changed_fields=["email"], by=None)

    assert saved.warnings == ()


def test_a_minor_is_reached_through_the_guardian_email(import_seed) -> None:
    pediatric = import_seed("003b")
    day1 = {a.code: D(2026, 3, 16) for a in pediatric.anchor_set.filter(relative_to="")}
    participant = participant_for(
        pediatric,
        anchors=day1,
        birth_date=D(2015, 5, 1),
        email="child@example.org",
        guardian_name="Sam Doe",
        guardian_email="sam@example.org",
        study_id="P-001",
    )
    participant.guardian_email = ""

    saved = participant_details_save(
        participant=participant, changed_fields=["guardian_email"], by=None
    )

    assert saved.warnings == (
        "The last contact channel of ani-pediatric-sle/P-001 was cleared: invites and "
        "reminders will stop until a guardian email address (a minor's invites go to the "
        "guardian) or a phone number is added.",
    )
    assert participant_contact_gap(participant, today=D(2026, 3, 2)) == (
        "ani-pediatric-sle/P-001 has no guardian email address (a minor's invites go to the "
        "guardian) and no phone number: invites and reminders are not sent."
    )


@pytest.mark.parametrize(
    ("fields", "status", "gap"),
    [
        ({"email": "pat@example.org"}, "enrolled", False),
        ({"phone": "+1 301 555 0100"}, "enrolled", False),
        ({}, "enrolled", True),
        ({}, "screening", True),
        # Nobody is written to once the participant has left the study.
        ({}, "withdrawn", False),
        ({}, "completed", False),
    ],
)
def test_contact_gap_by_channel_and_status(niams, fields, status, gap) -> None:
    participant = participant_for(niams, anchors={"day1": D(2026, 3, 16)}, **fields)
    participant.status = status

    assert (participant_contact_gap(participant, today=D(2026, 3, 2)) is not None) is gap
