"""Site-local time in the admin: every "today" is the site's, every instant is shown on the
site's clock with its zone's abbreviation, and a list spanning sites in several zones uses each
site's own today.

The clock is frozen where UTC's date and the sites' dates differ: at 2026-12-07 23:30Z it is
already Tuesday 8 December 08:30 in Tokyo and still Monday 7 December 18:30 in New York; at
2026-12-08 03:00Z UTC has moved on to the 8th while New York is still on the 7th (22:00).
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from typing import Any

import pytest
import time_machine
from django.urls import reverse

from participants.models import Participant
from scheduler.models import CoordinatorNotification, Reminder, ScheduledVisit
from scheduler.services import (
    participant_enroll,
    visit_book,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
)
from tests.factories import SiteFactory, member_of_every_trial_site, participant_for
from tests.scheduler.test_admin_views import action_url, change_url, tables
from trials.models import ProtocolVersion, Site

D = dt.date
TOKYO_MORNING = dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC)
NEW_YORK_NIGHT = dt.datetime(2026, 12, 8, 3, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.fixture(params=[TOKYO_MORNING, NEW_YORK_NIGHT], ids=["2330Z", "0300Z"])
def moment(request) -> Any:
    with time_machine.travel(request.param, tick=False):
        yield request.param


@pytest.fixture
def clock():
    with time_machine.travel(TOKYO_MORNING, tick=False) as traveller:
        yield traveller


@pytest.fixture
def niams(import_seed) -> ProtocolVersion:
    return import_seed("000")


@pytest.fixture
def tokyo() -> Site:
    return SiteFactory.create(
        code="tsukuba", name="Tsukuba University Hospital", timezone="Asia/Tokyo", country="JP"
    )


@pytest.fixture
def new_york() -> Site:
    return SiteFactory.create(code="nyu", name="NYU Langone", timezone="America/New_York")


def enrolled(version: ProtocolVersion, site: Site, study_id: str, day1: dt.date) -> Participant:
    participant = participant_for(version, anchors={"day1": day1}, site=site, study_id=study_id)
    participant_enroll(participant=participant, on=day1 - dt.timedelta(days=35))
    return participant


def visit(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )


VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


class _Rows(HTMLParser):
    """Body rows of the table with the given id (header and data cells alike), and the text of
    every element whose class names a field (`field-<name>`), in page order."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.rows: list[list[str]] = []
        self.fields: dict[str, list[str]] = {}
        self._in_table = self._in_body = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._field: tuple[str, str, int, list[str]] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in VOID_ELEMENTS:
            return
        self._depth += 1
        if tag == "table" and attributes.get("id") == self.table_id:
            self._in_table = True
        elif tag == "tbody" and self._in_table:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        names = [c[6:] for c in (attributes.get("class") or "").split() if c.startswith("field-")]
        if names and self._field is None and tag in ("td", "th", "div"):
            self._field = (names[0], tag, self._depth, [])

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS:
            return
        if self._field is not None and tag == self._field[1] and self._depth == self._field[2]:
            name, _, _, text = self._field
            self.fields.setdefault(name, []).append(" ".join("".join(text).split()))
            self._field = None
        self._depth -= 1
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._field is not None:
            self._field[3].append(data)


def rows(response: Any, table_id: str = "result_list") -> list[list[str]]:
    parser = _Rows(table_id)
    parser.feed(response.content.decode())
    return parser.rows


def fields(response: Any, name: str) -> list[str]:
    parser = _Rows("")
    parser.feed(response.content.decode())
    return parser.fields.get(name, [])


def note_shown(response: Any) -> str | None:
    found = re.search(r'<p id="lifecycle-note">(.*?)</p>', response.content.decode(), re.S)
    return " ".join(found.group(1).split()) if found else None


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# ----------------------------------------------------------------------------------------
# "Today" is each site's own


