"""Subscribable feeds: capability URLs, conditional requests, what they show and never show."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import re
from collections import Counter
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.http import HttpResponse
from icalendar import Calendar, Component

from scheduler.calendars.events import visit_uid
from scheduler.calendars.feeds import (
    FeedVersion,
    feed_create,
    feed_path,
    feed_regenerate,
    feed_revoke,
    feed_version,
)
from scheduler.models import CalendarFeed, ScheduledVisit
from scheduler.selectors import VISIT_GLANCE_LABELS, visit_glance_status
from scheduler.services import (
    participant_enroll,
    visit_book,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
)
from tests.calendars.conftest import NOW, visit_at
from tests.factories import participant_for, site_feed_create
from trials.models import Arm

pytestmark = pytest.mark.django_db


def get_feed(client, feed, token, **headers):
    """The feed's response; a streamed one (a site feed) read whole, so `.content` works."""
    response = client.get(feed_path(feed=feed, token=token), headers=headers)
    if not response.streaming:
        return response
    read = HttpResponse(b"".join(response.streaming_content), status=response.status_code)
    for header, value in response.items():
        read[header] = value
    return read


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


def test_site_feed_names_trial_and_study_ids_and_no_contact_details(
    client, enroll_niams, nih
) -> None:
    enroll_niams("NIH-001", email="first@example.org")
    enroll_niams("NIH-002", arm="PBO", email="second@example.org")
    feed, token = site_feed_create(site=nih)

    body = get_feed(client, feed, token).content.decode()

    summaries = sorted(str(e["SUMMARY"]) for e in Calendar.from_ical(body).walk("VEVENT"))
    assert summaries[:2] == [
        "niams-ani-vascular NIH-001 · V1 Screening (overdue)",  # its window closed yesterday
        "niams-ani-vascular NIH-001 · V10 Treatment visit 9 (week 32) (to book)",
    ]
    assert len(summaries) == 24
    assert "example.org" not in body
    # Birth dates (1980-06-15): anywhere but the random UUIDs of the UIDs, which may hold
    # "1980" by chance (one did, and failed a CI run).
    lines = body.replace("\r\n ", "").split("\r\n")
    assert [line for line in lines if "1980" in line and not line.startswith("UID:")] == []
    assert len([line for line in lines if line.startswith("UID:")]) == 24


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

    # Last-Modified is when this version was first served, given once that second is over.
    with time_machine.travel(NOW + dt.timedelta(seconds=2), tick=False):
        later = get_feed(client, feed, token)
        unchanged = get_feed(client, feed, token, if_none_match=first["ETag"])
        also_unchanged = get_feed(client, feed, token, if_modified_since=later["Last-Modified"])
        visit_book(
            visit=visit_at(participant, "V2"),
            local_date=dt.date(2026, 2, 2),
            local_time=dt.time(9, 0),
            by=coordinator,
        )
        changed = get_feed(client, feed, token, if_none_match=first["ETag"])
        changed_since = get_feed(client, feed, token, if_modified_since=later["Last-Modified"])

    assert (first.status_code, unchanged.status_code, also_unchanged.status_code) == (200, 304, 304)
    assert "Last-Modified" not in first
    assert later["Last-Modified"] == "Tue, 20 Jan 2026 15:00:00 GMT"
    assert unchanged.content == b""
    assert (changed.status_code, changed_since.status_code) == (200, 200)
    assert changed["ETag"] != first["ETag"]
    assert "Last-Modified" not in changed  # first served in this very second


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
    produced = [get_feed(client, *site_feed_create(site=nih)).content.decode()]
    for participant in (on_drug, on_placebo):
        produced.append(get_feed(client, *feed_create(participant=participant)).content.decode())
    for message in mailoutbox:
        produced += [message.subject, message.body]
        produced += [content for content, _ in message.alternatives]

    arms = list(Arm.objects.filter(version=on_drug.protocol_version))
    words = [arm.name for arm in arms] + ["placebo", "anifrolumab", "lupus", on_drug.trial.title]
    codes = re.compile(r"\b(" + "|".join(arm.code for arm in arms) + r")\b")
    # 3 feeds, and 5 emails: 2 welcome messages (subject, body), 3 invites (subject, body,
    # HTML, calendar): V2 for each participant at enrollment, and its booking.
    assert len(mailoutbox) == 5
    assert len(produced) == 3 + 2 * 2 + 3 * 4
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


