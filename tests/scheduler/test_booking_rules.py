"""What a booking may be: never in the past at the site, and a local time that the clocks skip
or repeat is named in the preview with the instant that will be stored.

The clock is frozen at 2026-12-07 23:30Z: Tuesday 8 December 08:30 in Tokyo, Monday
7 December 18:30 in New York.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.services import (
    CalendarError,
    participant_enroll,
    visit_add_unscheduled,
    visit_book,
    visit_book_preview,
)
from tests.factories import SiteFactory, member_of_every_trial_site, participant_for
from tests.scheduler.test_admin_views import action_url, audit_entries, visit_rows
from trials.models import ProtocolVersion, Site

D = dt.date
T = dt.time
NOW = dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db

RECORD_DONE = "To record a visit that already happened, use “Record done”."


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def niams(import_seed) -> ProtocolVersion:
    return import_seed("000")


@pytest.fixture
def sites() -> dict[str, Site]:
    return {
        "tokyo": SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo", country="JP"),
        "new_york": SiteFactory.create(code="nyu", timezone="America/New_York"),
    }


def enrolled(version: ProtocolVersion, site: Site, study_id: str, day1: dt.date) -> Participant:
    participant = participant_for(version, anchors={"day1": day1}, site=site, study_id=study_id)
    participant_enroll(participant=participant, on=day1 - dt.timedelta(days=35))
    return participant


def visit(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )


@pytest.fixture
def window_closing(niams, sites) -> dict[str, Participant]:
    """Day 1 on 6 November: V3's window is 1 to 7 December."""
    return {
        key: enrolled(niams, site, f"{key.upper()}-001", D(2026, 11, 6))
        for key, site in sites.items()
    }


# ----------------------------------------------------------------------------------------
# No booking in the past


def past_day(today: str, zone: str, day: str) -> str:
    return (
        f"V3 cannot be booked for {day}: that day is in the past at the site (today is "
        f"{today} in {zone}). {RECORD_DONE}"
    )


def past_time(day: str, at: str, now: str) -> str:
    return (
        f"V3 cannot be booked for {at} on {day}: that time has already passed at the site "
        f"(it is {now} there now). Book a later time; to record a visit that already "
        "happened, use “Record done”."
    )


@pytest.mark.parametrize(
    ("site", "day", "at", "expected"),
    [
        # Yesterday in Tokyo, though still today in New York and in UTC.
        ("tokyo", D(2026, 12, 7), T(10, 0), past_day("2026-12-08", "Asia/Tokyo", "2026-12-07")),
        # The target day, weeks ago.
        ("tokyo", D(2026, 11, 20), T(9, 0), past_day("2026-12-08", "Asia/Tokyo", "2026-11-20")),
        (
            "new_york",
            D(2026, 12, 6),
            T(9, 0),
            past_day("2026-12-07", "America/New_York", "2026-12-06"),
        ),
        # Today, at a time already past by more than the 15 minutes a walk-in needs.
        ("tokyo", D(2026, 12, 8), T(8, 0), past_time("2026-12-08", "08:00", "08:30 JST")),
        ("new_york", D(2026, 12, 7), T(9, 0), past_time("2026-12-07", "09:00", "18:30 EST")),
        ("new_york", D(2026, 12, 7), T(18, 14), past_time("2026-12-07", "18:14", "18:30 EST")),
        # Today, a moment ago (a participant who just walked in) or later: booked.
        ("new_york", D(2026, 12, 7), T(18, 15), 0),
        ("new_york", D(2026, 12, 7), T(19, 0), 0),
        # Today in Tokyo is the day after the window: a deviation, but not the past.
        ("tokyo", D(2026, 12, 8), T(9, 0), 1),
        ("tokyo", D(2026, 12, 8), T(8, 20), 1),
    ],
)
def test_booking_before_the_sites_now_is_refused_and_points_to_record_done(
    window_closing, admin_user, site, day, at, expected
) -> None:
    v3 = visit(window_closing[site], "V3")
    before = visit_rows(window_closing[site])

    outcomes: list[int | str] = []
    for attempt in (
        lambda: visit_book_preview(visit=v3, local_date=day, local_time=at).deviation_days,
        lambda: (
            visit_book(
                visit=v3, local_date=day, local_time=at, by=admin_user, reason="late"
            ).deviation_days
        ),
    ):
        try:
            outcomes.append(attempt())
        except CalendarError as refusal:
            outcomes.append(str(refusal))

    assert outcomes == [expected, expected]
    if isinstance(expected, str):
        assert visit_rows(window_closing[site]) == before


def test_booking_form_refuses_a_past_day_before_the_preview(admin_client, window_closing) -> None:
    v3 = visit(window_closing["tokyo"], "V3")
    before, entries = visit_rows(window_closing["tokyo"]), audit_entries()

    responses = [
        admin_client.post(
            action_url(v3, "book"),
            {"local_date": "2026-12-07", "local_time": "10:00", "reason": "", "version": "1"}
            | confirm,
        )
        for confirm in ({}, {"_confirm": "Confirm booking"})
    ]

    # Beside the date typed, at the preview and again at the confirmation.
    assert [(r.status_code, r.templates[0].name, r.context["form"].errors) for r in responses] == [
        (
            200,
            "admin/lifecycle/form.html",
            {"local_date": [past_day("2026-12-08", "Asia/Tokyo", "2026-12-07")]},
        )
    ] * 2
    assert (visit_rows(window_closing["tokyo"]), audit_entries()) == (before, entries)