@pytest.fixture
def due_at_both(moment, niams, tokyo, new_york) -> dict[str, Participant]:
    """Day 1 (V2, a one-day window) is each site's today: 8 December in Tokyo, 7 December in
    New York. Screening (V1) closed in November for both: overdue."""
    return {
        "tokyo": enrolled(niams, tokyo, "TKY-001", D(2026, 12, 8)),
        "new_york": enrolled(niams, new_york, "NYC-001", D(2026, 12, 7)),
    }


def test_participant_status_counts_use_each_sites_today(admin_client, due_at_both) -> None:
    response = admin_client.get(reverse("admin:participants_participant_changelist"))

    # study id, then due, overdue, booked, out of window, missed (after where, status and
    # enrolled; no checkbox column: clinical rows have no bulk actions)
    assert [[row[0], *row[4:]] for row in rows(response)] == [
        ["NYC-001", "1", "1", "0", "0", "0"],
        ["TKY-001", "1", "1", "0", "0", "0"],
    ]


def test_site_status_counts_use_each_sites_today(admin_client, due_at_both) -> None:
    response = admin_client.get(reverse("admin:trials_site_changelist"))

    assert rows(response) == [
        ["nyu", "NYU Langone", "America/New_York", "US", "1", "0", "0", "0", "0", "1"],
        [
            "tsukuba",
            "Tsukuba University Hospital",
            "Asia/Tokyo",
            "JP",
            "1",
            "0",
            "0",
            "0",
            "0",
            "1",
        ],
    ]


@pytest.mark.parametrize(
    ("attention", "site", "expected"),
    [
        ("due", None, [("NYC-001", "V2"), ("TKY-001", "V2")]),
        ("overdue", None, [("NYC-001", "V1"), ("TKY-001", "V1")]),
        # A Tokyo site's "due today" is 8 December's list, New York's is 7 December's.
        ("due", "tokyo", [("TKY-001", "V2")]),
        ("due", "new_york", [("NYC-001", "V2")]),
    ],
)
def test_visit_list_filters_use_each_sites_today(
    admin_client, due_at_both, attention, site, expected
) -> None:
    query = {"attention": attention}
    if site is not None:
        query["participant__site__id__exact"] = str(due_at_both[site].site_id)

    response = admin_client.get(reverse("admin:scheduler_scheduledvisit_changelist"), query)

    assert (
        sorted((v.participant.study_id, v.code) for v in response.context["cl"].result_list)
        == expected
    )


@pytest.fixture
def window_closing(moment, niams, tokyo, new_york) -> dict[str, Participant]:
    """Day 1 on 6 November: V3's window is 1 to 7 December, open in New York (today the 7th),
    closed in Tokyo (today the 8th); V4 is on 1 January, ahead of both."""
    return {
        "tokyo": enrolled(niams, tokyo, "TKY-002", D(2026, 11, 6)),
        "new_york": enrolled(niams, new_york, "NYC-002", D(2026, 11, 6)),
    }


def test_withdrawal_date_defaults_to_the_sites_today(admin_client, window_closing) -> None:
    defaults = {
        key: admin_client.get(action_url(participant, "withdraw")).context["form"].initial
        for key, participant in window_closing.items()
    }

    assert defaults == {"tokyo": {"on": D(2026, 12, 8)}, "new_york": {"on": D(2026, 12, 7)}}


def test_booking_defaults_to_the_first_day_from_the_sites_today_inside_the_window(
    admin_client, window_closing
) -> None:
    pages = {
        (key, code): admin_client.get(action_url(visit(participant, code), "book"))
        for key, participant in window_closing.items()
        for code in ("V3", "V4")
    }

    assert {
        key: (page.context["form"].initial.get("local_date"), page.context.get("note"))
        for key, page in pages.items()
    } == {
        # The target day passed; today is still inside the window.
        ("new_york", "V3"): (D(2026, 12, 7), None),
        # The window closed yesterday: no day is offered, and the page says why.
        ("tokyo", "V3"): (
            None,
            "The window of V3 (2026-12-01 to 2026-12-07) closed before today at the site "
            "(2026-12-08), so no date is suggested. A later date is a protocol deviation and "
            "needs a reason; to record a visit that already happened, use “Record done”.",
        ),
        # Ahead of both: the protocol's target day.
        ("new_york", "V4"): (D(2027, 1, 1), None),
        ("tokyo", "V4"): (D(2027, 1, 1), None),
    }
    assert note_shown(pages[("tokyo", "V3")]) == pages[("tokyo", "V3")].context["note"]


