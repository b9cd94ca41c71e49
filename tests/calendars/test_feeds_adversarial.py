"""Adversarial checks of the subscribable feeds: HTTP conditional requests and HEAD, capability
tokens, sites and participants in unusual zones read by four independent readers, blinded
trials, and text escaping and folding of what coordinators type (site name, address, phone,
study id).

Expected values are written out by hand (UTC instants worked out from each zone's offsets),
never recomputed with the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import ics as ics_lib
import pytest
import time_machine
import vobject
from django.db import connection, transaction
from django.http import HttpResponse
from icalendar import Calendar

from participants.models import Participant
from scheduler.calendars.events import visit_uid
from scheduler.calendars.feeds import feed_create, feed_path, feed_regenerate, feed_revoke
from scheduler.models import CalendarFeed, ScheduledVisit
from scheduler.services import participant_enroll, visit_add_unscheduled, visit_book
from tests.calendars.conftest import NOW, visit_at
from tests.calendars.reading import (
    READERS,
    READERS_DIR,
    Unreadable,
    read_everywhere,
    require_node_reader,
)
from tests.factories import SiteFactory, participant_for, site_feed_create
from trials.models import Arm, ProtocolVersion, Site

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def get(client, feed: CalendarFeed, token: str, method: str = "get", **headers) -> HttpResponse:
    """The response, a streamed one (site feed) read whole so `.content` works."""
    response = getattr(client, method)(feed_path(feed=feed, token=token), headers=headers)
    if not getattr(response, "streaming", False):
        return response
    read = HttpResponse(b"".join(response.streaming_content), status=response.status_code)
    for header, value in response.items():
        read[header] = value
    return read


def enrolled(
    version: ProtocolVersion,
    site: Site,
    study_id: str,
    *,
    arm: str = "ANI",
    day1: dt.date = dt.date(2026, 2, 16),
    **fields,
) -> Participant:
    participant = participant_for(
        version,
        anchors={"day1": day1, "consent": dt.date(2026, 1, 19)},
        site=site,
        study_id=study_id,
        email=fields.pop("email", "someone@example.org"),
        **fields,
    )
    participant_enroll(
        participant=participant,
        on=dt.date(2026, 1, 19),
        arm=Arm.objects.get(version=version, code=arm),
    )
    return participant


def site_in(zone: str, **fields) -> Site:
    slug = zone.lower().replace("/", "-").replace("_", "-")
    return SiteFactory.create(
        code=slug, name=fields.pop("name", f"Clinic {zone}"), timezone=zone, **fields
    )


# ----------------------------------------------------------------------------------------
# HTTP: HEAD and conditional requests


@pytest.mark.parametrize("kind", ["participant", "site"])
def test_head_answers_with_gets_headers_and_no_body(client, enroll_niams, nih, kind) -> None:
    participant = enroll_niams()
    feed, token = (
        feed_create(participant=participant)
        if kind == "participant"
        else site_feed_create(site=nih)
    )
    get(client, feed, token)
    with time_machine.travel(NOW + dt.timedelta(seconds=2), tick=False):
        full = get(client, feed, token)
        head = get(client, feed, token, method="head")

    # RFC 9110 9.3.2: HEAD is GET without the content; every general-purpose server supports it.
    # No Content-Length (a 0 would contradict the GET's; it is not known without rendering).
    assert (head.status_code, head.content, head.get("Content-Length")) == (200, b"", None)
    assert {h: head.get(h) for h in ("Content-Type", "ETag", "Last-Modified", "Cache-Control")} == {
        "Content-Type": "text/calendar; charset=utf-8",
        "ETag": full["ETag"],
        "Last-Modified": "Tue, 20 Jan 2026 15:00:00 GMT",
        "Cache-Control": "private, max-age=300",
    }


@pytest.mark.parametrize("kind", ["participant", "site"])
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"if_none_match": '"nope", {etag}, "other"'}, 304),  # a list holding it
        ({"if_none_match": "W/{etag}"}, 304),  # weak comparison (RFC 9110 13.1.2)
        ({"if_none_match": "*"}, 304),  # the representation exists
        ({"if_none_match": '"nope", W/"other"'}, 200),
        ({"if_modified_since": "not a date"}, 200),  # malformed: ignored
        ({"if_modified_since": "Tue, 20 Jan 2026 14:59:59 GMT"}, 200),
        ({"if_modified_since": "Tue, 20 Jan 2026 15:00:00 GMT"}, 304),
        # RFC 9110 dropped RFC 2616's "a date later than the server's clock is invalid".
        ({"if_modified_since": "Thu, 21 Oct 2099 07:28:00 GMT"}, 304),
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3), both ways.
        ({"if_none_match": '"other"', "if_modified_since": "Tue, 20 Jan 2026 15:00:00 GMT"}, 200),
        ({"if_none_match": "{etag}", "if_modified_since": "Thu, 01 Jan 1970 00:00:00 GMT"}, 304),
    ],
)
def test_conditional_request_forms(client, enroll_niams, nih, kind, headers, status) -> None:
    participant = enroll_niams()
    feed, token = (
        feed_create(participant=participant)
        if kind == "participant"
        else site_feed_create(site=nih)
    )
    etag = get(client, feed, token)["ETag"]  # first served at 15:00:00.000

    with time_machine.travel(NOW + dt.timedelta(seconds=2), tick=False):
        response = get(client, feed, token, **{k: v.format(etag=etag) for k, v in headers.items()})

    assert response.status_code == status
    assert response["ETag"] == etag
    assert (response.content == b"") == (status == 304)


@pytest.mark.parametrize("kind", ["participant", "site"])
def test_a_site_edited_after_a_poll_is_not_304_to_if_modified_since(
    client, enroll_niams, nih, kind
) -> None:
    participant = enroll_niams()
    feed, token = (
        feed_create(participant=participant)
        if kind == "participant"
        else site_feed_create(site=nih)
    )
    get(client, feed, token)
    with time_machine.travel(NOW + dt.timedelta(seconds=1), tick=False):
        first = get(client, feed, token)
    assert first["Last-Modified"] == "Tue, 20 Jan 2026 15:00:00 GMT"

    with time_machine.travel(NOW + dt.timedelta(hours=1), tick=False):
        nih.address = "9000 Rockville Pike, Bethesda, MD 20892"
        nih.save()  # a history row of the site at 16:00
        polled = get(client, feed, token, if_modified_since=first["Last-Modified"])
    with time_machine.travel(NOW + dt.timedelta(hours=1, seconds=1), tick=False):
        again = get(client, feed, token, if_modified_since=first["Last-Modified"])

    # The text changed (every LOCATION), so a client that validates with Last-Modified only
    # must get it: its Last-Modified is when this version was first served.
    assert (polled.status_code, again.status_code) == (200, 200)
    assert b"9000 Rockville Pike" in polled.content
    assert "Last-Modified" not in polled  # first served in this very second
    assert again["Last-Modified"] == "Tue, 20 Jan 2026 16:00:00 GMT"


def test_a_change_in_the_same_second_as_a_poll_is_not_304_to_if_modified_since(
    client, enroll_niams, coordinator
) -> None:
    participant = enroll_niams()
    feed, token = feed_create(participant=participant)
    with time_machine.travel(NOW + dt.timedelta(milliseconds=100), tick=False):
        first = get(client, feed, token)
    with time_machine.travel(NOW + dt.timedelta(milliseconds=700), tick=False):
        visit_book(
            visit=visit_at(participant, "V2"),
            local_date=dt.date(2026, 2, 2),
            local_time=dt.time(9, 0),
            by=coordinator,
        )
    with time_machine.travel(NOW + dt.timedelta(seconds=5), tick=False):
        polled = get(client, feed, token, if_modified_since="Tue, 20 Jan 2026 15:00:00 GMT")

    # A Last-Modified names a whole second, so none is given before that second is over: no
    # client can hold 15:00:00 for the version before the booking.
    assert "Last-Modified" not in first
    assert polled.status_code == 200
    assert b"DTSTART:20260202T140000Z" in polled.content


# Two write transactions at once: Postgres (SQLite takes one writer at a time).
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["site", "participant"])
def test_a_change_committed_after_a_newer_one_is_not_answered_304(
    client, enroll_niams, nih, coordinator, kind
) -> None:
    """Two bookings overlap: the first one's transaction takes its history ids, the second one
    takes higher ids and commits first, a poll comes in between, then the first commits."""
    first_participant = enroll_niams("NIH-001")
    other = first_participant if kind == "participant" else enroll_niams("NIH-002")
    feed, token = (
        feed_create(participant=first_participant)
        if kind == "participant"
        else site_feed_create(site=nih)
    )
    slow, fast = visit_at(first_participant, "V2"), visit_at(other, "V3")
    written, commit = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def slow_booking() -> None:
        try:
            with transaction.atomic():
                visit_book(
                    visit=slow,
                    local_date=dt.date(2026, 2, 2),
                    local_time=dt.time(9),
                    by=coordinator,
                )
                written.set()
                assert commit.wait(20)
        except BaseException as failure:  # noqa: BLE001 - reported below
            failures.append(failure)
            written.set()
        finally:
            connection.close()

    thread = threading.Thread(target=slow_booking)
    thread.start()
    try:
        assert written.wait(20)
        visit_book(
            visit=fast, local_date=dt.date(2026, 3, 2), local_time=dt.time(9), by=coordinator
        )
        between = get(client, feed, token)
    finally:
        commit.set()
        thread.join(20)
    assert failures == []

    polled = get(client, feed, token, if_none_match=between["ETag"])

    assert b"DTSTART:20260202T140000Z" not in between.content  # V2 not committed yet
    assert polled.status_code == 200
    assert b"DTSTART:20260202T140000Z" in polled.content


# ----------------------------------------------------------------------------------------
# Tokens


def test_bad_tokens_get_the_same_bare_404_as_an_unknown_one(client, enroll_niams, nih) -> None:
    participant = enroll_niams()
    other = enroll_niams("NIH-002", email="other@example.org")
    feed, token = feed_create(participant=participant)
    site_feed, site_token = site_feed_create(site=nih)
    rotated_feed, rotated_token = feed_create(participant=other)
    _new_feed, new_token = feed_regenerate(feed=rotated_feed)
    revoked_feed, revoked_token = feed_create(participant=participant)
    feed_revoke(feed=revoked_feed)
    swapped = "".join(c.lower() if c.isupper() else c.upper() for c in token)
    paths = [
        "/feeds/participant/" + "A" * 43 + ".ics",  # unknown, well formed: the reference
        f"/feeds/participant/{revoked_token}.ics",
        f"/feeds/participant/{rotated_token}.ics",  # the old URL of a regenerated feed
        f"/feeds/participant/{site_token}.ics",  # a site's token on a participant URL
        f"/feeds/site/{token}.ics",  # a participant's token on a site URL
        f"/feeds/participant/{swapped}.ics",
        f"/feeds/participant/{token[:31]}.ics",  # too short for the pattern
        "/feeds/participant/" + "A" * 101 + ".ics",  # too long
        f"/feeds/participant/{token[:-1]}=.ics",
        f"/feeds/participant/{token}.ICS",
        f"/feeds/participant/{token}.ics/",
        f"/feeds/participant/{token}",
        f"/feeds/Participant/{token}.ics",
        f"/feeds/participant/{token[:20]}%2F{token[20:]}.ics",
        f"/feeds/participant/{token[:20]}é{token[21:]}.ics",
    ]

    answers = [client.get(path, headers={"if_none_match": "*"}) for path in paths]

    reference = answers[0]
    assert reference.status_code == 404
    assert [
        (a.status_code, a.content, a.get("Content-Type"), a.get("ETag"), a.get("Last-Modified"))
        for a in answers
    ] == [(404, reference.content, reference.get("Content-Type"), None, None) for _ in paths]
    assert b"VEVENT" not in reference.content and b"NIH" not in reference.content
    assert get(client, feed, token).status_code == 200
    assert get(client, site_feed, site_token).status_code == 200
    assert client.get(f"/feeds/participant/{new_token}.ics").status_code == 200


def test_a_participant_token_shows_that_participant_only(client, enroll_niams) -> None:
    mine = enroll_niams("NIH-001")
    theirs = enroll_niams("NIH-002", email="theirs@example.org")
    feed, token = feed_create(participant=mine)

    body = get(client, feed, token).content.decode()

    uids = {str(e["UID"]) for e in Calendar.from_ical(body).walk("VEVENT")}
    assert {visit_uid(v) for v in ScheduledVisit.objects.filter(participant=theirs)} & uids == set()
    assert {visit_uid(v) for v in ScheduledVisit.objects.filter(participant=mine)} <= uids
    assert "NIH-002" not in body and "theirs@" not in body


# ----------------------------------------------------------------------------------------
# Unusual zones: every reader reads the site's wall time


# zone -> [(local date, local time, expected UTC start)], each an hour-long unscheduled visit.
BOOKINGS = {
    "Africa/Casablanca": [
        (
            dt.date(2026, 2, 15),
            dt.time(2, 30),
            dt.datetime(2026, 2, 15, 1, 30, tzinfo=UTC),
        ),  # fold: first (+01)
        (
            dt.date(2026, 3, 1),
            dt.time(9, 0),
            dt.datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        ),  # Ramadan, +00
        (dt.date(2026, 3, 22), dt.time(2, 30), dt.datetime(2026, 3, 22, 2, 30, tzinfo=UTC)),  # gap
        (
            dt.date(2026, 3, 25),
            dt.time(9, 0),
            dt.datetime(2026, 3, 25, 8, 0, tzinfo=UTC),
        ),  # +01 again
    ],
    "Pacific/Chatham": [
        (
            dt.date(2026, 2, 10),
            dt.time(9, 0),
            dt.datetime(2026, 2, 9, 19, 15, tzinfo=UTC),
        ),  # +13:45
        (dt.date(2026, 4, 5), dt.time(3, 0), dt.datetime(2026, 4, 4, 13, 15, tzinfo=UTC)),  # fold
        (dt.date(2026, 9, 27), dt.time(3, 0), dt.datetime(2026, 9, 26, 14, 15, tzinfo=UTC)),  # gap
    ],
    "Australia/Lord_Howe": [
        (dt.date(2026, 4, 5), dt.time(1, 45), dt.datetime(2026, 4, 4, 14, 45, tzinfo=UTC)),  # fold
        (dt.date(2026, 10, 4), dt.time(2, 15), dt.datetime(2026, 10, 3, 15, 45, tzinfo=UTC)),  # gap
    ],
    "America/St_Johns": [
        (
            dt.date(2026, 2, 10),
            dt.time(9, 0),
            dt.datetime(2026, 2, 10, 12, 30, tzinfo=UTC),
        ),  # -03:30
        (dt.date(2026, 3, 8), dt.time(2, 30), dt.datetime(2026, 3, 8, 6, 0, tzinfo=UTC)),  # gap
        (dt.date(2026, 11, 1), dt.time(1, 30), dt.datetime(2026, 11, 1, 4, 0, tzinfo=UTC)),  # fold
    ],
    "Asia/Kathmandu": [
        (dt.date(2026, 2, 10), dt.time(9, 0), dt.datetime(2026, 2, 10, 3, 15, tzinfo=UTC)),
    ],
    "Pacific/Kiritimati": [
        (dt.date(2026, 2, 10), dt.time(9, 0), dt.datetime(2026, 2, 9, 19, 0, tzinfo=UTC)),  # +14
    ],
}
# What the participant (living in Kathmandu, +05:45) reads for some of those.
WHEN_LINES = {
    ("Africa/Casablanca", dt.date(2026, 3, 22)): [
        # 02:30 does not exist: read with the offset before the jump, it is 03:30 (+01).
        "When: Sunday, March 22, 2026 at 3:30\u202fAM (Africa/Casablanca time)",
        "That is Sunday, March 22, 2026 at 8:15\u202fAM where you are (Asia/Kathmandu time).",
    ],
    ("Pacific/Chatham", dt.date(2026, 2, 10)): [
        "When: Tuesday, February 10, 2026 at 9:00\u202fAM (Pacific/Chatham time)",
        "That is Tuesday, February 10, 2026 at 1:00\u202fAM where you are (Asia/Kathmandu time).",
    ],
    ("Australia/Lord_Howe", dt.date(2026, 4, 5)): [
        "When: Sunday, April 5, 2026 at 1:45\u202fAM (Australia/Lord_Howe time)",
        "That is Saturday, April 4, 2026 at 8:30\u202fPM where you are (Asia/Kathmandu time).",
    ],
    ("Asia/Kathmandu", dt.date(2026, 2, 10)): [
        "When: Tuesday, February 10, 2026 at 9:00\u202fAM (Asia/Kathmandu time)",
        "Status: booked",  # the same clock: no second line
    ],
}


def test_bookings_in_hard_zones_read_as_the_sites_wall_time_in_every_reader(
    import_seed, coordinator, client, tmp_path: Path
) -> None:
    require_node_reader()
    version = import_seed("000")
    calendars: dict[str, bytes] = {}
    expected: dict[str, dict[str, tuple]] = {}
    descriptions = {}
    for zone, bookings in BOOKINGS.items():
        site = site_in(zone)
        participant = enrolled(version, site, site.code.upper(), timezone="Asia/Kathmandu")
        want = {
            # Unbooked visits are all-day windows of the site's dates, in any zone.
            visit_uid(visit_at(participant, "V1")): (dt.date(2026, 1, 19), dt.date(2026, 2, 3)),
            visit_uid(visit_at(participant, "V2")): (dt.date(2026, 2, 16), dt.date(2026, 2, 17)),
        }
        for day, at, start in bookings:
            visit = visit_add_unscheduled(
                participant=participant,
                local_date=day,
                local_time=at,
                reason="zones",
                by=coordinator,
            )
            want[visit_uid(visit)] = (start, start + dt.timedelta(hours=1))
            descriptions[(zone, day)] = visit_uid(visit)
        for kind, made in (
            ("participant", feed_create(participant=participant)),
            ("site", site_feed_create(site=site)),
        ):
            calendars[f"{kind} {zone}"] = get(client, *made).content
            expected[f"{kind} {zone}"] = want

    readings = read_everywhere(calendars, tmp_path)

    got = {
        (reader, name): {uid: reading[uid] for uid in expected[name]}
        if not isinstance(reading, Unreadable)
        else reading
        for reader, by_name in readings.items()
        for name, reading in by_name.items()
    }
    assert got == {(reader, name): expected[name] for reader in READERS for name in calendars}
    for (zone, day), lines in WHEN_LINES.items():
        [event] = [
            e
            for e in Calendar.from_ical(calendars[f"participant {zone}"]).walk("VEVENT")
            if str(e["UID"]) == descriptions[(zone, day)]
        ]
        assert str(event["DESCRIPTION"]).split("\n")[:2] == lines


# At 2026-02-16 10:30Z V2's one-day window (16 February) has closed where it is already the
# 17th, is open where it is the 16th, and has not opened where it is still the 15th; the feed's
# Last-Modified is the site's midnight.
AT = dt.datetime(2026, 2, 16, 10, 30, tzinfo=UTC)
TODAY_IN = {
    "Pacific/Kiritimati": ("overdue", "overdue", "Mon, 16 Feb 2026 10:00:00 GMT"),  # +14
    "Pacific/Chatham": ("overdue", "overdue", "Mon, 16 Feb 2026 10:15:00 GMT"),  # +13:45
    "Australia/Lord_Howe": ("due", "to book", "Sun, 15 Feb 2026 13:00:00 GMT"),  # +11
    "Asia/Kathmandu": ("due", "to book", "Sun, 15 Feb 2026 18:15:00 GMT"),  # +05:45
    "Africa/Casablanca": ("due", "to book", "Mon, 16 Feb 2026 00:00:00 GMT"),  # Ramadan: +00
    "America/St_Johns": ("due", "to book", "Mon, 16 Feb 2026 03:30:00 GMT"),  # -03:30
    "Pacific/Pago_Pago": ("upcoming", "to book", "Sun, 15 Feb 2026 11:00:00 GMT"),  # -11
}


def test_status_follows_the_sites_own_today(import_seed, client) -> None:
    version = import_seed("000")
    feeds = {}
    for zone in TODAY_IN:
        site = site_in(zone)
        participant = enrolled(version, site, site.code.upper())
        feeds[zone] = (
            feed_create(participant=participant),
            site_feed_create(site=site),
            visit_uid(visit_at(participant, "V2")),
        )

    seen = {}
    with time_machine.travel(AT, tick=False):
        for zone, (mine, site_feed, uid) in feeds.items():
            answers = [get(client, *mine), get(client, *site_feed)]
            events = [
                {str(e["UID"]): e for e in Calendar.from_ical(a.content).walk("VEVENT")}[uid]
                for a in answers
            ]
            seen[zone] = (
                [
                    line
                    for line in str(events[0]["DESCRIPTION"]).split("\n")
                    if line.startswith("Status:")
                ],
                str(events[1]["SUMMARY"]),
                str(events[1]["DESCRIPTION"]).split("\n")[0],
            )

    assert seen == {
        zone: (
            [f"Status: {label}"],
            f"niams-ani-vascular {site_in(zone).code.upper()} · V2 Treatment visit 1 (week 0)"
            f" ({suffix})",
            f"Status: {label}",
        )
        for zone, (label, suffix, _midnight) in TODAY_IN.items()
    }


# ----------------------------------------------------------------------------------------
# Blinded trials


@pytest.mark.parametrize("seed", ["000", "003b", "003c"])
def test_blinded_feeds_are_the_same_for_every_arm_and_never_name_one(
    import_seed, client, seed
) -> None:
    version = import_seed(seed)
    site = site_in("Pacific/Chatham")
    child: dict[str, object] = {
        "birth_date": dt.date(2015, 1, 1),
        "guardian_email": "g@example.org",
        "guardian_name": "G",
    }
    feeds = {}
    for code in ("ANI", "PBO"):
        participant = enrolled(
            version,
            site,
            f"S-{code[::-1]}-1",
            arm=code,
            **(child if seed == "003b" else {}),  # type: ignore[arg-type]
        )
        feeds[code] = get(client, *feed_create(participant=participant)).content.decode()
    site_text = get(client, *site_feed_create(site=site)).content.decode()

    def blind(text: str) -> str:
        text = re.sub(r"(visit|milestone)-[0-9a-f-]{36}@", "UID@", text.replace("\r\n ", ""))
        return re.sub(r"S-(INA|OBP)-1", "S-?-1", text)

    site_events = re.findall(r"BEGIN:VEVENT\r\n.*?END:VEVENT", site_text.replace("\r\n ", ""), re.S)
    per_arm = {
        arm: sorted(blind(e) for e in site_events if f"S-{arm[::-1]}-1" in e)
        for arm in ("ANI", "PBO")
    }
    arms = list(Arm.objects.filter(version=version))
    assert version.trial.blinding == "double"
    assert blind(feeds["ANI"]) == blind(feeds["PBO"])
    assert per_arm["ANI"] == per_arm["PBO"]
    assert len(per_arm["ANI"]) * 2 == len(site_events) > 0
    for text in (*feeds.values(), site_text):
        unfolded = text.replace("\r\n ", "")
        for arm in arms:
            assert re.search(rf"\b{re.escape(arm.code)}\b", unfolded) is None
            assert arm.name.lower() not in unfolded.lower()
            assert not arm.description or arm.description.lower() not in unfolded.lower()


# ----------------------------------------------------------------------------------------
# Text: escaping and folding, read back by every reader

ICALJS_TEXTS = """
import { readFileSync } from "node:fs";
import ICAL from "%s";
const calendar = new ICAL.Component(ICAL.parse(readFileSync(process.argv[2], "utf8")));
process.stdout.write(JSON.stringify({
  name: calendar.getFirstPropertyValue("x-wr-calname"),
  events: calendar.getAllSubcomponents("vevent").map((v) => ({
    uid: v.getFirstPropertyValue("uid"),
    texts: ["summary", "description", "location"].map((p) => v.getFirstPropertyValue(p)),
  })),
}));
"""

Texts = dict[str, tuple]


def texts_everywhere(content: bytes, tmp_path: Path) -> dict[str, tuple[str | None, Texts] | str]:
    """reader -> (calendar name, uid -> (SUMMARY, DESCRIPTION, LOCATION)), or its refusal."""
    text = content.decode()
    out: dict[str, tuple[str | None, Texts] | str] = {}
    calendar = Calendar.from_ical(text)
    out["icalendar"] = (
        str(calendar["X-WR-CALNAME"]),
        {
            str(e["UID"]): tuple(
                str(e[p]) if p in e else None for p in ("SUMMARY", "DESCRIPTION", "LOCATION")
            )
            for e in calendar.walk("VEVENT")
        },
    )
    try:
        read = vobject.readOne(text)
        out["vobject"] = (
            read.contents["x-wr-calname"][0].value,
            {
                e.uid.value: tuple(
                    e.contents[p][0].value if p in e.contents else None
                    for p in ("summary", "description", "location")
                )
                for e in read.contents.get("vevent", [])
            },
        )
    except Exception as error:  # noqa: BLE001 - a refusal is the finding
        out["vobject"] = f"{type(error).__name__}: {error}"
    try:
        out["ics"] = (
            None,  # ics does not read calendar names
            {e.uid: (e.name, e.description, e.location) for e in ics_lib.Calendar(text).events},
        )
    except Exception as error:  # noqa: BLE001
        out["ics"] = f"{type(error).__name__}: {error}"
    require_node_reader()
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "texts.mjs"
    script.write_text(ICALJS_TEXTS % (READERS_DIR / "node_modules/ical.js/dist/ical.js").as_uri())
    (tmp_path / "feed.ics").write_bytes(content)
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(  # noqa: S603 - our own script on our own file
        [node, str(script), str(tmp_path / "feed.ics")], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        read_js = json.loads(result.stdout)
        out["ical.js"] = (read_js["name"], {e["uid"]: tuple(e["texts"]) for e in read_js["events"]})
    else:
        out["ical.js"] = result.stderr
    return out


def booked_at(
    site: Site, study_id: str, import_seed, coordinator
) -> tuple[Participant, ScheduledVisit]:
    participant = enrolled(import_seed("000"), site, study_id)
    visit = visit_add_unscheduled(
        participant=participant,
        local_date=dt.date(2026, 2, 10),
        local_time=dt.time(9, 0),
        reason="text",
        by=coordinator,
    )
    return participant, visit


TRICKY_NAME = 'Clinic "A", Wing; B\\C 🧪'
TRICKY_ADDRESS = (
    "Line 1, Suite 2;\nRoom\\42, C:\\data\\,x\r\nback\\slash; 2nd\n"
    + "日本語🧪é" * 14  # 3-, 4- and 2-octet characters across many folds
    + "\\" * 5
    + "🧪" * 20
)
TRICKY_PHONE = "+81 3-1234-5678;ext=9,#"
TRICKY_STUDY_ID = "A,B;C\\D🧪"


def physical_lines_are_folded_whole(content: bytes) -> list[bytes]:
    """Physical lines that break RFC 5545 3.1: over 75 octets, or not UTF-8 on their own (a
    character split by a fold)."""
    bad = []
    for line in content.split(b"\r\n"):
        try:
            line.decode()
        except UnicodeDecodeError:
            bad.append(line)
            continue
        if len(line) > 75:
            bad.append(line)
    return bad


def test_commas_semicolons_backslashes_newlines_and_astral_text_read_back_exactly(
    import_seed, coordinator, client, tmp_path: Path
) -> None:
    site = site_in("Asia/Tokyo", name=TRICKY_NAME, address=TRICKY_ADDRESS, phone=TRICKY_PHONE)
    participant, visit = booked_at(site, TRICKY_STUDY_ID, import_seed, coordinator)
    mine = get(client, *feed_create(participant=participant)).content
    theirs = get(client, *site_feed_create(site=site)).content

    place = f"{TRICKY_NAME}, {TRICKY_ADDRESS.replace(chr(13) + chr(10), chr(10))}"
    expected_mine = (
        "Study visit: Unscheduled visit",
        "When: Tuesday, February 10, 2026 at 9:00\u202fAM (Asia/Tokyo time)\n"
        "Status: booked\n"
        "Expected duration: up to 1 hour\n"
        f"Where: {place}\n"
        f"Questions, or need another time? Call {TRICKY_PHONE}.",
        place,
    )
    expected_theirs = (
        f"niams-ani-vascular {TRICKY_STUDY_ID} · UNSCHEDULED Unscheduled visit",
        "Status: booked\nTarget 2026-02-10, window 2026-02-10 to 2026-02-10",
        place,
    )
    uid = visit_uid(visit)
    read = {
        kind: {
            reader: r if isinstance(r, str) else r[1][uid]
            for reader, r in texts_everywhere(content, tmp_path / kind).items()
        }
        for kind, content in (("participant", mine), ("site", theirs))
    }

    assert physical_lines_are_folded_whole(mine) == []
    assert physical_lines_are_folded_whole(theirs) == []
    assert read == {
        "participant": dict.fromkeys(READERS, expected_mine),
        "site": dict.fromkeys(READERS, expected_theirs),
    }


def test_a_backslash_before_a_capital_n_is_kept(
    import_seed, coordinator, client, tmp_path: Path
) -> None:
    address = "Share \\\\NAS01\\Neurology, C:\\Notes"
    site = site_in("Europe/Berlin", name="Charité", address=address)
    participant, visit = booked_at(site, "BER-001", import_seed, coordinator)

    content = get(client, *feed_create(participant=participant)).content

    locations = {
        reader: r if isinstance(r, str) else r[1][visit_uid(visit)][2]
        for reader, r in texts_everywhere(content, tmp_path).items()
    }
    # The `ics` library unescapes `\N` before `\\`, so it reads this correctly escaped text
    # as line breaks (its bug, as with `C:\\new`); the other three read it as typed.
    assert locations.pop("ics") == "Charité, Share \\\\\nAS01\\\neurology, C:\\\notes"
    assert locations == dict.fromkeys(set(READERS) - {"ics"}, f"Charité, {address}")


def test_a_control_character_in_an_address_leaves_the_feed_readable(
    import_seed, coordinator, client, tmp_path: Path
) -> None:
    # Word writes a line break inside a paragraph (Shift+Enter) as U+000B; pasted addresses
    # carry it. RFC 5545 3.3.11: TEXT holds no control characters but HTAB.
    address = "Building 2\x0bFloor 3\x0cRoom 7"
    site = site_in("Europe/Berlin", name="Charité", address=address)
    participant, visit = booked_at(site, "BER-002", import_seed, coordinator)
    feeds = {"participant": get(client, *feed_create(participant=participant)).content}
    feeds["site"] = get(client, *site_feed_create(site=site)).content

    readings = read_everywhere(feeds, tmp_path)

    start = dt.datetime(2026, 2, 10, 8, 0, tzinfo=UTC)
    assert {
        (reader, kind): reading.get(visit_uid(visit)) if isinstance(reading, dict) else reading
        for reader, by_kind in readings.items()
        for kind, reading in by_kind.items()
    } == {
        (reader, kind): (start, start + dt.timedelta(hours=1))
        for reader in READERS
        for kind in feeds
    }
    assert [re.findall(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", body) for body in feeds.values()] == [
        [],
        [],
    ]


def test_a_site_feeds_calendar_name_reads_whole_in_calendar_readers(
    client, nih, tmp_path: Path
) -> None:
    nih.name = "Clinic Berlin, Mitte; Haus 2"
    nih.save()

    content = get(client, *site_feed_create(site=nih)).content

    names = {
        reader: r if isinstance(r, str) else r[0]
        for reader, r in texts_everywhere(content, tmp_path).items()
        if reader != "ics"
    }
    # Written as icalendar writes it (unescaped): icalendar and ical.js read it whole, and
    # would show the backslashes of an escaped one; vobject (Radicale's parser) reads a name
    # only up to its first comma, escaped or not.
    assert names == {
        "icalendar": "Clinic Berlin, Mitte; Haus 2: study visits",
        "ical.js": "Clinic Berlin, Mitte; Haus 2: study visits",
        "vobject": "Clinic Berlin",
    }