def test_booking_preview_calls_a_booking_in_window_only_when_it_is(
    admin_client, window_closing
) -> None:
    def deviation(site: str, day: str) -> Any:
        response = admin_client.post(
            action_url(visit(window_closing[site], "V3"), "book"),
            {"local_date": day, "local_time": "20:00", "reason": "x", "version": "1"},
        )
        outcome = response.context["outcome"]
        return {label: (text, high) for label, text, high in outcome}["Deviation"]

    assert [deviation("new_york", "2026-12-07"), deviation("tokyo", "2026-12-08")] == [
        ("none: inside the window (2026-12-01 to 2026-12-07)", False),
        ("1 day(s) after the window (2026-12-01 to 2026-12-07): a protocol deviation", True),
    ]


def test_unscheduled_visit_with_a_time_in_the_past_is_refused(window_closing, admin_user) -> None:
    participant = window_closing["tokyo"]

    with pytest.raises(CalendarError) as caught:
        visit_add_unscheduled(
            participant=participant,
            local_date=D(2026, 12, 7),
            local_time=T(14, 0),
            reason="flare",
            by=admin_user,
        )
    # Without a time it is planned for that day, and can then be recorded as done.
    planned = visit_add_unscheduled(
        participant=participant, local_date=D(2026, 12, 7), reason="flare", by=admin_user
    )

    assert str(caught.value) == (
        "an unscheduled visit cannot be booked for 2026-12-07: that day is in the past at the "
        "site (today is 2026-12-08 in Asia/Tokyo). To record a visit that already happened, "
        "add it without a time, then use “Record done”."
    )
    assert (planned.status, planned.booked_start, planned.target_date) == (
        "planned",
        None,
        D(2026, 12, 7),
    )


# ----------------------------------------------------------------------------------------
# Local times the clocks skip or repeat


@pytest.fixture
def new_york_2027(niams, sites) -> dict[str, Participant]:
    """V3 (Day 1 + 28) on the New York clock-change Sundays of 2027, and on a plain one."""
    return {
        "spring": enrolled(niams, sites["new_york"], "NYC-101", D(2027, 2, 14)),  # V3 14 Mar
        "autumn": enrolled(niams, sites["new_york"], "NYC-102", D(2027, 10, 10)),  # V3 7 Nov
        "plain": enrolled(niams, sites["new_york"], "NYC-103", D(2027, 5, 2)),  # V3 30 May
    }


@pytest.mark.parametrize(
    ("case", "at", "booked_start", "expected"),
    [
        (
            "spring",
            "02:30",
            utc(2027, 3, 14, 7, 30),
            [
                ("Booked at the site", "Sun 14 Mar 2027 03:30 EDT", False),
                ("Booked in UTC", "Sun 14 Mar 2027 07:30 UTC", False),
                (
                    "Clock change",
                    "02:30 does not exist on 14 March 2027 in America/New_York (clocks go "
                    "forward); the visit will be booked for 03:30 EDT (07:30 UTC)",
                    True,
                ),
                ("Deviation", "none: inside the window (2027-03-11 to 2027-03-17)", False),
                ("Reason", "—", False),
            ],
        ),
        (
            "autumn",
            "01:30",
            utc(2027, 11, 7, 5, 30),
            [
                ("Booked at the site", "Sun 7 Nov 2027 01:30 EDT", False),
                ("Booked in UTC", "Sun 7 Nov 2027 05:30 UTC", False),
                (
                    "Clock change",
                    "01:30 happens twice on 7 November 2027 in America/New_York (clocks go "
                    "back); the first, 01:30 EDT (05:30 UTC), will be used",
                    True,
                ),
                ("Deviation", "none: inside the window (2027-11-04 to 2027-11-10)", False),
                ("Reason", "—", False),
            ],
        ),
        (
            "plain",
            "02:30",
            utc(2027, 5, 30, 6, 30),
            [
                ("Booked at the site", "Sun 30 May 2027 02:30 EDT", False),
                ("Booked in UTC", "Sun 30 May 2027 06:30 UTC", False),
                ("Deviation", "none: inside the window (2027-05-27 to 2027-06-02)", False),
                ("Reason", "—", False),
            ],
        ),
    ],
)
def test_booking_preview_names_a_skipped_or_repeated_time_and_stores_the_instant_shown(
    admin_client, new_york_2027, case, at, booked_start, expected
) -> None:
    v3 = visit(new_york_2027[case], "V3")
    posted = {"local_date": v3.target_date.isoformat(), "local_time": at, "version": "1"}

    preview = admin_client.post(action_url(v3, "book"), posted)
    confirm = admin_client.post(action_url(v3, "book"), {**posted, "_confirm": "yes"})

    assert preview.context["outcome"] == expected
    assert confirm.status_code == 302
    booked = visit(new_york_2027[case], "V3")
    assert (booked.booked_start, booked.booked_date) == (booked_start, v3.target_date)
