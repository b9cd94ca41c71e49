"""The admin's reminder outbox, coordinator notifications, reminder preferences and calendar
feeds: failures are listed with their error and retried through the service, feed URLs are
shown once and work, clinical fields of a participant cannot be edited from its form."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from typing import Any

import pytest
import time_machine
from django.core.mail.backends.base import BaseEmailBackend
from django.urls import reverse
from twilio.http import HttpClient
from twilio.http.response import Response

from participants.models import Participant
from scheduler.calendars.feeds import feed_create
from scheduler.models import CalendarFeed, CoordinatorNotification, Reminder, ScheduledVisit
from scheduler.outbox.sms import TwilioSmsBackend
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll, visit_book
from tests.conftest import sign_in
from tests.factories import (
    SiteFactory,
    member,
    member_of_every_trial_site,
    participant_for,
    site_feed_create,
)
from tests.scheduler.test_admin_views import change_url, tables
from trials.models import ProtocolVersion, Site, TrialSite

D = dt.date
# A week before the sweep: the admin session of the tests (two weeks) outlives it.
ENROLLED_AT = dt.datetime(2026, 1, 27, 15, 0, tzinfo=dt.UTC)
# Beat's sweep as time passes: after V2's window closes, then after it opens and is overdue.
FIRST_SWEEP = dt.datetime(2026, 2, 1, 15, 0, tzinfo=dt.UTC)
SWEPT_AT = dt.datetime(2026, 2, 3, 15, 0, tzinfo=dt.UTC)
PUBLIC_URL = "https://visits.example.org"
# What Twilio answers, for good, once a participant has replied STOP.
UNSUBSCRIBED = "Twilio 400: Unable to create record: Attempt to send to unsubscribed recipient"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


class RefusingSmtp(BaseEmailBackend):
    """The outside world: an SMTP server that refuses every connection."""

    def send_messages(self, email_messages: Any) -> int:
        raise ConnectionRefusedError("connection refused")


class UnsubscribedRecipientHttp(HttpClient):
    """The outside world: Twilio's Messages API answering every text with error 21610, as it
    does for good once the recipient has replied STOP."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("fake-twilio"), False)

    def request(
        self,
        method: str,
        uri: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = False,
    ) -> Response:
        return Response(
            400, json.dumps({"code": 21610, "message": "Attempt to send to unsubscribed recipient"})
        )


class StoppedNumberTwilio(TwilioSmsBackend):
    """Twilio, for a participant who replied STOP to the study's texts."""

    def __init__(self) -> None:
        super().__init__(http_client=UnsubscribedRecipientHttp())


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(ENROLLED_AT, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def public_url(settings) -> None:
    settings.PUBLIC_URL = PUBLIC_URL


@pytest.fixture
def niams(import_seed) -> ProtocolVersion:
    return import_seed("000")


def enrolled(version: ProtocolVersion, site: Site, study_id: str, **fields: Any) -> Participant:
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 2)}, site=site, study_id=study_id, **fields
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


def sweep_at(clock, when: dt.datetime, capture) -> None:
    """Time passes to `when`; beat's sweep runs and the workers deliver what is due."""
    clock.move_to(when)
    with capture(execute=True):
        reminders_sweep()


@pytest.fixture
def outbox(
    niams, settings, clock, admin_user, django_capture_on_commit_callbacks
) -> dict[str, Participant]:
    """Two participants whose first reminders could not be delivered. NIH-001 is reminded by
    text and booked for V2, but replied STOP to the study's texts: Twilio refuses the texts
    before V2 for good (dead at once). UCSF's mail server refuses connections: its
    coordinators' first email about UCSF-001's unbooked V2 failed, to be retried."""
    settings.EMAIL_BACKEND = f"{__name__}.RefusingSmtp"
    settings.SMS_BACKEND = f"{__name__}.StoppedNumberTwilio"
    nih = SiteFactory.create(code="nih-cc", name="NIH Clinical Center")
    refusing = SiteFactory.create(code="ucsf", name="UCSF", email="visits@ucsf.example")
    stopped = enrolled(niams, nih, "NIH-001", phone="+1 301 555 0100", reminder_channels=["sms"])
    v2 = ScheduledVisit.objects.get(participant=stopped, visit_definition__code="V2")
    visit_book(visit=v2, local_date=D(2026, 2, 2), local_time=dt.time(9, 0), by=admin_user)
    participants = {"dead": stopped, "failed": enrolled(niams, refusing, "UCSF-001")}
    sweep_at(clock, FIRST_SWEEP, django_capture_on_commit_callbacks)
    sweep_at(clock, SWEPT_AT, django_capture_on_commit_callbacks)
    return participants


