"""A reminder's delivery error, in the admin, only for the roles that see contact details
(coordinators and investigators, `access.can_see_contact_details`); pharmacists, monitors and
site systems read that it failed. The list column, the reminder's page, the participant's
page, search and sorting, one role at a time."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.contrib.admin.templatetags.admin_list import result_headers
from django.urls import reverse

from scheduler.models import Membership, Reminder
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for
from trials.models import Arm

Role = Membership.Role
NOW = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)
ERROR = "Twilio 400: Unable to create record: Attempt to send to unsubscribed recipient"
HIDDEN = "failed (details hidden for your role)"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def failed(import_seed) -> Reminder:
    """Berlin's participant of the blinded NIAMS trial, whose welcome message went dead."""
    version = import_seed("000")
    site = SiteFactory.create(code="berlin", name="Berlin Site", timezone="Europe/Berlin")
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 3, 2)},
        site=site,
        study_id="BERLIN-001",
        email="berlin-001@example.org",
    )
    participant_enroll(
        participant=participant,
        on=dt.date(2026, 2, 16),
        arm=Arm.objects.get(version=version, code="ANI"),
    )
    reminder = Reminder.objects.get(participant=participant, event="welcome")
    Reminder.objects.filter(pk=reminder.pk).update(
        status=Reminder.Status.DEAD, attempts=5, last_error=ERROR
    )
    reminder.refresh_from_db()
    return reminder


def login_as(client: Any, django_user_model: Any, role: str, reminder: Reminder) -> Any:
    user = django_user_model.objects.create_user(role, is_staff=True)
    participant = reminder.participant
    site = None if role in Membership.TRIAL_WIDE else participant.site
    member(user, trial=participant.trial, site=site, role=role)
    sign_in(client, user)
    return user


def listed_errors(response: Any) -> list[str]:
    return re.findall(r'<td class="field-error">(.*?)</td>', response.content.decode())


def readonly_error(fieldsets: Any) -> list[str]:
    """The text of the "last error" field of an admin form (or of each inline form)."""
    return [
        str(field.contents())
        for fieldset in fieldsets
        for line in fieldset
        for field in line
        if field.field["name"] in ("last_error", "last_error_hidden")
    ]


def what_role_reads(client: Any, reminder: Reminder) -> dict[str, Any]:
    changelist = reverse("admin:scheduler_reminder_changelist")
    listed = client.get(changelist, {"attention": "failed_or_dead"})
    page = client.get(reverse("admin:scheduler_reminder_change", args=[reminder.pk]))
    participant_page = client.get(
        reverse("admin:participants_participant_change", args=[reminder.participant_id])
    )
    [inline] = [
        inline
        for inline in participant_page.context["inline_admin_formsets"]
        if inline.formset.model is Reminder
    ]
    headers = {str(h["text"]): h["sortable"] for h in result_headers(listed.context["cl"])}
    return {
        "list": listed_errors(listed),
        "sortable": headers["error"],
        "page": readonly_error(page.context["adminform"]),
        "participant page": sorted(
            {text for form in inline for text in readonly_error(form) if text not in ("", "-")}
        ),
        "found by its words": client.get(changelist, {"q": "unsubscribed"})
        .context["cl"]
        .result_count,
        "found by study id": client.get(changelist, {"q": "BERLIN-001"}).context["cl"].result_count,
    }


@pytest.mark.parametrize("role", [Role.COORDINATOR, Role.INVESTIGATOR])
def test_roles_that_see_contact_details_read_the_error(
    client, django_user_model, failed, role
) -> None:
    login_as(client, django_user_model, role, failed)

    reads = what_role_reads(client, failed)

    assert reads == {
        "list": [ERROR],
        "sortable": True,
        "page": [ERROR],
        "participant page": [ERROR],
        "found by its words": 1,
        "found by study id": reads["found by study id"],
    }
    assert reads["found by study id"] > 1


@pytest.mark.parametrize(
    "role", [Role.UNBLINDED_PHARMACIST, Role.SPONSOR_MONITOR, Role.SITE_SYSTEM]
)
def test_other_roles_read_that_it_failed(client, django_user_model, failed, role) -> None:
    login_as(client, django_user_model, role, failed)

    reads = what_role_reads(client, failed)

    assert reads == {
        "list": [HIDDEN],
        "sortable": False,
        "page": [HIDDEN],
        "participant page": [HIDDEN],
        # A search for the error's words finds nothing: it would tell what the error says.
        "found by its words": 0,
        "found by study id": reads["found by study id"],
    }
    assert reads["found by study id"] > 1
    page = client.get(reverse("admin:scheduler_reminder_change", args=[failed.pk]))
    assert "unsubscribed" not in page.content.decode()


def test_a_cancelled_rows_reason_is_hidden_without_saying_failed(
    client, django_user_model, failed
) -> None:
    Reminder.objects.filter(pk=failed.pk).update(
        status=Reminder.Status.CANCELLED, last_error="replanned before it was sent"
    )
    login_as(client, django_user_model, Role.SPONSOR_MONITOR, failed)

    page = client.get(reverse("admin:scheduler_reminder_change", args=[failed.pk]))

    assert readonly_error(page.context["adminform"]) == ["details hidden for your role"]


def test_a_coordinator_who_also_monitors_reads_each_rows_error_by_its_own_role(
    client, django_user_model, failed, import_seed
) -> None:
    """Coordinator at Berlin, monitor of the whole trial: Tokyo's errors stay hidden, and the
    column is not sortable (the order would tell them apart)."""
    tokyo = SiteFactory.create(code="tokyo", name="Tokyo Site", timezone="Asia/Tokyo")
    other = participant_for(
        failed.participant.protocol_version,
        anchors={"day1": dt.date(2026, 3, 2)},
        site=tokyo,
        study_id="TOKYO-001",
        email="tokyo-001@example.org",
    )
    participant_enroll(participant=other, on=dt.date(2026, 2, 16))
    Reminder.objects.filter(participant=other, event="welcome").update(
        status=Reminder.Status.DEAD, last_error="email not accepted: SMTPRecipientsRefused"
    )
    user = login_as(client, django_user_model, Role.COORDINATOR, failed)
    member(user, trial=failed.participant.trial, role=Role.SPONSOR_MONITOR)

    listed = client.get(
        reverse("admin:scheduler_reminder_changelist"), {"attention": "failed_or_dead"}
    )
    headers = {str(h["text"]): h["sortable"] for h in result_headers(listed.context["cl"])}

    assert sorted(listed_errors(listed)) == sorted([ERROR, HIDDEN])
    assert headers["error"] is False
