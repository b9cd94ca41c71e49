"""What a participant receives from enrollment on: one welcome, then each visit's invite as its
window approaches (INVITE_LEAD_DAYS before it opens), exactly once, through the outbox."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import time_machine
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from django.core.mail.backends.base import BaseEmailBackend
from icalendar import Calendar

from participants.models import Participant
from scheduler.calendars.events import visit_uid
from scheduler.calendars.feeds import feed_create
from scheduler.models import CalendarFeed, Reminder, ScheduledVisit
from scheduler.outbox.plan import announce_welcome
from scheduler.outbox.sweep import reminder_send, reminders_sweep
from scheduler.services import participant_enroll, participant_withdraw, visit_record_done
from tests.factories import SiteFactory, participant_for
from trials.models import Site

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")
ENROLLED_AT = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.UTC)  # 11:00 in Berlin
PUBLIC_URL = "https://visits.example.org"


@pytest.fixture(autouse=True)
def public_url(settings) -> None:
    settings.PUBLIC_URL = PUBLIC_URL


@pytest.fixture
def charite(db) -> Site:
    return SiteFactory.create(
        code="charite",
        name="Charité Berlin",
        timezone="Europe/Berlin",
        country="DE",
        address="Charitéplatz 1, 10117 Berlin",
        phone="+49 30 450 50",
        email="studien@charite.example",
    )


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator")


def jasmine_participant(import_seed, site: Site, **fields: Any) -> Participant:
    """A JASMINE participant in screening; Day 1 is Monday 2 March 2026."""
    return participant_for(
        import_seed("002"),
        anchors={"day1": dt.date(2026, 3, 2)},
        site=site,
        study_id=fields.pop("study_id", "BERLIN-001"),
        email=fields.pop("email", "teilnehmer@example.de"),
        timezone="Europe/Berlin",
        **fields,
    )


def enroll(participant: Participant, capture) -> None:
    with time_machine.travel(ENROLLED_AT, tick=False), capture(execute=True):
        participant_enroll(
            participant=participant,
            on=ENROLLED_AT.date(),
            arm=participant.protocol_version.arm_set.get(code="ANI"),
        )


def sweep_at(moment: dt.datetime, capture) -> None:
    with time_machine.travel(moment, tick=False), capture(execute=True):
        reminders_sweep()


def invites(messages) -> list:
    return [m for m in messages if any(t.startswith("text/calendar") for _, t in m.alternatives)]


def visit_codes(participant: Participant) -> dict[str, str]:
    return {
        visit_uid(v): v.code
        for v in ScheduledVisit.objects.filter(participant=participant).select_related(
            "visit_definition"
        )
    }


def codes_of(messages, participant: Participant) -> list[str]:
    codes = visit_codes(participant)
    return [
        codes[str(Calendar.from_ical(content).walk("VEVENT")[0]["UID"])]
        for m in messages
        for content, mimetype in m.alternatives
        if mimetype.startswith("text/calendar")
    ]


# ----------------------------------------------------------------------------------------
# The acceptance test: a JASMINE enrollment and a year of weekly sweeps


def test_a_jasmine_enrollment_sends_one_welcome_and_only_the_invites_within_the_lead_time(
    import_seed, charite, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)

    enroll(participant, django_capture_on_commit_callbacks)

    assert ScheduledVisit.objects.filter(participant=participant).count() == 54
    # Screening's window (2-16 February) is open, the first injection's (28 February - 4 March)
    # opens within 28 days; the second's (7 March) does not.
    assert [m.subject for m in mailoutbox] == [
        "Welcome: your study visits at Charité Berlin",
        "To book: Screening, Mon, Feb 2\u2009–\u2009Mon, Feb 16, 2026",
        "To book: Weekly injection visit, Sat, Feb 28\u2009–\u2009Wed, Mar 4, 2026",
    ]
    assert codes_of(mailoutbox, participant) == ["SCR", "TRT#1"]
    assert {tuple(m.to) for m in mailoutbox} == {("teilnehmer@example.de",)}
    # The other 52 wait in the outbox, each for its own day; none is queued on Redis.
    waiting = Reminder.objects.filter(participant=participant, event="invite", status="pending")
    assert waiting.count() == 52
    assert set(waiting.values_list("enqueued_at", flat=True)) == {None}


def test_weekly_sweeps_invite_every_later_visit_before_its_window_opens_exactly_once(
    import_seed, charite, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)
    enroll(participant, django_capture_on_commit_callbacks)
    at_enrollment = codes_of(mailoutbox, participant)

    sent_on: dict[str, dt.date] = {}
    for week in range(1, 62):  # to April 2027, past the follow-up visit's window
        moment = ENROLLED_AT + dt.timedelta(weeks=week)
        before = len(mailoutbox)
        sweep_at(moment, django_capture_on_commit_callbacks)
        for code in codes_of(mailoutbox[before:], participant):
            sent_on[code] = moment.astimezone(BERLIN).date()

    visits = list(
        ScheduledVisit.objects.filter(participant=participant).select_related("visit_definition")
    )
    sent_rows = Counter(
        Reminder.objects.filter(participant=participant, event="invite", status="sent").values_list(
            "visit_id", flat=True
        )
    )
    assert at_enrollment == ["SCR", "TRT#1"]
    assert sent_rows == Counter({visit.pk: 1 for visit in visits})  # every visit, once
    assert Counter(codes_of(mailoutbox, participant)) == Counter({v.code: 1 for v in visits})
    # Each later invite went out in the week its invite day (28 days before the window) fell
    # in: never early, and at least three weeks before the window opened.
    later = [visit for visit in visits if visit.code not in at_enrollment]
    assert len(later) == 52
    for visit in later:
        invite_day = visit.window_start - dt.timedelta(days=28)
        assert invite_day <= sent_on[visit.code] < invite_day + dt.timedelta(days=7), visit.code
        assert sent_on[visit.code] < visit.window_start, visit.code
    # To the participant: the welcome and 54 invites, nothing else (no visit was booked).
    to_participant = [m for m in mailoutbox if m.to == ["teilnehmer@example.de"]]
    assert len(to_participant) == 1 + 54
    assert [m.subject for m in to_participant if not invites([m])] == [
        "Welcome: your study visits at Charité Berlin"
    ]


def test_a_visit_done_before_its_first_invite_is_never_invited(
    import_seed, charite, coordinator, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)
    enroll(participant, django_capture_on_commit_callbacks)
    trt2 = ScheduledVisit.objects.get(
        participant=participant, visit_definition__code="TRT", occurrence=2
    )
    with time_machine.travel(dt.datetime(2026, 2, 3, 12, tzinfo=dt.UTC), tick=False):
        # Done early (a deviation), five weeks before its window.
        visit_record_done(
            visit=trt2, actual_date=dt.date(2026, 2, 3), by=coordinator, reason="travel"
        )
    mailoutbox.clear()

    sweep_at(dt.datetime(2026, 2, 9, 12, tzinfo=dt.UTC), django_capture_on_commit_callbacks)

    row = Reminder.objects.get(visit=trt2, event="invite")
    assert codes_of(mailoutbox, participant) == []
    assert (row.status, row.last_error) == (
        "cancelled",
        "the visit was done before its first invite went out",
    )


def test_a_first_invite_whose_window_closed_while_the_outbox_was_down_is_not_sent(
    import_seed, charite, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)
    enroll(participant, django_capture_on_commit_callbacks)
    mailoutbox.clear()

    # No sweep from enrollment until 12 March: TRT#2's window (7-11 March) has closed;
    # TRT#3's (14-18 March) is still ahead, and so are the next three within 28 days.
    sweep_at(dt.datetime(2026, 3, 12, 12, tzinfo=dt.UTC), django_capture_on_commit_callbacks)

    trt2 = Reminder.objects.get(
        participant=participant,
        event="invite",
        visit__visit_definition__code="TRT",
        visit__occurrence=2,
    )
    assert codes_of(mailoutbox, participant) == ["TRT#3", "TRT#4", "TRT#5", "TRT#6"]
    assert (trt2.status, trt2.last_error) == (
        "cancelled",
        "its window closed before its first invite went out",
    )


# ----------------------------------------------------------------------------------------
# The welcome message


def test_the_welcome_says_what_the_calendar_holds_how_to_subscribe_and_whom_to_call(
    client, import_seed, charite, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)

    enroll(participant, django_capture_on_commit_callbacks)

    welcome = mailoutbox[0]
    [feed] = CalendarFeed.objects.filter(participant=participant)
    url = re.search(rf"^{re.escape(PUBLIC_URL)}/feeds/participant/\S+\.ics$", welcome.body, re.M)
    assert url is not None
    assert welcome.body == (
        "Thank you for taking part in this study.\n"
        "\n"
        "Your study calendar holds 54 visits, from Monday, February 2, 2026 to Monday, "
        "March 29, 2027.\n"
        "We will email you an invitation to each visit 28 days before it can take place, and "
        "again whenever its day or time changes. Add each one to your calendar.\n"
        "\n"
        "To see all your study visits in your calendar app, subscribe to this address (in "
        "most apps: Add calendar, From URL):\n"
        f"{url.group(0)}\n"
        "Keep this address to yourself: anyone who has it can see your visit dates.\n"
        "\n"
        "Questions, or need another time? Call Charité Berlin on +49 30 450 50.\n"
    )
    assert (welcome.to, welcome.reply_to, welcome.from_email) == (
        ["teilnehmer@example.de"],
        ["=?utf-8?q?Charit=C3=A9_Berlin?= <studien@charite.example>"],
        "=?utf-8?q?Charit=C3=A9_Berlin?= <studien@charite.example>",
    )
    assert welcome.alternatives == []
    subscribed = client.get(url.group(0).removeprefix(PUBLIC_URL))
    assert subscribed.status_code == 200
    assert len(Calendar.from_ical(subscribed.content).walk("VEVENT")) == 54
    assert (feed.revoked_at, feed.created_by) == (None, None)
    assert Reminder.objects.get(participant=participant, event="welcome").target_key == (
        f"participant:{participant.pk}"
    )


def test_the_welcome_speaks_the_participants_language(
    import_seed, charite, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite, language="ja")

    enroll(participant, django_capture_on_commit_callbacks)

    welcome = mailoutbox[0]
    lines = welcome.body.split("\n")
    assert welcome.subject == "ようこそ: Charité Berlin での治験の来院予定"
    assert lines[:4] == [
        "この治験にご参加いただきありがとうございます。",
        "",
        "来院予定は 2026年2月2日月曜日 から 2027年3月29日月曜日 までの 54 回です。",
        "各来院の案内は、来院可能期間が始まる 28日 前と、日時が変わるたびにメールでお送りします。"
        "その都度カレンダーに追加してください。",
    ]
    assert lines[-2:] == [
        "ご質問や日時の変更は Charité Berlin（+49 30 450 50）までお電話ください。",
        "",
    ]


def test_a_participant_who_already_has_a_feed_is_told_to_ask_for_it_not_given_another(
    import_seed, charite, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)
    feed_create(participant=participant)

    enroll(participant, django_capture_on_commit_callbacks)

    assert CalendarFeed.objects.filter(participant=participant).count() == 1
    assert mailoutbox[0].body.split("\n")[5] == (
        "Your study team has already given you an address to see all your visits in your "
        "calendar app; ask them for a new one if you no longer have it."
    )
    assert "/feeds/" not in mailoutbox[0].body


class RefusingSmtp(BaseEmailBackend):
    """The outside world: an SMTP server that refuses every connection."""

    def send_messages(self, email_messages: Any) -> int:
        raise ConnectionRefusedError("connection refused")


def test_a_welcome_that_cannot_be_sent_revokes_the_feed_it_created_and_retries_with_a_new_one(
    import_seed, charite, settings, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    participant = jasmine_participant(import_seed, charite)
    settings.EMAIL_BACKEND = f"{__name__}.RefusingSmtp"
    enroll(participant, django_capture_on_commit_callbacks)
    welcome = Reminder.objects.get(participant=participant, event="welcome")
    failed = (welcome.status, welcome.last_error, welcome.attempts)
    revoked = list(CalendarFeed.objects.filter(participant=participant))

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with time_machine.travel(ENROLLED_AT + dt.timedelta(minutes=5), tick=False):
        outcome = reminder_send(welcome.pk)

    assert failed == ("failed", "email not accepted: ConnectionRefusedError", 1)
    assert [feed.revoked_at for feed in revoked] == [ENROLLED_AT]
    assert outcome == "sent"
    active = CalendarFeed.objects.filter(participant=participant, revoked_at__isnull=True)
    assert active.count() == 1
    assert [m.subject for m in mailoutbox] == ["Welcome: your study visits at Charité Berlin"]


def test_a_participant_is_welcomed_once_and_only_with_somewhere_to_send_it(
    import_seed, charite, django_capture_on_commit_callbacks
) -> None:
    version = import_seed("002")
    reachable = jasmine_participant(lambda _prefix: version, charite)
    unreachable = jasmine_participant(
        lambda _prefix: version, charite, study_id="BERLIN-002", email=""
    )
    for participant in (reachable, unreachable):
        enroll(participant, django_capture_on_commit_callbacks)

    announce_welcome(reachable)  # a second call, say after a retried enrollment request

    assert Reminder.objects.filter(event="welcome").count() == 1
    assert (
        Reminder.objects.filter(participant=unreachable).exclude(audience="coordinator").count()
        == 0
    )


def test_a_participant_withdrawn_before_the_welcome_went_out_is_not_welcomed(
    import_seed, charite, coordinator
) -> None:
    participant = jasmine_participant(import_seed, charite)
    with time_machine.travel(ENROLLED_AT, tick=False):
        # Committed, but its message never reached a worker.
        participant_enroll(
            participant=participant,
            on=ENROLLED_AT.date(),
            arm=participant.protocol_version.arm_set.get(code="ANI"),
        )
        participant_withdraw(
            participant=participant, on=ENROLLED_AT.date(), by=coordinator, reason="changed mind"
        )

    assert set(
        Reminder.objects.filter(participant=participant, audience="participant").values_list(
            "event", "status"
        )
    ) == {("invite", "cancelled"), ("welcome", "cancelled")}


# ----------------------------------------------------------------------------------------
# Housekeeping the issue asks for


def test_no_server_date_is_read_where_a_participants_or_sites_date_is_meant() -> None:
    sources = sorted((ROOT / "scheduler" / "calendars").glob("*.py")) + sorted(
        (ROOT / "scheduler" / "outbox").glob("*.py")
    )
    assert [path.name for path in sources if "localdate(" in path.read_text()] == []


def test_every_participant_facing_text_has_its_japanese_translation() -> None:
    catalog = read_po((ROOT / "scheduler/locale/ja/LC_MESSAGES/django.po").open(encoding="utf-8"))
    keywords = {"_": None, "gettext": None, "gettext_noop": None, "ngettext": (1, 2)}
    untranslated = []
    for module in ("calendars/events.py", "calendars/imip.py", "outbox/channels.py"):
        for _line, message, _comments, _context in extract_from_file(
            "python", ROOT / "scheduler" / module, keywords=keywords
        ):
            msgid = message[0] if isinstance(message, tuple) else message
            entry = catalog.get(msgid)
            # babel types `string` as a str or a tuple whether or not the entry is plural.
            if entry is None or not (
                cast("tuple[str, ...]", entry.string)[0] if entry.pluralizable else entry.string
            ):
                untranslated.append(msgid)
    assert untranslated == []