def reminder_rows(**filters: Any) -> list[tuple]:
    return list(
        Reminder.objects.filter(**filters)
        .order_by("id")
        .values_list(
            "id", "status", "attempts", "next_attempt_at", "enqueued_at", "sent_at", "last_error"
        )
    )


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# ----------------------------------------------------------------------------------------
# Reminders


def test_failed_and_dead_list_shows_each_error(admin_client, outbox) -> None:
    response = admin_client.get(
        reverse("admin:scheduler_reminder_changelist"), {"attention": "failed_or_dead"}
    )

    # Latest due first: the day-before text, then the coordinators' email of two days
    # before. (The fasting text of the evening before V2 was first swept after V2 began: not
    # sent, so neither failed nor dead.)
    assert tables(response)["result_list"] == [
        [
            "",
            "niams-ani-vascular/NIH-001",
            "P1D",
            "before_visit",
            "sms",
            "participant",
            "dead (gave up)",
            "1",
            UNSUBSCRIBED,
            "-",
        ],
        [
            "",
            "niams-ani-vascular/UCSF-001",
            "C_CLOSE",
            "window_closing_unbooked",
            "email",
            "coordinator",
            "failed (will retry)",
            "2",
            "email not accepted: ConnectionRefusedError",
            "-",
        ],
    ]


def test_retry_requeues_a_dead_reminder_and_leaves_sent_ones_alone(
    admin_client, outbox, clock
) -> None:
    participant = outbox["dead"]
    dead = [row[0] for row in reminder_rows(participant=participant, status=Reminder.Status.DEAD)]
    sent_before = reminder_rows(participant=participant, status=Reminder.Status.SENT)
    selected = [*dead, *(row[0] for row in sent_before)]
    retried_at = SWEPT_AT + dt.timedelta(hours=1)
    clock.move_to(retried_at)

    response = admin_client.post(
        reverse("admin:scheduler_reminder_changelist"),
        {"action": "retry", "_selected_action": selected},
        follow=True,
    )

    assert messages_of(response) == [
        "1 reminder(s) re-queued: they go out with the next sweep.",
        "1 selected reminder(s) were neither failed nor dead and were left as they were.",
    ]
    assert reminder_rows(pk__in=dead) == [
        (pk, "pending", 0, retried_at, None, None, "") for pk in dead
    ]
    assert reminder_rows(participant=participant, status=Reminder.Status.SENT) == sent_before
    assert (len(dead), len(sent_before)) == (1, 1)


def test_retry_needs_a_write_role(client, django_user_model, outbox) -> None:
    staff = django_user_model.objects.create_user("monitor", is_staff=True)
    member(staff, trial=outbox["dead"].trial, role="sponsor_monitor")
    sign_in(client, staff)
    dead = [row[0] for row in reminder_rows(status=Reminder.Status.DEAD)]

    page = client.get(reverse("admin:scheduler_reminder_changelist"))
    client.post(
        reverse("admin:scheduler_reminder_changelist"),
        {"action": "retry", "_selected_action": dead},
    )

    assert page.context["action_form"] is None
    assert [row[1:3] for row in reminder_rows(pk__in=dead)] == [("dead", 1)]


