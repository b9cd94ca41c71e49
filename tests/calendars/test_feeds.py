"""Subscribable feeds: capability URLs, conditional requests, what they show and never show."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import re
from decimal import Decimal

import pytest
from icalendar import Calendar

from scheduler.calendars.events import visit_uid
from scheduler.calendars.feeds import feed_create, feed_path, feed_regenerate, feed_revoke
from scheduler.models import CalendarFeed, ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.calendars.conftest import ical_of, visit_at
from tests.factories import participant_for
from trials.models import Arm

pytestmark = pytest.mark.django_db


def get_feed(client, feed, token, **headers):
    return client.get(feed_path(feed=feed, token=token), headers=headers)


def test_participant_feed_lists_every_visit_and_participant_facing_milestone(
    client, enroll_niams
) -> None:
    participant = enroll_niams()
    feed, token = feed_create(participant=participant)

    response = get_feed(client, feed, token)

    calendar = Calendar.from_ical(response.content)
    calendar.validate()
    events = calendar.walk("VEVENT")
    visits = ScheduledVisit.objects.filter(participant=participant)
    assert (response.status_code, response["Content-Type"]) == (200, "text/calendar; charset=utf-8")
    assert str(calendar["METHOD"]) == "PUBLISH"
    assert sorted(str(e["UID"]) for e in events if str(e["UID"]).startswith("visit-")) == sorted(
        visit_uid(v) for v in visits
    )
    assert [
        (str(e["SUMMARY"]), e.decoded("dtstart"))
        for e in events
        if str(e["UID"]).startswith("milestone-")
    ] == [("End of required contraception", dt.date(2027, 1, 4))]
    assert response["Cache-Control"] == "private, max-age=300"


def test_participant_feed_shows_each_new_taper_dose_on_the_day_it_starts(
    client, import_seed, nih, django_capture_on_commit_callbacks
) -> None:
    version = import_seed("001")
    participant = participant_for(
        version,
        anchors={"psl_start": dt.date(2026, 3, 2), "day1": dt.date(2026, 3, 16)},
        weight_kg=Decimal(60),
        site=nih,
    )
    participant_enroll(participant=participant, on=dt.date(2026, 3, 1))
    feed, token = feed_create(participant=participant)

    events = Calendar.from_ical(get_feed(client, feed, token).content).walk("VEVENT")

    doses = [
        (e.decoded("dtstart"), str(e["SUMMARY"]))
        for e in events
        if str(e["UID"]).startswith("milestone-")
    ]
    assert doses[:3] == [
        (dt.date(2026, 3, 2), "Prednisolone dose from today: 36 mg/day"),
        (dt.date(2026, 3, 16), "Prednisolone dose from today: 31 mg/day"),
        (dt.date(2026, 3, 23), "Prednisolone dose from today: 27 mg/day"),
    ]
    assert len(doses) == 12  # weeks 0 and 2..12; week 1 keeps week 0's dose


def test_site_feed_names_study_ids_and_no_contact_details(client, enroll_niams, nih) -> None:
    enroll_niams("NIH-001", email="first@example.org")
    enroll_niams("NIH-002", arm="PBO", email="second@example.org")
    feed, token = feed_create(site=nih)

    body = get_feed(client, feed, token).content.decode()

    summaries = sorted(str(e["SUMMARY"]) for e in Calendar.from_ical(body).walk("VEVENT"))
    assert summaries[:2] == [
        "NIH-001 · V1 Screening (to book)",
        "NIH-001 · V10 Treatment visit 9 (week 32) (to book)",
    ]
    assert len(summaries) == 24
    assert "example.org" not in body
    assert "1980" not in body  # birth dates


def test_revoked_feed_answers_404_with_no_data_and_regenerating_gives_a_new_url(
    client, enroll_niams
) -> None:
    participant = enroll_niams()
    feed, token = feed_create(participant=participant)
    new_feed, new_token = feed_regenerate(feed=feed)

    old = get_feed(client, feed, token)
    new = get_feed(client, new_feed, new_token)
    feed_revoke(feed=new_feed)
    revoked = get_feed(client, new_feed, new_token)

    assert (old.status_code, new.status_code, revoked.status_code) == (404, 200, 404)
    assert b"VEVENT" not in old.content + revoked.content
    assert client.get(f"/feeds/site/{new_token}.ics").status_code == 404  # wrong kind


def test_feed_tokens_are_random_256_bit_and_stored_only_as_a_hash(enroll_niams) -> None:
    participant = enroll_niams()

    feed, token = feed_create(participant=participant)

    assert len(token) == 43  # 32 random bytes, URL-safe base64
    stored = CalendarFeed.objects.get(pk=feed.pk)
    assert stored.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(CalendarFeed.objects.values().get(pk=feed.pk))


def test_feed_answers_conditional_requests_until_something_changes(
    client, enroll_niams, coordinator
) -> None:
    participant = enroll_niams()
    feed, token = feed_create(participant=participant)
    first = get_feed(client, feed, token)

    unchanged = get_feed(client, feed, token, if_none_match=first["ETag"])
    also_unchanged = get_feed(client, feed, token, if_modified_since=first["Last-Modified"])
    visit_book(
        visit=visit_at(participant, "V2"),
        local_date=dt.date(2026, 2, 2),
        local_time=dt.time(9, 0),
        by=coordinator,
    )
    changed = get_feed(client, feed, token, if_none_match=first["ETag"])

    assert (first.status_code, unchanged.status_code, also_unchanged.status_code) == (200, 304, 304)
    assert unchanged.content == b""
    assert changed.status_code == 200
    assert changed["ETag"] != first["ETag"]


def test_blinded_trial_arm_never_reaches_a_feed_invite_or_email(
    client, enroll_niams, nih, coordinator, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    on_drug = enroll_niams("NIH-001", arm="ANI")
    on_placebo = enroll_niams("NIH-002", arm="PBO")
    with django_capture_on_commit_callbacks(execute=True):
        visit_book(
            visit=visit_at(on_drug, "V2"),
            local_date=dt.date(2026, 2, 2),
            local_time=dt.time(9, 0),
            by=coordinator,
        )
    produced = [get_feed(client, *feed_create(site=nih)).content.decode()]
    for participant in (on_drug, on_placebo):
        produced.append(get_feed(client, *feed_create(participant=participant)).content.decode())
    for message in mailoutbox:
        produced += [message.subject, message.body, ical_of(message).to_ical().decode()]
        produced += [content for content, _ in message.alternatives]

    arms = list(Arm.objects.filter(version=on_drug.protocol_version))
    words = [arm.name for arm in arms] + ["placebo", "anifrolumab", "lupus", on_drug.trial.title]
    codes = re.compile(r"\b(" + "|".join(arm.code for arm in arms) + r")\b")
    # 3 feeds, and 25 emails (12 + 12 invites, 1 booking) of 5 texts each.
    assert len(mailoutbox) == 25
    assert len(produced) == 3 + 25 * 5
    for text in produced:
        assert not any(word.lower() in text.lower() for word in words)
        assert codes.search(text) is None


def test_a_feed_with_nothing_to_show_yet_is_an_empty_calendar(client, import_seed, nih) -> None:
    participant = participant_for(
        import_seed("000"), anchors={"day1": dt.date(2026, 2, 2)}, site=nih
    )  # in screening: no calendar yet
    feed, token = feed_create(participant=participant)

    response = get_feed(client, feed, token)

    assert response.status_code == 200
    assert Calendar.from_ical(response.content).walk("VEVENT") == []


def test_feed_tokens_never_reach_the_logs(client) -> None:
    token = "x" * 43
    [console] = [
        handler
        for handler in logging.getLogger("django.request").handlers
        if isinstance(handler, logging.StreamHandler) and handler.name == "console"
    ]
    written = io.StringIO()
    previous = console.setStream(written)
    try:
        response = client.get(f"/feeds/participant/{token}.ics")
    finally:
        console.setStream(previous)

    assert response.status_code == 404
    assert written.getvalue().endswith(
        "WARNING django.request Not Found: /feeds/participant/<token>.ics\n"
    )
    assert token not in written.getvalue()