def test_record_done_defaults_to_the_planned_day_but_never_after_the_sites_today(
    admin_client, window_closing
) -> None:
    defaults = {
        (key, code): admin_client.get(action_url(visit(participant, code), "record_done"))
        .context["form"]
        .initial["actual_date"]
        for key, participant in window_closing.items()
        for code in ("V3", "V4")
    }

    assert defaults == {
        ("new_york", "V3"): D(2026, 12, 4),
        ("tokyo", "V3"): D(2026, 12, 4),
        ("new_york", "V4"): D(2026, 12, 7),
        ("tokyo", "V4"): D(2026, 12, 8),
    }


# ----------------------------------------------------------------------------------------
# Instants on the site's clock, with the zone's abbreviation


@pytest.fixture
def booked_at_both(clock, niams, tokyo, new_york, admin_client) -> dict[str, Any]:
    """Each participant's V3 booked on its target day at 09:30 site time through the admin;
    `pages` are the visit pages the coordinator lands on after confirming."""
    participants = {
        "tokyo": enrolled(niams, tokyo, "TKY-001", D(2026, 12, 8)),
        "new_york": enrolled(niams, new_york, "NYC-001", D(2026, 12, 7)),
    }
    pages = {}
    for key, participant in participants.items():
        v3 = visit(participant, "V3")
        pages[key] = admin_client.post(
            action_url(v3, "book"),
            {
                "local_date": v3.target_date.isoformat(),
                "local_time": "09:30",
                "reason": "",
                "version": "1",
                "_confirm": "Confirm booking",
            },
            follow=True,
        )
    return {**participants, "pages": pages}


def test_booking_message_and_visit_page_show_the_sites_clock(booked_at_both) -> None:
    pages = booked_at_both["pages"]

    assert {key: messages_of(page) for key, page in pages.items()} == {
        "tokyo": ["V3 booked for Tue 5 Jan 2027 09:30 JST; nothing else in the calendar changed."],
        "new_york": [
            "V3 booked for Mon 4 Jan 2027 09:30 EST; nothing else in the calendar changed."
        ],
    }
    assert {key: fields(page, "booked_at") for key, page in pages.items()} == {
        "tokyo": ["Booked at: Tue 5 Jan 2027 09:30 JST"],
        "new_york": ["Booked at: Mon 4 Jan 2027 09:30 EST"],
    }
    assert [visit(booked_at_both[key], "V3").booked_start for key in pages] == [
        utc(2027, 1, 5, 0, 30),
        utc(2027, 1, 4, 14, 30),
    ]


def test_visit_list_shows_bookings_on_the_sites_clock(admin_client, booked_at_both) -> None:
    response = admin_client.get(
        reverse("admin:scheduler_scheduledvisit_changelist"), {"status__exact": "booked"}
    )

    assert sorted(fields(response, "booked_at")) == [
        "Mon 4 Jan 2027 09:30 EST",
        "Tue 5 Jan 2027 09:30 JST",
    ]


def test_enrollment_instant_is_on_the_sites_clock(admin_client, booked_at_both) -> None:
    listed = admin_client.get(reverse("admin:participants_participant_changelist"))
    tokyo_page = admin_client.get(change_url(booked_at_both["tokyo"]))

    # The list shows the enrollment's day (its `on`); the page the instant it was recorded.
    assert fields(listed, "enrolled_column") == ["2026-11-02", "2026-11-03"]
    assert fields(tokyo_page, "enrolled") == ["Enrolled at: Tue 8 Dec 2026 08:30 JST"]
    # Enrolled before the day was kept: the site-local day of the instant it was recorded.
    Participant.objects.update(enrolled_on=None)
    listed = admin_client.get(reverse("admin:participants_participant_changelist"))
    assert fields(listed, "enrolled_column") == ["2026-12-07", "2026-12-08"]


