"""iMIP invites: one event per visit, invited ahead of its window, updated and cancelled as the
calendar changes, saying what changed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from babel.dates import format_interval

from scheduler.calendars.events import visit_uid
from scheduler.calendars.imip import invite_message
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import (
    participant_anchor_change,
    participant_enroll,
    participant_withdraw,
    visit_book,
    visit_cancel,
)
from tests.calendars.conftest import NOW, event_of, ical_of, visit_at
from tests.factories import SiteFactory, participant_for

pytestmark = pytest.mark.django_db
NY = "America/New_York"


def invites(mailoutbox) -> list:
    """The messages that carry a calendar (the welcome message does not)."""
    return [m for m in mailoutbox if any(t.startswith("text/calendar") for _, t in m.alternatives)]


def codes_of(messages) -> list[str]:
    uids = {visit_uid(v): v.code for v in ScheduledVisit.objects.select_related("visit_definition")}
    return [uids[str(event_of(m)["UID"])] for m in messages]


def invite_rows(participant) -> list[tuple]:
    return list(
        Reminder.objects.filter(participant=participant, event="invite")
        .order_by("visit__target_date", "id")
        .values_list("visit__visit_definition__code", "rule_code", "due_at", "status")
    )


def sweep_at(moment: dt.datetime, capture) -> None:
    with time_machine.travel(moment, tick=False), capture(execute=True):
        reminders_sweep()


# ----------------------------------------------------------------------------------------
# Enrollment: a welcome, and invites only for what opens within the lead time


def test_enrollment_invites_only_visits_opening_within_the_lead_time_and_plans_the_rest(
    enroll_niams, mailoutbox
) -> None:
    participant = enroll_niams()  # on 2026-01-20, Day 1 on 2026-02-02

    [welcome, v2] = mailoutbox
    assert welcome.subject == "Welcome: your study visits at NIH Clinical Center"
    assert codes_of(invites(mailoutbox)) == ["V2"]
    event = event_of(v2)
    v2_visit = visit_at(participant, "V2")
    assert (
        str(event["UID"]),
        event.decoded("dtstart"),
        event.decoded("dtend"),
        str(event["STATUS"]),
        int(event["SEQUENCE"]),
        str(ical_of(v2)["METHOD"]),
    ) == (visit_uid(v2_visit), dt.date(2026, 2, 2), dt.date(2026, 2, 3), "TENTATIVE", 0, "REQUEST")
    assert {tuple(m.to) for m in mailoutbox} == {("NIH-001@example.org",)}
    assert {m.from_email for m in mailoutbox} == {"NIH Clinical Center <visits@nih.example>"}
    # Every later visit waits in the outbox for 09:00 New York time, 28 days before its window
    # opens. V1's window closed yesterday: nothing to put in the participant's calendar.
    at_nine = {"EST": 14, "EDT": 13}
    assert invite_rows(participant) == [
        ("V2", "INVITE-0", NOW, "sent"),
        ("V3", "INVITE-0", dt.datetime(2026, 1, 30, at_nine["EST"], tzinfo=dt.UTC), "pending"),
        ("V3C", "INVITE-0", dt.datetime(2026, 2, 7, at_nine["EST"], tzinfo=dt.UTC), "pending"),
        ("V4", "INVITE-0", dt.datetime(2026, 2, 27, at_nine["EST"], tzinfo=dt.UTC), "pending"),
        ("V5", "INVITE-0", dt.datetime(2026, 3, 27, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
        ("V6", "INVITE-0", dt.datetime(2026, 4, 24, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
        ("V7", "INVITE-0", dt.datetime(2026, 5, 22, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
        ("V8", "INVITE-0", dt.datetime(2026, 6, 19, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
        ("V9", "INVITE-0", dt.datetime(2026, 7, 17, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
        ("V10", "INVITE-0", dt.datetime(2026, 8, 14, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
        ("V11", "INVITE-0", dt.datetime(2026, 9, 7, at_nine["EDT"], tzinfo=dt.UTC), "pending"),
    ]


@pytest.mark.parametrize(
    ("lead_days", "invited_at_once"),
    [(7, []), (13, ["V2"]), (28, ["V2"]), (38, ["V2", "V3"]), (56, ["V2", "V3", "V3C"])],
)
def test_the_lead_time_is_a_setting(
    enroll_niams, mailoutbox, settings, lead_days, invited_at_once
) -> None:
    settings.INVITE_LEAD_DAYS = lead_days

    participant = enroll_niams()

    assert codes_of(invites(mailoutbox)) == invited_at_once
    assert len(mailoutbox) == 1 + len(invited_at_once)
    # The rest are planned for 09:00 New York time `lead_days` before their windows open.
    for visit in ScheduledVisit.objects.filter(participant=participant, window_end__gte=NOW.date()):
        [row] = Reminder.objects.filter(visit=visit, event="invite")
        if visit.code in invited_at_once:
            assert row.due_at == NOW
        else:
            local = row.due_at.astimezone(ZoneInfo(NY))
            assert (local.date(), local.time()) == (
                visit.window_start - dt.timedelta(days=lead_days),
                dt.time(9),
            )


def test_invite_mime_structure_is_imip(enroll_niams, mailoutbox) -> None:
    enroll_niams()

    mime = invites(mailoutbox)[0].message()
    parts = [(p.get_content_type(), p.get_param("method")) for p in mime.walk()]
    assert parts == [
        ("multipart/alternative", None),
        ("text/plain", None),
        ("text/html", None),
        ("text/calendar", "REQUEST"),
    ]
    assert [p.get_content_charset() for p in mime.walk()][1:] == ["utf-8", "utf-8", "utf-8"]


# ----------------------------------------------------------------------------------------
# Later visits: invited as their windows approach, once


def test_an_unbooked_visit_is_invited_with_its_window_as_a_range(
    enroll_niams, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    mailoutbox.clear()

    sweep_at(dt.datetime(2026, 1, 30, 14, 0, tzinfo=dt.UTC), django_capture_on_commit_callbacks)

    [message] = mailoutbox
    v3 = visit_at(participant, "V3")
    assert (v3.window_start, v3.window_end) == (dt.date(2026, 2, 27), dt.date(2026, 3, 5))
    assert (
        message.subject
        == "To book: Treatment visit 2 (week 4), Fri, Feb 27\u2009–\u2009Thu, Mar 5, 2026"
    )
    assert str(event_of(message)["DESCRIPTION"]).split("\n")[:2] == [
        "Not booked yet. The visit can take place between Friday, February 27, 2026 and "
        "Thursday, March 5, 2026; the site will confirm the day and time.",
        "Status: upcoming",
    ]


def test_every_unbooked_subject_gives_the_whole_window(
    enroll_niams, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    moment = NOW
    while moment < dt.datetime(2026, 10, 1, tzinfo=dt.UTC):
        moment += dt.timedelta(days=7)
        sweep_at(moment, django_capture_on_commit_callbacks)

    sent = invites(mailoutbox)
    assert codes_of(sent) == ["V2", "V3", "V3C", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11"]
    for message in sent:
        visit = next(
            v
            for v in ScheduledVisit.objects.filter(participant=participant)
            if visit_uid(v) == str(event_of(message)["UID"])
        )
        window = format_interval(visit.window_start, visit.window_end, "yMMMEd", locale="en")
        assert message.subject == f"To book: {visit.name}, {window}"


def test_invite_says_duration_place_and_how_to_prepare_in_plain_words(
    enroll_niams, mailoutbox
) -> None:
    participant = enroll_niams()
    [message] = [
        m
        for m in invites(mailoutbox)
        if str(event_of(m)["UID"]) == visit_uid(visit_at(participant, "V2"))
    ]

    event = event_of(message)
    assert str(event["SUMMARY"]) == "To book: Treatment visit 1 (week 0)"
    assert str(event["LOCATION"]) == "NIH Clinical Center, 10 Center Drive, Bethesda, MD 20892"
    assert str(event["DESCRIPTION"]).split("\n") == [
        "Not booked yet. The visit will take place on Monday, February 2, 2026; the site will "
        "confirm the time.",
        "Status: upcoming",
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
    # A one-day window: the range is that day.
    assert message.subject == "To book: Treatment visit 1 (week 0), Mon, Feb 2, 2026"
    assert message.body.split("\n")[:3] == [
        "Here is your study visit. Add it to your calendar; it will update itself if anything "
        "changes.",
        "",
        "To book: Treatment visit 1 (week 0)",
    ]


# ----------------------------------------------------------------------------------------
# Changes: at once for a visit already invited, replanned for one not invited yet


def test_rescheduling_visit_4_sends_exactly_one_request_with_the_same_uid_and_sequence_plus_one(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    v4 = visit_at(participant, "V4")
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        visit_book(
            visit=v4, local_date=dt.date(2026, 3, 30), local_time=dt.time(9, 30), by=coordinator
        )
    [first] = mailoutbox
    booked = event_of(first)
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        visit_book(
            visit=v4,
            local_date=dt.date(2026, 3, 31),
            local_time=dt.time(10, 0),
            by=coordinator,
            reason="participant asked",
        )

    # Booked before its invite was due: invited at once, as a booking, not as an update.
    assert (
        first.subject
        == "Study visit: Treatment visit 3 (week 8), Monday, March 30, 2026 9:30\u202fAM"
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
    assert mailoutbox[0].subject == (
        "Changed: Treatment visit 3 (week 8), Tuesday, March 31, 2026 10:00\u202fAM"
    )
    assert mailoutbox[0].body.split("\n")[:2] == [
        "Moved: Monday, March 30, 2026 9:30\u202fAM → Tuesday, March 31, 2026 10:00\u202fAM "
        "(America/New_York)",
        "This study visit has changed. Your calendar will update itself.",
    ]
    # The invite V4 had waiting for 27 February was replanned, never sent.
    assert [row[1:] for row in invite_rows(participant) if row[0] == "V4"] == [
        ("INVITE-0", dt.datetime(2026, 2, 27, 14, tzinfo=dt.UTC), "cancelled"),
        ("INVITE-1", NOW, "sent"),
        ("INVITE-2", NOW, "sent"),
    ]


def book(day: dt.date, at: dt.time, reason: str = ""):
    def step(participant, by) -> None:
        visit_book(
            visit=visit_at(participant, "V2"), local_date=day, local_time=at, by=by, reason=reason
        )

    return step


def cancel(participant, by) -> None:
    visit_cancel(visit=visit_at(participant, "V2"), by=by, reason="unwell")


def move_day1(participant, by) -> None:
    participant_anchor_change(
        participant=participant, code="day1", new_date=dt.date(2026, 2, 4), by=by, reason="slot"
    )


FEB_2 = dt.date(2026, 2, 2)
# V2 (window 2 February, one day) was invited at enrollment. name: (steps, each committed and
# sent on its own; V2's last subject; its first body line; every visit that got a message).
CHANGES = {
    "a booking moved": (
        [book(FEB_2, dt.time(9)), book(FEB_2, dt.time(13, 15), "traffic")],
        "Changed: Treatment visit 1 (week 0), Monday, February 2, 2026 1:15\u202fPM",
        "Moved: Monday, February 2, 2026 9:00\u202fAM → Monday, February 2, 2026 1:15\u202fPM "
        "(America/New_York)",
        ["V2", "V2"],
    ),
    "a window booked": (
        [book(FEB_2, dt.time(9))],
        "Changed: Treatment visit 1 (week 0), Monday, February 2, 2026 9:00\u202fAM",
        "Booked: Mon, Feb 2, 2026 → Monday, February 2, 2026 9:00\u202fAM (America/New_York)",
        ["V2"],
    ),
    # Every window moves two days; of them only V2 had been invited. V1's window, closed the
    # day before, is open again today: it is invited now, for the first time.
    "a window moved": (
        [move_day1],
        "Changed: Treatment visit 1 (week 0), Wed, Feb 4, 2026",
        "Window moved: Mon, Feb 2, 2026 → Wed, Feb 4, 2026",
        ["V1", "V2"],
    ),
    "a booking cancelled": (
        [book(FEB_2, dt.time(9)), cancel],
        "Cancelled: Treatment visit 1 (week 0), Monday, February 2, 2026 9:00\u202fAM",
        "Cancelled: Monday, February 2, 2026 9:00\u202fAM (America/New_York)",
        ["V2", "V2"],
    ),
    "a window cancelled": (
        [cancel],
        "Cancelled: Treatment visit 1 (week 0), Mon, Feb 2, 2026",
        "Cancelled: Mon, Feb 2, 2026",
        ["V2"],
    ),
    # Booked and moved before anything was sent: the participant hears of the newest state
    # only, as an update of the window they were sent.
    "two changes in one go": (
        [lambda p, by: (book(FEB_2, dt.time(9))(p, by), book(FEB_2, dt.time(10), "x")(p, by))],
        "Changed: Treatment visit 1 (week 0), Monday, February 2, 2026 10:00\u202fAM",
        "Booked: Mon, Feb 2, 2026 → Monday, February 2, 2026 10:00\u202fAM (America/New_York)",
        ["V2"],
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_update_says_what_changed_since_the_last_invite_sent(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks, change
) -> None:
    steps, subject, first_line, codes = CHANGES[change]
    participant = enroll_niams()
    mailoutbox.clear()

    for step in steps:
        with django_capture_on_commit_callbacks(execute=True):
            step(participant, coordinator)

    sent = invites(mailoutbox)
    [last] = [m for m, code in zip(sent, codes_of(sent), strict=True) if code == "V2"][-1:]
    assert sorted(codes_of(sent)) == codes
    assert (last.subject, last.body.split("\n")[0]) == (subject, first_line)


def test_a_visit_moved_before_its_invite_went_out_is_invited_once_for_its_new_window(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    with django_capture_on_commit_callbacks(execute=True):
        participant_anchor_change(
            participant=participant,
            code="day1",
            new_date=dt.date(2026, 2, 16),
            by=coordinator,
            reason="infusion slot",
        )
    mailoutbox.clear()

    # The old invite day of V3 (30 January) passes: nothing. Its new one (13 February) sends it.
    sweep_at(dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC), django_capture_on_commit_callbacks)
    early = invites(mailoutbox)
    sweep_at(dt.datetime(2026, 2, 13, 15, tzinfo=dt.UTC), django_capture_on_commit_callbacks)

    v3 = visit_at(participant, "V3")
    assert early == []
    assert codes_of(invites(mailoutbox)) == ["V3"]
    assert [row[1:] for row in invite_rows(participant) if row[0] == "V3"] == [
        ("INVITE-0", dt.datetime(2026, 1, 30, 14, tzinfo=dt.UTC), "cancelled"),
        ("INVITE-1", dt.datetime(2026, 2, 13, 14, tzinfo=dt.UTC), "sent"),
    ]
    assert v3.window_start == dt.date(2026, 3, 13)
    assert invites(mailoutbox)[0].subject == (
        "To book: Treatment visit 2 (week 4), Fri, Mar 13\u2009–\u2009Thu, Mar 19, 2026"
    )


def test_cancelling_a_visit_never_invited_sends_nothing(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        visit_cancel(visit=visit_at(participant, "V5"), by=coordinator, reason="not needed")
    for week in range(1, 11):  # to 31 March, past V5's invite day (27 March)
        sweep_at(NOW + dt.timedelta(weeks=week), django_capture_on_commit_callbacks)

    assert codes_of(invites(mailoutbox)) == ["V3", "V3C", "V4"]
    assert [row[1:] for row in invite_rows(participant) if row[0] == "V5"] == [
        ("INVITE-0", dt.datetime(2026, 3, 27, 13, tzinfo=dt.UTC), "cancelled"),
    ]


def test_withdrawal_cancels_the_invited_future_visits_and_the_invites_not_sent_yet(
    enroll_niams, mailoutbox, coordinator, django_capture_on_commit_callbacks
) -> None:
    participant = enroll_niams()
    sweep_at(dt.datetime(2026, 4, 25, 12, tzinfo=dt.UTC), django_capture_on_commit_callbacks)
    invited = {str(event_of(m)["UID"]): int(event_of(m)["SEQUENCE"]) for m in invites(mailoutbox)}
    mailoutbox.clear()

    with (
        # The day it is dated (a withdrawal is dated on or before the site's today).
        time_machine.travel(dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        participant_withdraw(
            participant=participant, on=dt.date(2026, 5, 1), by=coordinator, reason="moved abroad"
        )
    sweep_at(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), django_capture_on_commit_callbacks)

    future = [
        v.code
        for v in ScheduledVisit.objects.filter(participant=participant).order_by("target_date")
        if v.target_date >= dt.date(2026, 5, 1)
    ]
    assert future == ["V6", "V7", "V8", "V9", "V10", "V11"]
    # Of those, only V6 had been invited (on 24 April): one CANCEL, and the others' planned
    # invites never go.
    assert codes_of(invites(mailoutbox)) == ["V6"]
    [cancel] = invites(mailoutbox)
    event = event_of(cancel)
    assert (str(ical_of(cancel)["METHOD"]), str(event["STATUS"])) == ("CANCEL", "CANCELLED")
    assert int(event["SEQUENCE"]) == invited[str(event["UID"])] + 1
    assert {row[3] for row in invite_rows(participant) if row[0] in future[1:]} == {"cancelled"}


# ----------------------------------------------------------------------------------------
# Who receives them, in which language


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

    assert len(mailoutbox) == 1 + len(invites(mailoutbox)) >= 2
    assert {tuple(m.to) for m in mailoutbox} == {("Ann Parent <parent@example.org>",)}
    attendees = {str(event_of(m)["ATTENDEE"]) for m in invites(mailoutbox)}
    assert attendees == {"mailto:parent@example.org"}


@pytest.mark.parametrize(
    ("moment", "to"),
    [
        # 8 December in Tokyo, still 7 December in UTC: 18 where the participant lives.
        (dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC), ["minor@example.jp"]),
        (dt.datetime(2026, 12, 7, 14, 30, tzinfo=dt.UTC), ["Guardian <guardian@example.jp>"]),
    ],
)
def test_an_invite_goes_to_whoever_is_the_attendee_on_the_participants_own_date(
    import_seed, moment, to
) -> None:
    version = import_seed("003b")
    tokyo = SiteFactory.create(code="tokyo", name="Tokyo", timezone="Asia/Tokyo")
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 11, 2)},
        birth_date=dt.date(2008, 12, 8),
        site=tokyo,
        timezone="Asia/Tokyo",
        email="minor@example.jp",
        guardian_name="Guardian",
        guardian_email="guardian@example.jp",
    )
    with time_machine.travel(dt.datetime(2026, 10, 1, tzinfo=dt.UTC), tick=False):
        participant_enroll(
            participant=participant, on=dt.date(2026, 10, 1), arm=version.arm_set.first()
        )
    visit = ScheduledVisit.objects.filter(participant=participant).order_by("target_date").last()
    assert visit is not None

    with time_machine.travel(moment, tick=False):
        message = invite_message(visit, method="REQUEST")

    assert message is not None
    assert message.to == to


def test_invites_follow_the_participant_language(
    import_seed, mailoutbox, django_capture_on_commit_callbacks
) -> None:
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
    # The first infusion's window opens on 13 March: its invite goes on 13 February, 09:00 JST.
    sweep_at(dt.datetime(2026, 2, 13, 0, 0, tzinfo=dt.UTC), django_capture_on_commit_callbacks)

    [welcome, first] = mailoutbox
    assert welcome.subject == "ようこそ: 筑波大学附属病院 での治験の来院予定"
    assert first.subject == "予約待ち: アニフロルマブ点滴の来院（2026年3月13日(金)～19日(木)）"
    assert str(event_of(first)["DESCRIPTION"]).split("\n") == [
        "まだ予約されていません。来院は 2026年3月13日金曜日 から 2026年3月19日木曜日 までの間に"
        "行えます。日時は医療機関からお知らせします。",
        "状況: 予定",
        "所要時間: 最大 2時間",
        "場所: 筑波大学附属病院, 10 Center Drive, Bethesda, MD 20892",
        "ご質問や日時の変更は 029-853-3186 までお電話ください。",
    ]


@pytest.mark.parametrize(
    ("participant_zone", "their_line"),
    [
        ("America/New_York", None),
        # Same offset, another name: the clock reads the same, nothing to add.
        ("America/Toronto", None),
        (
            "America/Los_Angeles",
            "That is Monday, March 30, 2026 at 6:30\u202fAM where you are "
            "(America/Los_Angeles time).",
        ),
        (
            "Asia/Tokyo",
            "That is Monday, March 30, 2026 at 10:30\u202fPM where you are (Asia/Tokyo time).",
        ),
    ],
)
def test_invite_gives_the_participants_own_clock_when_it_reads_differently(
    enroll_niams, coordinator, django_capture_on_commit_callbacks, participant_zone, their_line
) -> None:
    participant = enroll_niams(timezone=participant_zone)
    v4 = visit_at(participant, "V4")
    with django_capture_on_commit_callbacks(execute=True):
        visit_book(
            visit=v4, local_date=dt.date(2026, 3, 30), local_time=dt.time(9, 30), by=coordinator
        )
    message = invite_message(ScheduledVisit.objects.get(pk=v4.pk), method="REQUEST")
    assert message is not None
    description = str(event_of(message)["DESCRIPTION"]).splitlines()

    when = description.index("When: Monday, March 30, 2026 at 9:30\u202fAM (America/New_York time)")
    following = description[when + 1]
    assert (following if following.startswith("That is") else None) == their_line