# ----------------------------------------------------------------------------------------
# Feeds tell the truth: where a visit happened, what became of it, and its status today


def events_by_uid(client, feed, token) -> dict[str, Component]:
    body = get_feed(client, feed, token).content
    return {str(e["UID"]): e for e in Calendar.from_ical(body).walk("VEVENT")}


def shown(event) -> tuple:
    return (
        str(event["SUMMARY"]),
        str(event["STATUS"]),
        event.decoded("dtstart"),
        event.decoded("dtend"),
        str(event["DESCRIPTION"]).split("\n"),
    )


NIH_PLACE = "NIH Clinical Center, 10 Center Drive, Bethesda, MD 20892"


@pytest.mark.parametrize(
    ("actual_date", "actual_time", "start", "end", "when", "status", "site_suffix", "site_lines"),
    [
        (
            dt.date(2026, 1, 19),
            None,
            dt.date(2026, 1, 19),
            dt.date(2026, 1, 20),
            "When: Monday, January 19, 2026",
            "done",
            "done",
            ["Status: done", "Done 2026-01-19"],
        ),
        (
            dt.date(2026, 1, 19),
            dt.time(8, 45),
            dt.datetime(2026, 1, 19, 13, 45, tzinfo=dt.UTC),
            dt.datetime(2026, 1, 19, 17, 45, tzinfo=dt.UTC),  # 4 hours of screening
            "When: Monday, January 19, 2026 at 8:45\u202fAM (America/New_York time)",
            "done",
            "done",
            ["Status: done", "Done 2026-01-19"],
        ),
        (
            dt.date(2026, 1, 20),  # a day after its window: a deviation
            dt.time(7, 0),
            dt.datetime(2026, 1, 20, 12, 0, tzinfo=dt.UTC),
            dt.datetime(2026, 1, 20, 16, 0, tzinfo=dt.UTC),
            "When: Tuesday, January 20, 2026 at 7:00\u202fAM (America/New_York time)",
            "out of window",
            "done, out of window",
            ["Status: out of window", "Done 2026-01-20"],
        ),
    ],
)
def test_a_visit_done_without_a_booking_shows_where_it_happened_in_both_feeds(
    client,
    enroll_niams,
    nih,
    coordinator,
    actual_date,
    actual_time,
    start,
    end,
    when,
    status,
    site_suffix,
    site_lines,
) -> None:
    participant = enroll_niams()
    v1 = visit_at(participant, "V1")
    visit_record_done(
        visit=v1,
        actual_date=actual_date,
        actual_time=actual_time,
        by=coordinator,
        reason="late" if actual_date > v1.window_end else "",
    )

    mine = events_by_uid(client, *feed_create(participant=participant))[visit_uid(v1)]
    site = events_by_uid(client, *site_feed_create(site=nih))[visit_uid(v1)]

    def utc(value):
        return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value

    assert (str(mine["SUMMARY"]), str(mine["STATUS"])) == ("Done: Screening", "CONFIRMED")
    assert (utc(mine.decoded("dtstart")), utc(mine.decoded("dtend"))) == (start, end)
    assert str(mine["DESCRIPTION"]).split("\n") == [
        when,
        f"Status: {status}",
        "Expected duration: up to 4 hours",
        f"Where: {NIH_PLACE}",
        "Questions, or need another time? Call +1 301-496-2563.",
    ]
    assert (str(site["SUMMARY"]), str(site["STATUS"])) == (
        f"niams-ani-vascular NIH-001 · V1 Screening ({site_suffix})",
        "CONFIRMED",
    )
    assert (utc(site.decoded("dtstart")), utc(site.decoded("dtend"))) == (start, end)
    assert str(site["DESCRIPTION"]).split("\n")[:2] == site_lines