def test_participant_page_lists_the_reminders_due_so_far_latest_first(admin_client, outbox) -> None:
    page = admin_client.get(change_url(outbox["dead"]))
    links = dict(page.context["related_links"])
    every_reminder = admin_client.get(links["Reminders"])

    formset = next(
        inline.formset
        for inline in page.context["inline_admin_formsets"]
        if inline.formset.model is Reminder
    )
    # V2 was booked at enrollment: the coordinators' "still unbooked" reminders were
    # cancelled, the day-before text went dead, and the fasting text, first swept the day
    # after V2 began, was not sent.
    assert [
        (r.rule_code, r.channel, r.due_at, r.status, r.last_error) for r in formset.get_queryset()
    ] == [
        ("C_OVERDUE", "in_app", dt.datetime(2026, 2, 3, 13, 0, tzinfo=dt.UTC), "sent", ""),
        ("C_OPEN", "in_app", dt.datetime(2026, 2, 2, 13, 0, tzinfo=dt.UTC), "cancelled", ""),
        (
            "FAST",
            "sms",
            dt.datetime(2026, 2, 2, 0, 0, tzinfo=dt.UTC),
            "cancelled",
            "the visit had begun",
        ),
        ("P1D", "sms", dt.datetime(2026, 2, 1, 14, 0, tzinfo=dt.UTC), "dead", UNSUBSCRIBED),
        ("C_CLOSE", "in_app", dt.datetime(2026, 1, 31, 13, 0, tzinfo=dt.UTC), "cancelled", ""),
        ("C_CLOSE", "email", dt.datetime(2026, 1, 31, 13, 0, tzinfo=dt.UTC), "cancelled", ""),
    ]
    assert every_reminder.context["cl"].result_count == 46


def test_coordinator_notifications_are_listed_newest_first_per_site(admin_client, outbox) -> None:
    site = Site.objects.get(code="ucsf")

    response = admin_client.get(
        reverse("admin:scheduler_coordinatornotification_changelist"),
        {"site__id__exact": site.pk},
    )

    assert tables(response)["result_list"] == [
        [
            "",  # the action checkbox
            "UCSF",
            "niams-ani-vascular UCSF-001 · V2 Treatment visit 1 (week 0): overdue (window "
            "2026-02-02 to 2026-02-02), neither recorded nor rescheduled",
            "-",
        ],
        [
            "",  # the action checkbox
            "UCSF",
            "niams-ani-vascular UCSF-001 · V2 Treatment visit 1 (week 0): window open "
            "(2026-02-02 to 2026-02-02), not booked yet",
            "-",
        ],
        [
            "",  # the action checkbox
            "UCSF",
            "niams-ani-vascular UCSF-001 · V2 Treatment visit 1 (week 0): window closes "
            "2026-02-02, still not booked",
            "-",
        ],
    ]
    # The fourth is NIH's, about NIH-001's booked V2.
    assert CoordinatorNotification.objects.count() == 4


# ----------------------------------------------------------------------------------------
# Query counts


@pytest.fixture
def populated(niams, clock, django_capture_on_commit_callbacks, admin_user):
    """`size` participants at one site, each with reminders, notifications and a feed."""

    def populate(size: int) -> None:
        site = SiteFactory.create(code="nih-cc", email="visits@nih.example")
        for number in range(size):
            participant = enrolled(niams, site, f"NIH-{number:03d}")
            feed_create(participant=participant, by=admin_user)
        sweep_at(clock, SWEPT_AT, django_capture_on_commit_callbacks)

    return populate


CHANGELIST_QUERIES = {
    # changelist: (queries, rows per participant); one query reads the user's memberships,
    # one the second factor the superuser's session was verified with (django-otp).
    "scheduler_reminder": (11, 44),
    "scheduler_coordinatornotification": (8, 3),
    "scheduler_calendarfeed": (8, 1),
}


@pytest.mark.parametrize("changelist", sorted(CHANGELIST_QUERIES))
@pytest.mark.parametrize("size", [2, 6])
def test_changelists_cost_the_same_queries_at_any_size(
    admin_client, populated, django_assert_num_queries, changelist, size
) -> None:
    populated(size)
    queries, rows_each = CHANGELIST_QUERIES[changelist]

    with django_assert_num_queries(queries):
        response = admin_client.get(reverse(f"admin:{changelist}_changelist"))

    assert response.context["cl"].result_count == rows_each * size


# ----------------------------------------------------------------------------------------
# Calendar feeds

NEW_FEED_URL = re.compile(r'id="new-feed-url" value="([^"]+)"')


def shown_feed_url(response: Any) -> str:
    [url] = NEW_FEED_URL.findall(response.content.decode())
    return url


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1].removesuffix(".ics")


