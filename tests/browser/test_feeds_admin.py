"""A coordinator, in a real browser, gives a participant a calendar feed and revokes it, and
sends a dead reminder again from the failed-and-dead list."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import time_machine
from django.contrib.auth import get_user_model

from scheduler.models import CalendarFeed, Reminder
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import SiteFactory, participant_for

D = dt.date


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_coordinator_creates_a_feed_subscribes_then_revokes_it(
    live_server, import_seed, settings
) -> None:
    settings.PUBLIC_URL = live_server.url
    get_user_model().objects.create_superuser("coordinator", "c@example.org", "a-long-passphrase")
    participant = participant_for(
        import_seed("000"),
        anchors={"day1": D(2026, 2, 2)},
        site=SiteFactory.create(code="nih-cc", name="NIH Clinical Center"),
        study_id="NIH-CC-001",
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    participant_url = f"{live_server.url}/admin/participants/participant/{participant.pk}/change/"

    with chromium_page() as page:
        log_in(page, live_server.url, "coordinator", "a-long-passphrase")
        page.goto(participant_url)
        page.click(".object-tools >> text=Calendar feed")
        page.wait_for_load_state("load")
        page.click("input[name=_create]")
        page.wait_for_load_state("load")
        feed_url = page.input_value("#new-feed-url")
        warning = page.locator("#new-feed strong").inner_text()
        subscribed = page.request.get(feed_url)
        subscribed_status, subscribed_type = subscribed.status, subscribed.headers["content-type"]
        page.click("#feeds button[name=_revoke]")
        page.wait_for_load_state("load")
        message = page.locator("ul.messagelist li").all_inner_texts()
        state = page.locator("#feeds tbody td:nth-child(4)").all_inner_texts()
        url_shown_again = page.locator("#new-feed-url").count()
        after_revoke = page.request.get(feed_url).status

    feed = CalendarFeed.objects.get()
    token = feed_url.rsplit("/", 1)[1].removesuffix(".ics")
    assert feed_url == f"{live_server.url}/feeds/participant/{token}.ics"
    assert hashlib.sha256(token.encode()).hexdigest() == feed.token_sha256
    assert warning == "Copy it now: it is shown only this once and cannot be shown again."
    assert (subscribed_status, subscribed_type) == (200, "text/calendar; charset=utf-8")
    assert message == [f"Feed {feed.pk} revoked: its URL answers 404 from now on."]
    assert state == [f"revoked {feed.revoked_at:%Y-%m-%d %H:%M} UTC"]
    assert (url_shown_again, after_revoke) == (0, 404)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_coordinator_retries_a_dead_reminder_from_the_failed_and_dead_list(
    live_server, import_seed
) -> None:
    get_user_model().objects.create_superuser("coordinator", "c@example.org", "a-long-passphrase")
    # The site has no mailbox, so its coordinators' first email reminder dies on first try.
    with time_machine.travel(dt.datetime(2026, 1, 27, 15, 0, tzinfo=dt.UTC), tick=False) as clock:
        participant = participant_for(
            import_seed("000"),
            anchors={"day1": D(2026, 2, 2)},
            site=SiteFactory.create(code="nih-cc", name="NIH Clinical Center", email=""),
            study_id="NIH-CC-001",
        )
        participant_enroll(participant=participant, on=D(2026, 1, 5))
        clock.move_to(dt.datetime(2026, 2, 1, 15, 0, tzinfo=dt.UTC))
        reminders_sweep()  # delivered inline once committed (eager Celery)
    dead = Reminder.objects.get(status=Reminder.Status.DEAD)

    with chromium_page() as page:
        log_in(page, live_server.url, "coordinator", "a-long-passphrase")
        page.goto(f"{live_server.url}/admin/scheduler/reminder/")
        page.click("#changelist-filter >> text=failed or dead")
        page.wait_for_load_state("load")
        errors = page.locator("#result_list td.field-error").all_inner_texts()
        page.check("#action-toggle")
        page.select_option("select[name=action]", "retry")
        page.click("button[name=index]")
        page.wait_for_load_state("load")
        message = page.locator("ul.messagelist li").all_inner_texts()
        left = page.locator("#result_list tbody tr").count()

    dead.refresh_from_db()
    assert errors == ["site nih-cc has no mailbox"]
    assert message == ["1 reminder(s) re-queued: they go out with the next sweep."]
    assert left == 0
    assert (dead.status, dead.attempts, dead.last_error) == ("pending", 0, "")