def test_missed_and_cancelled_visits_stay_in_both_feeds_as_cancelled(
    client, enroll_niams, nih, coordinator
) -> None:
    participant = enroll_niams()
    visit_mark_missed(visit=visit_at(participant, "V1"), by=coordinator, reason="no show")
    visit_book(
        visit=visit_at(participant, "V3"),
        local_date=dt.date(2026, 3, 2),
        local_time=dt.time(9, 0),
        by=coordinator,
    )
    visit_cancel(visit=visit_at(participant, "V3"), by=coordinator, reason="unwell")
    visit_cancel(visit=visit_at(participant, "V4"), by=coordinator, reason="unwell")
    uids = {code: visit_uid(visit_at(participant, code)) for code in ("V1", "V3", "V4")}

    mine = events_by_uid(client, *feed_create(participant=participant))
    site = events_by_uid(client, *site_feed_create(site=nih))

    assert len(mine) == 12 + 1 and len(site) == 12  # every visit (and the milestone)
    assert [shown(mine[uids[code]])[:4] for code in ("V1", "V3", "V4")] == [
        ("Missed: Screening", "CANCELLED", dt.date(2026, 1, 5), dt.date(2026, 1, 20)),
        (
            "Cancelled: Treatment visit 2 (week 4)",
            "CANCELLED",
            dt.datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("America/New_York")),
            dt.datetime(2026, 3, 2, 13, 0, tzinfo=ZoneInfo("America/New_York")),
        ),
        (
            "Cancelled: Treatment visit 3 (week 8)",
            "CANCELLED",
            dt.date(2026, 3, 27),
            dt.date(2026, 4, 3),
        ),
    ]
    assert [shown(mine[uids[code]])[4][:2] for code in ("V1", "V3", "V4")] == [
        [
            "This visit did not take place.",
            "When: between Monday, January 5, 2026 and Monday, January 19, 2026",
        ],
        [
            "This visit is cancelled.",
            "When: Monday, March 2, 2026 at 9:00\u202fAM (America/New_York time)",
        ],
        [
            "This visit is cancelled.",
            "When: between Friday, March 27, 2026 and Thursday, April 2, 2026",
        ],
    ]
    assert [
        (str(site[uids[code]]["SUMMARY"]), str(site[uids[code]]["STATUS"]))
        for code in ("V1", "V3", "V4")
    ] == [
        ("niams-ani-vascular NIH-001 · V1 Screening (missed)", "CANCELLED"),
        ("niams-ani-vascular NIH-001 · V3 Treatment visit 2 (week 4) (cancelled)", "CANCELLED"),
        ("niams-ani-vascular NIH-001 · V4 Treatment visit 3 (week 8) (cancelled)", "CANCELLED"),
    ]


# 3 February 2026 03:00 UTC is still 2 February, 22:00, in New York: V2's one-day window is
# open there (due), though its day has passed in UTC.
LATE_EVENING = dt.datetime(2026, 2, 3, 3, 0, tzinfo=dt.UTC)


def test_every_feed_event_states_the_status_computed_with_the_sites_today(
    client, enroll_niams, nih, coordinator
) -> None:
    participant = enroll_niams()
    visit_record_done(
        visit=visit_at(participant, "V1"), actual_date=dt.date(2026, 1, 19), by=coordinator
    )
    visit_book(
        visit=visit_at(participant, "V3"),
        local_date=dt.date(2026, 3, 2),
        local_time=dt.time(9, 0),
        by=coordinator,
    )
    visit_book(
        visit=visit_at(participant, "V3C"),
        local_date=dt.date(2026, 3, 13),  # two days after its window
        local_time=dt.time(9, 0),
        by=coordinator,
        reason="scanner booked",
    )
    visit_cancel(visit=visit_at(participant, "V4"), by=coordinator, reason="unwell")
    visit_mark_missed(visit=visit_at(participant, "V5"), by=coordinator, reason="no show")
    feeds = [feed_create(participant=participant), site_feed_create(site=nih)]

    with time_machine.travel(LATE_EVENING, tick=False):
        participant_events, site_events = (events_by_uid(client, *feed) for feed in feeds)

    today = dt.date(2026, 2, 2)
    statuses = {}
    for visit in ScheduledVisit.objects.filter(participant=participant):
        label = VISIT_GLANCE_LABELS[visit_glance_status(visit, today=today)]
        statuses[visit.code] = label
        assert (
            str(site_events[visit_uid(visit)]["DESCRIPTION"]).split("\n")[0] == f"Status: {label}"
        )
        participant_lines = str(participant_events[visit_uid(visit)]["DESCRIPTION"]).split("\n")
        assert f"Status: {label}" in participant_lines
    assert statuses == {
        "V1": "done",
        "V2": "due",
        "V3": "booked",
        "V3C": "out of window",
        "V4": "cancelled",
        "V5": "missed",
        **{f"V{n}": "upcoming" for n in range(6, 12)},
    }