def feeds_page(owner: Participant | Site) -> str:
    kind = "participant" if isinstance(owner, Participant) else "site"
    return reverse(f"admin:scheduler_calendarfeed_{kind}", args=[owner.pk])


@pytest.fixture
def participant(niams) -> Participant:
    return enrolled(niams, SiteFactory.create(code="nih-cc", name="NIH Clinical Center"), "NIH-001")


def test_feed_created_in_the_admin_shows_its_url_once_and_the_url_works(
    admin_client, client, admin_user, participant, caplog
) -> None:
    participant_page = admin_client.get(change_url(participant))

    with caplog.at_level("DEBUG"):
        created = admin_client.post(feeds_page(participant), {"_create": ""})
        url = shown_feed_url(created)
        subscribed = client.get(url.removeprefix(PUBLIC_URL))
    later = admin_client.get(feeds_page(participant))

    token = token_of(url)
    feed = CalendarFeed.objects.get()
    assert ("Calendar feed", feeds_page(participant)) in participant_page.context["related_links"]
    assert url == f"{PUBLIC_URL}/feeds/participant/{token}.ics"
    assert hashlib.sha256(token.encode()).hexdigest() == feed.token_sha256
    assert (feed.participant, feed.site, feed.created_by, feed.revoked_at) == (
        participant,
        None,
        admin_user,
        None,
    )
    assert (subscribed.status_code, subscribed["Content-Type"]) == (
        200,
        "text/calendar; charset=utf-8",
    )
    assert created["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert tables(later)["feeds"] == [
        # On the site's clock (New York), not the server's UTC.
        [str(feed.pk), "Tue 27 Jan 2026 10:00 EST", "admin", "active", "Revoke Regenerate"]
    ]
    assert token not in later.content.decode()
    assert [record.getMessage() for record in caplog.records if token in record.getMessage()] == []


def test_revoking_a_feed_in_the_admin_makes_its_url_answer_404(
    admin_client, client, participant
) -> None:
    url = shown_feed_url(admin_client.post(feeds_page(participant), {"_create": ""}))
    feed = CalendarFeed.objects.get()

    revoked = admin_client.post(
        feeds_page(participant), {"_revoke": "", "feed": feed.pk}, follow=True
    )

    assert messages_of(revoked) == [f"Feed {feed.pk} revoked: its URL answers 404 from now on."]
    assert client.get(url.removeprefix(PUBLIC_URL)).status_code == 404
    assert tables(revoked)["feeds"] == [
        [
            str(feed.pk),
            "Tue 27 Jan 2026 10:00 EST",
            "admin",
            "revoked Tue 27 Jan 2026 10:00 EST",
            "—",
        ]
    ]


def test_regenerating_a_feed_replaces_its_url(admin_client, client, participant) -> None:
    old_url = shown_feed_url(admin_client.post(feeds_page(participant), {"_create": ""}))
    old = CalendarFeed.objects.get()

    new_url = shown_feed_url(
        admin_client.post(feeds_page(participant), {"_regenerate": "", "feed": old.pk})
    )

    new = CalendarFeed.objects.exclude(pk=old.pk).get()
    assert hashlib.sha256(token_of(new_url).encode()).hexdigest() == new.token_sha256
    assert [
        client.get(old_url.removeprefix(PUBLIC_URL)).status_code,
        client.get(new_url.removeprefix(PUBLIC_URL)).status_code,
    ] == [404, 200]
    assert (new.participant, new.revoked_at) == (participant, None)


def test_site_feed_is_created_from_the_site_page(admin_client, client, participant) -> None:
    site = participant.site
    site_page = admin_client.get(change_url(site))

    url = shown_feed_url(admin_client.post(feeds_page(site), {"_create": ""}))

    feed = CalendarFeed.objects.get()
    assert site_page.context["related_links"] == [
        ("Calendar feed", feeds_page(site)),
        ("Bookings by resource", f"/admin/site-bookings/{site.pk}/"),
    ]
    assert url == f"{PUBLIC_URL}/feeds/site/{token_of(url)}.ics"
    assert (feed.site, feed.participant) == (site, None)
    subscribed = client.get(url.removeprefix(PUBLIC_URL))
    assert (subscribed.status_code, subscribed["Content-Type"]) == (
        200,
        "text/calendar; charset=utf-8",
    )


