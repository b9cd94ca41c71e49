"""A coordinator decides two reminders whose outcome is unknown (their worker stopped while
sending an SMS) in a real browser: from the start page, "Decide", then "Mark as sent" for one
and "Send again" for the other, each with a reason, a preview saying what will happen, and a
confirmation. Nothing is sent by marking; sending again waits for the next sweep."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model

from participants.models import Participant
from scheduler.models import Reminder, ScheduledVisit
from scheduler.services import participant_enroll
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import SiteFactory, member, participant_for

UTC = dt.UTC
# Monday 16 March 2026, 14:00 UTC (10:00 in New York); the rows were claimed an hour before.
NOW = dt.datetime(2026, 3, 16, 14, 0, tzinfo=UTC)
CLAIMED = NOW - dt.timedelta(hours=1)
PASSWORD = "a-long-passphrase"  # noqa: S105 - a test account's


def unknown_sms(participant: Participant, visit: ScheduledVisit, rule: str) -> Reminder:
    return Reminder.objects.create(
        participant=participant,
        visit=visit,
        target_key=f"visit:{visit.pk}",
        rule_code=rule,
        event="before_visit",
        channel="sms",
        audience="participant",
        due_at=CLAIMED - dt.timedelta(minutes=1),
        next_attempt_at=CLAIMED - dt.timedelta(minutes=1),
        status=Reminder.Status.UNKNOWN,
        claimed_at=CLAIMED,
        attempts=1,
        last_error="the worker stopped while sending",
    )


def decide(page: Any, base_url: str, button: str, reason: str) -> dict[str, list[str]]:
    """From the start page: the outbox row's "Decide", the decision, its reason, the preview
    (returned, label to value), then confirm."""
    page.goto(f"{base_url}/admin/")
    outbox = page.locator("#nih-outbox")
    outbox.locator("tr.workspace-row a.button", has_text="Decide").first.click()
    page.wait_for_load_state("load")
    page.click(f"text={button}")
    page.wait_for_load_state("load")
    page.fill("#id_reason", reason)
    page.click("input[name=_preview]")
    page.wait_for_load_state("load")
    preview = {
        row.locator("th").inner_text(): [row.locator("td").inner_text()]
        for row in page.locator("#lifecycle-outcome tr").all()
    }
    page.click("input[name=_confirm]")
    page.wait_for_load_state("load")
    preview["message"] = page.locator("ul.messagelist li").all_inner_texts()
    return preview


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@time_machine.travel(NOW, tick=True)
def test_a_coordinator_marks_one_unknown_sms_as_sent_and_sends_the_other_again(
    live_server, import_seed
) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    niams = import_seed("000")
    site = SiteFactory.create(code="nih", name="NIH Clinical Center", timezone="America/New_York")
    participant = participant_for(
        niams,
        anchors={"day1": dt.date(2026, 3, 23)},
        site=site,
        study_id="NIH-007",
        phone="+15551234567",
        reminder_channels=["sms"],
    )
    participant_enroll(participant=participant, on=dt.date(2026, 3, 2))
    Reminder.objects.filter(participant=participant).delete()
    visit = participant.visits.order_by("target_date").first()
    assert visit is not None
    first = unknown_sms(participant, visit, "P1D")
    second = unknown_sms(participant, visit, "PT2H")
    coordinator = get_user_model().objects.create_user(
        "coordinator", password=PASSWORD, is_staff=True
    )
    member(coordinator, trial=niams.trial, site=site)

    with chromium_page() as page:
        log_in(page, live_server.url, "coordinator", PASSWORD)
        page.goto(f"{live_server.url}/admin/")
        listed = page.locator("#nih-outbox tr.workspace-row td.status").all_inner_texts()
        marked = decide(page, live_server.url, "Mark as sent", "She confirmed by phone")
        again = decide(page, live_server.url, "Send again", "Not received, she says")
        page.goto(f"{live_server.url}/admin/")
        left = page.locator("#nih-outbox tr.workspace-row").count()

    assert listed == ["outcome unknown after 1 attempt", "outcome unknown after 1 attempt"]
    assert marked["Reason"] == ["She confirmed by phone"]
    assert again["What happens"] == [
        "sent again with the next sweep: the participant may get it twice"
    ]
    assert left == 0
    rows = {r.pk: r for r in Reminder.objects.filter(pk__in=[first.pk, second.pk])}
    decided = {
        rows[first.pk].status: rows[first.pk].history.latest().history_change_reason,
        rows[second.pk].status: rows[second.pk].history.latest().history_change_reason,
    }
    assert decided == {
        "sent": "marked as sent: She confirmed by phone",
        "pending": "sent again: Not received, she says",
    }
    assert rows[first.pk].provider_message_id == ""  # marking sends nothing
    assert {r.history.latest().history_user.username for r in rows.values()} == {"coordinator"}