def test_a_site_feed_tells_apart_participants_of_two_trials_with_the_same_study_id(
    client, import_seed, nih, django_capture_on_commit_callbacks
) -> None:
    for prefix, anchors in (
        ("000", {"day1": dt.date(2026, 2, 2)}),
        ("002", {"day1": dt.date(2026, 3, 2)}),
    ):
        version = import_seed(prefix)
        participant = participant_for(
            version, anchors=anchors, site=nih, study_id="BERLIN-001", email="b@example.org"
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 20),
            arm=Arm.objects.get(version=version, code="ANI"),
        )

    events = Calendar.from_ical(get_feed(client, *site_feed_create(site=nih)).content).walk(
        "VEVENT"
    )

    owners = Counter(str(e["SUMMARY"]).split(" · ")[0] for e in events)
    assert owners == {"niams-ani-vascular BERLIN-001": 12, "jasmine-myositis BERLIN-001": 54}
    assert sorted(str(e["SUMMARY"]) for e in events)[:2] == [
        "jasmine-myositis BERLIN-001 · FU Follow-up visit (to book)",
        "jasmine-myositis BERLIN-001 · SCR Screening (to book)",
    ]


@pytest.fixture
def enrolled_at_nih(import_seed, nih):
    versions = {prefix: import_seed(prefix) for prefix in ("000", "002")}

    def enroll(prefix: str, study_id: str) -> object:
        version = versions[prefix]
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 3, 2)},
            site=nih,
            study_id=study_id,
            email=f"{study_id}@example.org",
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 20),
            arm=Arm.objects.get(version=version, code="ANI"),
        )
        return participant

    return enroll


# A feed request whose event texts are not cached yet (scheduler/calendars/rendered.py): the
# token, the feed's version (3 aggregates), and the rendering: the site's visit rows, then those
# visits with their participants and trials; a participant's visit rows and their procedures,
# then those visits and their procedures (2 prefetches), and milestones.
# On PostgreSQL the rows' cursor is planned for every row: a SET and a RESET around it.
CURSOR_SETTING = 2 if connection.vendor == "postgresql" else 0
SITE_FEED_QUERIES = 6 + CURSOR_SETTING  # with the feed's trials
PARTICIPANT_FEED_QUERIES = 10 + CURSOR_SETTING


@pytest.mark.parametrize("size", [1, 4])
def test_site_feed_costs_the_same_queries_at_any_size(
    client, enrolled_at_nih, nih, django_assert_num_queries, size
) -> None:
    for number in range(size):
        enrolled_at_nih("000" if number % 2 else "002", f"NIH-{number:03d}")
    feed, token = site_feed_create(site=nih)

    with django_assert_num_queries(SITE_FEED_QUERIES):
        response = get_feed(client, feed, token)

    expected = sum(54 if number % 2 == 0 else 12 for number in range(size))
    assert len(Calendar.from_ical(response.content).walk("VEVENT")) == expected


@pytest.mark.parametrize(("prefix", "events"), [("000", 12 + 1), ("002", 54)])
def test_participant_feed_costs_the_same_queries_at_any_size(
    client, enrolled_at_nih, django_assert_num_queries, prefix, events
) -> None:
    participant = enrolled_at_nih(prefix, "NIH-001")
    feed, token = feed_create(participant=participant)

    with django_assert_num_queries(PARTICIPANT_FEED_QUERIES):
        response = get_feed(client, feed, token)

    assert len(Calendar.from_ical(response.content).walk("VEVENT")) == events


