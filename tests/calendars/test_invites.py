"""iMIP invites: one event per visit, updated and cancelled as the calendar changes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from scheduler.calendars.events import visit_uid
from scheduler.models import ScheduledVisit
from scheduler.services import (
    participant_enroll,
    participant_withdraw,
    visit_book,
    visit_record_done,
)
from tests.calendars.conftest import event_of, ical_of, visit_at
from tests.factories import participant_for

pytestmark = pytest.mark.django_db


def test_enrollment_invites_each_visit_as_a_tentative_all_day_event_over_its_window(
    enroll_niams, mailoutbox
) -> None:
    participant = enroll_niams()

    visits = list(ScheduledVisit.objects.filter(participant=participant).order_by("target_date"))
    events = sorted((event_of(m) for m in mailoutbox), key=lambda e: e.decoded("dtstart"))
    assert len(mailoutbox) == len(visits) == 12
    assert {str(ical_of(m)["METHOD"]) for m in mailoutbox} == {"REQUEST"}
    assert [
        (
            str(e["UID"]),
            e.decoded("dtstart"),
            e.decoded("dtend"),
            str(e["STATUS"]),
            int(e["SEQUENCE"]),
        )
        for e in events
    ] == [
        (visit_uid(v), v.window_start, v.window_end + dt.timedelta(days=1), "TENTATIVE", 0)
        for v in visits
    ]
    assert {tuple(m.to) for m in mailoutbox} == {("NIH-001@example.org",)}
    assert {m.from_email for m in mailoutbox} == {"NIH Clinical Center <visits@nih.example>"}


def test_invite_mime_structure_is_imip(enroll_niams, mailoutbox) -> None:
    enroll_niams()

    mime = mailoutbox[0].message()
    parts = [(p.get_content_type(), p.get_param("method")) for p in mime.walk()]
    assert parts == [
        ("multipart/alternative", None),
        ("text/plain", None),
        ("text/html", None),
        ("text/calendar", "REQUEST"),
    ]
    assert [p.get_content_charset() for p in mime.walk()][1:] == ["utf-8", "utf-8", "utf-8"]


def test_rescheduling_visit_4_sends_exactly_one_request_with_the_same_uid_and_sequence_plus_one(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    v4 = visit_at(participant, "V4")
    with django_capture_on_commit_callbacks(execute=True):
        visit_book(
            visit=v4, local_date=dt.date(2026, 3, 30), local_time=dt.time(9, 30), by=coordinator
        )
    booked = event_of(mailoutbox[-1])
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        visit_book(
            visit=v4,
            local_date=dt.date(2026, 3, 31),
            local_time=dt.time(10, 0),
            by=coordinator,
            reason="participant asked",
        )

    assert len(mailoutbox) == 1
    moved = event_of(mailoutbox[0])
    assert str(ical_of(mailoutbox[0])["METHOD"]) == "REQUEST"
    assert str(moved["UID"]) == str(booked["UID"]) == visit_uid(v4)
    assert int(moved["SEQUENCE"]) == int(booked["SEQUENCE"]) + 1 == 2
    assert moved.decoded("dtstart").astimezone(dt.UTC) == dt.datetime(
        2026, 3, 31, 14, 0, tzinfo=dt.UTC
    )
    assert (str(moved["STATUS"]), moved.decoded("dtend") - moved.decoded("dtstart")) == (
        "CONFIRMED",
        dt.timedelta(hours=4),
    )


def test_withdrawal_sends_one_cancel_per_future_visit_and_none_for_past_ones(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    invited = {str(event_of(m)["UID"]): int(event_of(m)["SEQUENCE"]) for m in mailoutbox}
    with django_capture_on_commit_callbacks(execute=True):
        visit_record_done(
            visit=visit_at(participant, "V1"), actual_date=dt.date(2026, 1, 12), by=coordinator
        )
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        participant_withdraw(
            participant=participant, on=dt.date(2026, 5, 1), by=coordinator, reason="moved abroad"
        )

    future = [
        v
        for v in ScheduledVisit.objects.filter(participant=participant)
        if v.target_date >= dt.date(2026, 5, 1)
    ]
    cancels = [(str(ical_of(m)["METHOD"]), event_of(m)) for m in mailoutbox]
    assert sorted(str(e["UID"]) for _, e in cancels) == sorted(visit_uid(v) for v in future)
    assert len(future) == 6
    assert {(method, str(e["STATUS"])) for method, e in cancels} == {("CANCEL", "CANCELLED")}
    assert all(int(e["SEQUENCE"]) == invited[str(e["UID"])] + 1 for _, e in cancels)


def test_invite_says_duration_place_and_how_to_prepare_in_plain_words(
    enroll_niams, mailoutbox
) -> None:
    participant = enroll_niams()
    [message] = [
        m for m in mailoutbox if str(event_of(m)["UID"]) == visit_uid(visit_at(participant, "V2"))
    ]

    event = event_of(message)
    assert str(event["SUMMARY"]) == "To book: Treatment visit 1 (week 0)"
    assert str(event["LOCATION"]) == "NIH Clinical Center, 10 Center Drive, Bethesda, MD 20892"
    assert str(event["DESCRIPTION"]).split("\n") == [
        "Not booked yet. The visit can take place between Monday, February 2, 2026 and "
        "Monday, February 2, 2026; the site will confirm the day and time.",
        "Expected duration: up to 4 hours",
        "Where: NIH Clinical Center, 10 Center Drive, Bethesda, MD 20892",
        "How to prepare:",
        "- CAVI (cardio-ankle vascular index): You will lie still for 20 minutes. Small "
        "electrodes are placed on both wrists with stickers, a microphone on your chest, and "
        "blood pressure cuffs around your ankles and arms.",
        "- FDG-PET/CT scan: Do not eat for 6 hours before your appointment (water is fine). "
        "You will receive a substance through an IV line and then lie on a table for 110 "
        "minutes while the scanner takes images.",
        "Questions, or need another time? Call +1 301-496-2563.",
    ]
    assert message.subject == "Study visit: Treatment visit 1 (week 0), Monday, February 2, 2026"


def test_invites_to_a_minor_go_to_the_guardian(
    import_seed, nih, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    version = import_seed("003b")
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 2, 2)},
        birth_date=dt.date(2014, 5, 1),
        site=nih,
        email="child@example.org",
        guardian_name="Ann Parent",
        guardian_email="parent@example.org",
    )
    with django_capture_on_commit_callbacks(execute=True):
        participant_enroll(
            participant=participant, on=dt.date(2026, 1, 5), arm=version.arm_set.first()
        )

    assert {tuple(m.to) for m in mailoutbox} == {("Ann Parent <parent@example.org>",)}
    attendees = {str(event_of(m)["ATTENDEE"]) for m in mailoutbox}
    assert attendees == {"mailto:parent@example.org"}


def test_invites_follow_the_participant_language(
    import_seed, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    from tests.factories import SiteFactory

    version = import_seed("001")
    tsukuba = SiteFactory.create(
        code="tsukuba",
        name="筑波大学附属病院",
        timezone="Asia/Tokyo",
        phone="029-853-3186",
        email="visits@tsukuba.example",
    )
    participant = participant_for(
        version,
        anchors={"psl_start": dt.date(2026, 3, 2), "day1": dt.date(2026, 3, 16)},
        weight_kg=Decimal(60),
        site=tsukuba,
        language="ja",
        email="p@example.jp",
    )
    with django_capture_on_commit_callbacks(execute=True):
        participant_enroll(participant=participant, on=dt.date(2026, 3, 1))

    first = min(mailoutbox, key=lambda m: event_of(m).decoded("dtstart"))
    assert first.subject == "治験の来院: Anifrolumab infusion visit（2026年3月13日金曜日）"
    assert str(event_of(first)["DESCRIPTION"]).split("\n")[1:3] == [
        "所要時間: 最大 2時間",
        "場所: 筑波大学附属病院, 10 Center Drive, Bethesda, MD 20892",
    ]