def test_visit_history_dates_are_on_the_sites_clock(admin_client, booked_at_both) -> None:
    response = admin_client.get(
        reverse("admin:scheduler_historicalscheduledvisit_changelist"),
        {"participant__site__id__exact": str(booked_at_both["tokyo"].site_id)},
    )

    assert set(fields(response, "changed_at")) == {"Tue 8 Dec 2026 08:30 JST"}


def test_history_pages_date_each_entry_on_the_sites_clock(admin_client, booked_at_both) -> None:
    tokyo = booked_at_both["tokyo"]
    pages = [
        reverse("admin:scheduler_scheduledvisit_history", args=[visit(tokyo, "V3").pk]),
        reverse("admin:participants_participant_history", args=[tokyo.pk]),
    ]

    dates = [[row[1] for row in tables(admin_client.get(page))["change-history"]] for page in pages]

    # V3: enrolled, then booked; the participant: registered, then enrolled.
    assert dates == [["Tue 8 Dec 2026 08:30 JST"] * 2, ["Tue 8 Dec 2026 08:30 JST"] * 2]


@pytest.fixture
def sent_reminder(booked_at_both) -> Reminder:
    """A reminder to Tokyo's coordinators due at 08:00 their time this morning, sent a minute
    later, and its in-app notice (written now, 08:30 in Tokyo)."""
    participant = booked_at_both["tokyo"]
    reminder = Reminder.objects.create(
        participant=participant,
        visit=visit(participant, "V3"),
        target_key=f"visit:{visit(participant, 'V3').pk}",
        rule_code="C_DAY_BEFORE",
        event="before_visit",
        channel="in_app",
        audience="coordinator",
        due_at=utc(2026, 12, 7, 23, 0),
        next_attempt_at=utc(2026, 12, 7, 23, 0),
        status=Reminder.Status.SENT,
        sent_at=utc(2026, 12, 7, 23, 1),
        attempts=1,
    )
    CoordinatorNotification.objects.create(
        site=participant.site, reminder=reminder, text="TKY-001 V3 on 5 January 09:30"
    )
    # Only this row, so the lists show what this test is about.
    Reminder.objects.exclude(pk=reminder.pk).delete()
    return reminder


def test_reminder_list_and_participant_page_show_due_and_sent_on_the_sites_clock(
    admin_client, sent_reminder
) -> None:
    listed = admin_client.get(
        reverse("admin:scheduler_reminder_changelist"), {"rule_code": "C_DAY_BEFORE"}
    )
    page = admin_client.get(change_url(sent_reminder.participant))

    assert (fields(listed, "due"), fields(listed, "sent")) == (
        ["Tue 8 Dec 2026 08:00 JST"],
        ["Tue 8 Dec 2026 08:01 JST"],
    )
    assert (fields(page, "due"), fields(page, "sent")) == (
        ["Tue 8 Dec 2026 08:00 JST"],
        ["Tue 8 Dec 2026 08:01 JST"],
    )


def test_coordinator_notices_are_dated_on_the_sites_clock(admin_client, sent_reminder) -> None:
    response = admin_client.get(reverse("admin:scheduler_coordinatornotification_changelist"))

    assert fields(response, "created") == ["Tue 8 Dec 2026 08:30 JST"]


# ----------------------------------------------------------------------------------------
# Status computed from the site's today, not the stored one