def test_feed_changelist_revoke_action_revokes_through_the_service(
    admin_client, client, admin_user, participant
) -> None:
    feed, token = feed_create(participant=participant, by=admin_user)

    response = admin_client.post(
        reverse("admin:scheduler_calendarfeed_changelist"),
        {"action": "revoke", "_selected_action": [feed.pk]},
        follow=True,
    )

    feed.refresh_from_db()
    assert messages_of(response) == ["1 feed(s) revoked: their URLs answer 404 from now on."]
    assert feed.revoked_at == ENROLLED_AT
    assert client.get(f"/feeds/participant/{token}.ics").status_code == 404
    assert [entry.history_change_reason for entry in feed.history.order_by("history_id")] == [
        "feed created",
        "feed revoked",
    ]


def test_feed_changelist_filters_a_sites_feed_with_its_participants_feeds(
    admin_client, niams, participant, admin_user
) -> None:
    elsewhere = enrolled(niams, SiteFactory.create(code="ucsf", name="UCSF"), "UCSF-001")
    site_feed, _ = site_feed_create(site=participant.site, by=admin_user)
    participant_feed, _ = feed_create(participant=participant, by=admin_user)
    feed_create(participant=elsewhere, by=admin_user)

    response = admin_client.get(
        reverse("admin:scheduler_calendarfeed_changelist"), {"site": participant.site_id}
    )

    assert [feed.pk for feed in response.context["cl"].result_list] == [
        participant_feed.pk,
        site_feed.pk,
    ]


def test_feed_buttons_need_a_write_role(client, django_user_model, participant) -> None:
    staff = django_user_model.objects.create_user("monitor", is_staff=True)
    member(staff, trial=participant.trial, role="sponsor_monitor")
    sign_in(client, staff)

    page = client.get(feeds_page(participant))
    refused = client.post(feeds_page(participant), {"_create": ""})

    assert (page.status_code, page.context["may_create"], page.context["may_revoke"]) == (
        200,
        False,
        False,
    )
    assert refused.status_code == 403
    assert CalendarFeed.objects.count() == 0


# ----------------------------------------------------------------------------------------
# The participant's form: reminder preferences editable, clinical fields not


def inline_forms(page: Any) -> dict[str, Any]:
    """The inlines' management forms and hidden row ids, as the browser posts them back."""
    data = {}
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for form in inline.formset.forms:
            for hidden in form.hidden_fields():
                data[hidden.html_name] = hidden.value()
    return data


def posted_form(participant: Participant, **changes: Any) -> dict[str, Any]:
    fields = {
        "study_id": participant.study_id,
        "birth_date": participant.birth_date.isoformat(),
        "weight_kg": str(participant.weight_kg),
        "email": participant.email,
        "phone": participant.phone,
        "guardian_name": participant.guardian_name,
        "guardian_email": participant.guardian_email,
        "timezone": participant.timezone,
        "language": participant.language,
        "reminder_channels": participant.reminder_channels,
        "quiet_hours_start": "",
        "quiet_hours_end": "",
    }
    return {**fields, **changes}


def locked(participant: Participant) -> tuple:
    participant.refresh_from_db()
    return (
        participant.trial_id,
        participant.site_id,
        participant.status,
        participant.protocol_version_id,
        participant.enrolled_at,
        participant.ended_on,
    )


def test_participant_clinical_fields_cannot_be_changed_by_posting_them(
    admin_client, participant, import_seed
) -> None:
    other_version = import_seed("001")
    other_site = SiteFactory.create(code="ucsf")
    TrialSite.objects.create(trial=other_version.trial, site=other_site)
    before = locked(participant)
    page = admin_client.get(change_url(participant))

    response = admin_client.post(
        change_url(participant),
        {
            **posted_form(participant),
            **inline_forms(page),
            "trial": other_version.trial_id,
            "site": other_site.pk,
            "status": "withdrawn",
            "protocol_version": other_version.pk,
            "enrolled_at_0": "2020-01-01",
            "enrolled_at_1": "10:00",
            "ended_on": "2026-01-28",
        },
    )

    assert (response.status_code, response["Location"]) == (
        302,
        reverse("admin:participants_participant_changelist"),
    )
    assert locked(participant) == before
    assert sorted(page.context["adminform"].form.fields) == [
        "birth_date",
        "email",
        "guardian_email",
        "guardian_name",
        "guardian_phone",
        "language",
        "phone",
        "quiet_hours_end",
        "quiet_hours_start",
        "reminder_channels",
        "reminders_opt_out",
        "study_id",
        "timezone",
        "weight_kg",
    ]


