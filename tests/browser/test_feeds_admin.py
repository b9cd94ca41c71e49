"""A coordinator, in a real browser, gives a participant a calendar feed and revokes it, and
sends a dead reminder again from the failed-and-dead list."""

from __future__ import annotations

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import override_settings

from scheduler.models import CalendarFeed, Reminder, ScheduledVisit
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll, visit_book
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import SiteFactory, member_everywhere, participant_for
from tests.scheduler.test_admin_reminders_feeds import UNSUBSCRIBED

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

    # The admin shows clinical data through memberships: a coordinator at every site.
    member_everywhere(get_user_model().objects.get(username="coordinator"))
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
    # On the site's clock (New York), with its zone's abbreviation.
    assert feed.revoked_at is not None
    revoked = feed.revoked_at.astimezone(ZoneInfo("America/New_York"))
    assert state == [f"revoked {revoked:%a} {revoked.day} {revoked:%b %Y %H:%M %Z}"]
    assert (url_shown_again, after_revoke) == (0, 404)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_coordinator_retries_a_dead_reminder_from_the_failed_and_dead_list(
    live_server, import_seed
) -> None:
    coordinator = get_user_model().objects.create_superuser(
        "coordinator", "c@example.org", "a-long-passphrase"
    )
    # The participant, reminded by text, replied STOP to the study's texts: Twilio refuses
    # the text of the day before V2 for good, so it dies on first try.
    with (
        override_settings(
            SMS_BACKEND="tests.scheduler.test_admin_reminders_feeds.StoppedNumberTwilio"
        ),
        time_machine.travel(dt.datetime(2026, 1, 27, 15, 0, tzinfo=dt.UTC), tick=False) as clock,
    ):
        participant = participant_for(
            import_seed("000"),
            anchors={"day1": D(2026, 2, 2)},
            site=SiteFactory.create(code="nih-cc", name="NIH Clinical Center"),
            study_id="NIH-CC-001",
            phone="+1 301 555 0100",
            reminder_channels=["sms"],
        )
        participant_enroll(participant=participant, on=D(2026, 1, 5))
        v2 = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V2")
        visit_book(visit=v2, local_date=D(2026, 2, 2), local_time=dt.time(9, 0), by=coordinator)
        clock.move_to(dt.datetime(2026, 2, 1, 15, 0, tzinfo=dt.UTC))
        reminders_sweep()  # delivered inline once committed (eager Celery)
    dead = Reminder.objects.get(status=Reminder.Status.DEAD)

    # The admin shows clinical data through memberships: a coordinator at every site.
    member_everywhere(get_user_model().objects.get(username="coordinator"))
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
    assert (dead.rule_code, dead.channel, errors) == ("P1D", "sms", [UNSUBSCRIBED])
    assert message == ["1 reminder(s) re-queued: they go out with the next sweep."]
    assert left == 0
    assert (dead.status, dead.attempts, dead.last_error) == ("pending", 0, "")