@pytest.fixture
def lived_calendar(clock, niams, new_york, admin_user) -> Participant:
    """A New York calendar on 7 December 2026 (Day 1 was 12 October) with one visit of every
    status at a glance."""
    participant = enrolled(niams, new_york, "NYC-003", D(2026, 10, 12))
    visit_record_done(visit=visit(participant, "V2"), actual_date=D(2026, 10, 12), by=admin_user)
    visit_record_done(
        visit=visit(participant, "V3"), actual_date=D(2026, 11, 14), by=admin_user, reason="flu"
    )
    visit_mark_missed(visit=visit(participant, "V3C"), by=admin_user, reason="no answer")
    visit_book(
        visit=visit(participant, "V5"),
        local_date=D(2027, 1, 4),
        local_time=dt.time(10, 0),
        by=admin_user,
    )
    visit_cancel(visit=visit(participant, "V7"), by=admin_user, reason="site closed")
    return participant


GLANCE = [
    ("V1", "overdue"),  # its window closed in September, nothing recorded
    ("V2", "done"),
    ("V3", "out of window"),
    ("V3C", "missed"),
    ("V4", "due"),  # window 4 to 10 December
    ("V5", "booked"),
    ("V6", "upcoming"),
    ("V7", "cancelled"),
    ("V8", "upcoming"),
    ("V9", "upcoming"),
    ("V10", "upcoming"),
    ("V11", "upcoming"),
]


def codes(participant: Participant) -> list[str]:
    return [
        v.code
        for v in ScheduledVisit.objects.filter(participant=participant)
        .select_related("visit_definition")
        .order_by("target_date", "id")
    ]


def test_participant_page_shows_each_visits_computed_status(admin_client, lived_calendar) -> None:
    page = admin_client.get(change_url(lived_calendar))

    assert list(zip(codes(lived_calendar), fields(page, "glance_status"), strict=True)) == GLANCE


def test_visit_list_shows_each_visits_computed_status(admin_client, lived_calendar) -> None:
    response = admin_client.get(
        reverse("admin:scheduler_scheduledvisit_changelist"),
        {"participant__id__exact": str(lived_calendar.pk)},
    )

    assert list(zip(codes(lived_calendar), fields(response, "glance_status"), strict=True)) == (
        GLANCE
    )


def test_visit_page_and_its_actions_show_the_computed_status(admin_client, lived_calendar) -> None:
    v1 = visit(lived_calendar, "V1")

    page = admin_client.get(change_url(v1))
    action = admin_client.get(action_url(v1, "record_done"))

    assert fields(page, "glance_status") == ["Status: overdue"]
    assert dict(action.context["summary"])["Status"] == "overdue"


@pytest.fixture
def tapering(clock, import_seed, tokyo) -> Participant:
    """Tsukuba's prednisolone taper from Tuesday 3 November: week 5 starts on Tuesday
    8 December, which is today in Tokyo (yesterday still, in New York)."""
    participant = participant_for(
        import_seed("001"),
        anchors={"psl_start": D(2026, 11, 3), "day1": D(2026, 11, 17)},
        site=tokyo,
        study_id="TKY-010",
    )
    participant_enroll(participant=participant, on=D(2026, 11, 1))
    return participant


def test_taper_weeks_show_past_current_and_planned_from_the_sites_today(
    admin_client, tapering
) -> None:
    page = admin_client.get(change_url(tapering))

    milestones = list(tapering.milestones.select_related("rule").order_by("due_date", "id"))
    shown = fields(page, "step_status")
    assert [
        (m.rule.code, m.sequence, status) for m, status in zip(milestones, shown, strict=True)
    ] == [
        *[("PSL_TAPER", week, "past") for week in range(5)],
        ("PSL_TAPER", 5, "current"),
        *[("PSL_TAPER", week, "planned") for week in range(6, 13)],
        ("PRIMARY_LLDAS", 0, "planned"),
        ("SECONDARY_W24", 0, "planned"),
    ]
    # The current dose is highlighted, and only it.
    assert re.findall(r'<strong class="taper-current">(.*?)</strong>', page.content.decode()) == [
        "current"
    ]