def participant_reminders(participant: Participant) -> list[tuple[str, str, dt.datetime, str]]:
    return list(
        Reminder.objects.filter(participant=participant, audience="participant")
        .exclude(event="invite")  # calendar invites are not reminders: opting out keeps them
        .order_by("due_at", "channel")
        .values_list("rule_code", "channel", "due_at", "status")
    )


@pytest.fixture
def booked(participant, admin_user) -> Participant:
    """The participant has an email address, a phone and a booked V3: reminders by email."""
    Participant.objects.filter(pk=participant.pk).update(
        email="nih-001@example.org", phone="+1 301 555 0100"
    )
    v3 = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V3")
    visit_book(visit=v3, local_date=D(2026, 3, 2), local_time=dt.time(9, 0), by=admin_user)
    participant.refresh_from_db()
    return participant


def test_reminder_preferences_edited_on_the_participant_page_are_saved_and_planned(
    admin_client, booked
) -> None:
    page = admin_client.get(change_url(booked))
    before = participant_reminders(booked)

    response = admin_client.post(
        change_url(booked),
        {
            **posted_form(
                booked,
                reminder_channels=["email", "sms"],
                quiet_hours_start="21:00",
                quiet_hours_end="08:00",
                guardian_name="Ada Guardian",
                guardian_email="ada@example.org",
            ),
            **inline_forms(page),
        },
    )

    booked.refresh_from_db()
    assert response.status_code == 302
    assert (
        booked.reminder_channels,
        booked.reminders_opt_out,
        booked.quiet_hours_start,
        booked.quiet_hours_end,
        booked.guardian_name,
        booked.guardian_email,
    ) == (["email", "sms"], False, dt.time(21, 0), dt.time(8, 0), "Ada Guardian", "ada@example.org")
    assert before == [
        ("P7D", "email", dt.datetime(2026, 2, 23, 14, 0, tzinfo=dt.UTC), "pending"),
        ("P1D", "email", dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.UTC), "pending"),
    ]
    # SMS is now wanted and the participant has a phone: the day-before reminder goes by both.
    assert participant_reminders(booked) == [
        ("P7D", "email", dt.datetime(2026, 2, 23, 14, 0, tzinfo=dt.UTC), "pending"),
        ("P1D", "email", dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.UTC), "pending"),
        ("P1D", "sms", dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.UTC), "pending"),
    ]


def test_opting_out_on_the_participant_page_cancels_pending_reminders(admin_client, booked) -> None:
    page = admin_client.get(change_url(booked))

    admin_client.post(
        change_url(booked),
        {**posted_form(booked, reminders_opt_out="on"), **inline_forms(page)},
    )

    booked.refresh_from_db()
    assert booked.reminders_opt_out is True
    assert participant_reminders(booked) == [
        ("P7D", "email", dt.datetime(2026, 2, 23, 14, 0, tzinfo=dt.UTC), "cancelled"),
        ("P1D", "email", dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.UTC), "cancelled"),
    ]


def test_quiet_hours_need_both_ends(admin_client, participant) -> None:
    page = admin_client.get(change_url(participant))

    response = admin_client.post(
        change_url(participant),
        {**posted_form(participant, quiet_hours_start="21:00"), **inline_forms(page)},
    )

    participant.refresh_from_db()
    assert response.context["adminform"].form.non_field_errors() == [
        "Give both ends of the quiet hours, or neither."
    ]
    assert (participant.quiet_hours_start, participant.quiet_hours_end) == (None, None)


def test_trial_site_approval_is_read_only_on_the_trial_page(admin_client, participant) -> None:
    page = admin_client.get(change_url(participant.trial))

    [formset] = [
        inline.formset
        for inline in page.context["inline_admin_formsets"]
        if inline.formset.model is TrialSite
    ]
    assert sorted(formset.form.base_fields) == ["activated_on", "site", "trial"]