def test_feed_version_changes_at_the_sites_midnight_because_statuses_do(
    client, enroll_niams
) -> None:
    participant = enroll_niams()
    feed, token = feed_create(participant=participant)
    first = get_feed(client, feed, token)

    # 20 January, 23:59 in New York: the same day, the same feed.
    with time_machine.travel(dt.datetime(2026, 1, 21, 4, 59, tzinfo=dt.UTC), tick=False):
        same_day = get_feed(client, feed, token, if_none_match=first["ETag"])
        same_day_in_full = get_feed(client, feed, token)
    with time_machine.travel(dt.datetime(2026, 1, 21, 5, 0, tzinfo=dt.UTC), tick=False):
        next_day = get_feed(
            client,
            feed,
            token,
            if_none_match=first["ETag"],
            if_modified_since=same_day_in_full["Last-Modified"],
        )
    with time_machine.travel(dt.datetime(2026, 1, 21, 5, 0, 1, tzinfo=dt.UTC), tick=False):
        a_second_later = get_feed(client, feed, token)

    assert (same_day.status_code, next_day.status_code) == (304, 200)
    assert same_day_in_full["Last-Modified"] == "Tue, 20 Jan 2026 15:00:00 GMT"
    assert next_day["ETag"] == a_second_later["ETag"] != first["ETag"]
    assert a_second_later["Last-Modified"] == "Wed, 21 Jan 2026 05:00:00 GMT"


def test_a_site_feeds_version_follows_each_participants_newest_change_at_a_fixed_cost(
    import_seed, nih, coordinator, django_assert_num_queries
) -> None:
    """The site feed's ETag comes from the newest audit row and the number of rows of each of
    the site's participants (index probes, migration 0014), not from an aggregate over the
    site's whole history: any participant's visit or milestone changing changes it, and the
    queries are the same for one participant or three."""
    version = import_seed("001")  # a prednisolone taper: milestones as well as visits
    feed, _token = feed_create(site=nih, trials=[version.trial])

    def enrolled(study_id: str):
        participant = participant_for(
            version,
            anchors={"psl_start": dt.date(2026, 3, 2), "day1": dt.date(2026, 3, 16)},
            weight_kg=Decimal(60),
            site=nih,
            study_id=study_id,
        )
        participant_enroll(participant=participant, on=dt.date(2026, 3, 1))
        return participant

    first = enrolled("NIH-001")
    # The feed's trials (once per feed), one probe for the site's visits and milestones
    # together, and the participants' own history.
    with django_assert_num_queries(3):
        one = feed_version(feed)
    enrolled("NIH-002")
    last = enrolled("NIH-003")
    feed = CalendarFeed.objects.select_related("site").get(pk=feed.pk)  # as fetched to serve
    with django_assert_num_queries(3) as queries:
        three = feed_version(feed)
    milestone = last.milestones.order_by("due_date", "id").first()
    with time_machine.travel(dt.datetime(2026, 3, 5, 14, 30, 7, tzinfo=dt.UTC), tick=False):
        milestone.save()  # an audited change: a history row
    after_milestone = feed_version(feed)
    with time_machine.travel(dt.datetime(2026, 3, 6, 9, 15, tzinfo=dt.UTC), tick=False):
        infusion = first.visits.order_by("target_date", "id").first()
        visit_book(
            visit=infusion,
            local_date=infusion.target_date,
            local_time=dt.time(9, 0),
            by=coordinator,
        )
    after_visit = feed_version(feed)

    # History is read by participant (probes), never joined to the site's participants and
    # aggregated (which reads every row of the site's history).
    reads = [q["sql"] for q in queries.captured_queries if "historicalscheduled" in q["sql"]]
    assert len(reads) == 1
    assert not any("JOIN" in sql for sql in reads)
    assert len({one.etag, three.etag, after_milestone.etag, after_visit.etag}) == 4
    # Last-Modified: when this server first served the version, once that second is over.
    assert after_visit.last_modified is None
    with time_machine.travel(NOW + dt.timedelta(seconds=1), tick=False):
        assert feed_version(feed) == FeedVersion(after_visit.etag, NOW)  # nothing changed


def test_a_release_that_writes_events_differently_is_a_new_version_of_every_feed(
    enroll_niams, monkeypatch
) -> None:
    """The ETag holds how events are written (`rendered.render_mark`: the rendering code, its
    catalogs and libraries): after such a release, a calendar app holding the old ETag gets
    the new text, not 304 until its data next changes."""
    from scheduler.calendars import feeds

    feed, _token = feed_create(participant=enroll_niams())
    before = feed_version(feed).etag
    monkeypatch.setattr(feeds, "render_mark", lambda: "the next release")

    assert feed_version(feed).etag != before
