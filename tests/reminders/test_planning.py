"""When reminders go out: local wall time to UTC, quiet hours, nothing in the past. Pure."""

from __future__ import annotations

import datetime as dt

import pytest

from scheduler.engine.localtime import local_to_utc
from scheduler.engine.reminders import (
    DueReminder,
    MilestoneFacts,
    Recipients,
    ReminderRuleSpec,
    VisitFacts,
    plan_reminders,
)

UTC = dt.UTC
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=UTC)


def recipients(zone: str = "America/New_York", **fields) -> Recipients:
    return Recipients(
        participant_zone=zone,
        site_zone=zone,
        participant_channels=frozenset({"email", "sms"}),
        **fields,
    )


def booked(day: dt.date, zone: str, at: dt.time = dt.time(10), **fields) -> VisitFacts:
    return VisitFacts(
        target_key="visit:1",
        visit_code="V4",
        status="booked",
        window_start=day,
        window_end=day,
        booked_start=local_to_utc(day, at, zone),
        **fields,
    )


@pytest.mark.parametrize(
    ("zone", "reminder_day", "expected"),
    [
        # The day after the US spring change (2026-03-08): 09:00 EDT.
        ("America/New_York", dt.date(2026, 3, 9), dt.datetime(2026, 3, 9, 13, 0, tzinfo=UTC)),
        ("America/New_York", dt.date(2026, 3, 7), dt.datetime(2026, 3, 7, 14, 0, tzinfo=UTC)),
        # The day after the EU spring change (2026-03-29): 09:00 CEST; the day before: CET.
        ("Europe/Berlin", dt.date(2026, 3, 30), dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC)),
        ("Europe/Berlin", dt.date(2026, 3, 28), dt.datetime(2026, 3, 28, 8, 0, tzinfo=UTC)),
        # No clock changes: Tokyo +09:00, Kolkata +05:30 all year.
        ("Asia/Tokyo", dt.date(2026, 3, 9), dt.datetime(2026, 3, 9, 0, 0, tzinfo=UTC)),
        ("Asia/Kolkata", dt.date(2026, 3, 9), dt.datetime(2026, 3, 9, 3, 30, tzinfo=UTC)),
        ("Asia/Kolkata", dt.date(2026, 10, 26), dt.datetime(2026, 10, 26, 3, 30, tzinfo=UTC)),
    ],
)
def test_09_00_local_reminders_land_at_the_right_utc_instant(zone, reminder_day, expected) -> None:
    rule = ReminderRuleSpec(
        code="P1D", event="before_visit", at=dt.time(9), days=1, channels=("email",)
    )

    due = plan_reminders(
        [rule], [booked(reminder_day + dt.timedelta(days=1), zone)], [], recipients(zone), LONG_AGO
    )

    assert due == [DueReminder(expected, "visit:1", "P1D", "email", "participant", "before_visit")]


def test_times_that_do_not_exist_or_happen_twice_follow_the_stated_rule() -> None:
    # 02:30 does not exist on 2026-03-08 in New York; 01:30 happens twice on 2026-11-01.
    assert local_to_utc(dt.date(2026, 3, 8), dt.time(2, 30), "America/New_York") == dt.datetime(
        2026, 3, 8, 7, 30, tzinfo=UTC
    )
    assert local_to_utc(dt.date(2026, 11, 1), dt.time(1, 30), "America/New_York") == dt.datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )


def test_reminders_in_quiet_hours_go_out_before_the_quiet_hours_begin() -> None:
    rule = ReminderRuleSpec(
        code="FAST",
        event="evening_before_procedure",
        at=dt.time(22),
        channels=("sms",),
        procedures=frozenset({"FDGPET"}),
    )
    early = ReminderRuleSpec(
        code="EARLY", event="before_visit", at=dt.time(6), days=1, channels=("sms",)
    )
    visit = booked(dt.date(2026, 5, 12), "Europe/Berlin", procedures=frozenset({"FDGPET"}))
    quiet = recipients("Europe/Berlin", quiet_start=dt.time(21), quiet_end=dt.time(8))

    due = plan_reminders([rule, early], [visit], [], quiet, LONG_AGO)

    # 22:00 and 06:00 are both quiet: each goes at 20:59 the evening before (CEST, +02:00).
    assert [(d.rule_code, d.due_at) for d in due] == [
        ("EARLY", dt.datetime(2026, 5, 10, 18, 59, tzinfo=UTC)),
        ("FAST", dt.datetime(2026, 5, 11, 18, 59, tzinfo=UTC)),
    ]


def test_nothing_is_planned_in_the_past() -> None:
    rule = ReminderRuleSpec(
        code="P7D", event="before_visit", at=dt.time(9), days=7, channels=("email",)
    )
    visit = booked(dt.date(2026, 5, 12), "Asia/Tokyo")

    before = plan_reminders(
        [rule], [visit], [], recipients("Asia/Tokyo"), dt.datetime(2026, 5, 4, 23, 59, tzinfo=UTC)
    )
    after = plan_reminders(
        [rule], [visit], [], recipients("Asia/Tokyo"), dt.datetime(2026, 5, 5, 0, 0, tzinfo=UTC)
    )

    assert [d.due_at for d in before] == [dt.datetime(2026, 5, 5, 0, 0, tzinfo=UTC)]
    assert after == []


def test_coordinator_reminders_follow_the_site_zone_and_unbooked_windows() -> None:
    rules = [
        ReminderRuleSpec(
            code="C_OPEN", event="window_opens_unbooked", at=dt.time(8), channels=("in_app",)
        ),
        ReminderRuleSpec(
            code="C_CLOSE",
            event="window_closing_unbooked",
            at=dt.time(8),
            days=2,
            channels=("in_app", "email", "sms"),
        ),
        ReminderRuleSpec(code="C_OVERDUE", event="overdue", at=dt.time(8), channels=("in_app",)),
    ]
    planned = VisitFacts("visit:7", "V6", "planned", dt.date(2026, 6, 1), dt.date(2026, 6, 7))
    done = VisitFacts("visit:8", "V5", "done", dt.date(2026, 5, 1), dt.date(2026, 5, 7))
    site = Recipients(
        participant_zone="Asia/Tokyo",
        site_zone="America/New_York",
        participant_channels=frozenset(),
    )

    due = plan_reminders(rules, [planned, done], [], site, LONG_AGO)

    assert [(d.rule_code, d.channel, d.due_at, d.audience) for d in due] == [
        ("C_OPEN", "in_app", dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC), "coordinator"),
        ("C_CLOSE", "email", dt.datetime(2026, 6, 5, 12, 0, tzinfo=UTC), "coordinator"),
        ("C_CLOSE", "in_app", dt.datetime(2026, 6, 5, 12, 0, tzinfo=UTC), "coordinator"),
        ("C_OVERDUE", "in_app", dt.datetime(2026, 6, 8, 12, 0, tzinfo=UTC), "coordinator"),
    ]


def test_taper_reminders_only_on_days_a_new_dose_starts() -> None:
    rule = ReminderRuleSpec(code="TAPER", event="taper_step", at=dt.time(8), channels=("email",))
    steps = [
        MilestoneFacts("milestone:1", dt.date(2026, 3, 2), starts_new_dose=True),
        MilestoneFacts("milestone:2", dt.date(2026, 3, 9), starts_new_dose=False),
        MilestoneFacts("milestone:3", dt.date(2026, 3, 16), starts_new_dose=True),
    ]

    due = plan_reminders([rule], [], steps, recipients("Asia/Tokyo"), LONG_AGO)

    assert [(d.target_key, d.due_at) for d in due] == [
        ("milestone:1", dt.datetime(2026, 3, 1, 23, 0, tzinfo=UTC)),
        ("milestone:3", dt.datetime(2026, 3, 15, 23, 0, tzinfo=UTC)),
    ]


def test_opted_out_or_unreachable_participants_get_no_participant_reminders() -> None:
    rule = ReminderRuleSpec(
        code="P1D", event="before_visit", at=dt.time(9), days=1, channels=("email", "sms")
    )
    visit = booked(dt.date(2026, 5, 12), "Asia/Tokyo")
    sms_only = Recipients("Asia/Tokyo", "Asia/Tokyo", participant_channels=frozenset({"sms"}))
    nobody = Recipients("Asia/Tokyo", "Asia/Tokyo", participant_channels=frozenset())

    assert [d.channel for d in plan_reminders([rule], [visit], [], sms_only, LONG_AGO)] == ["sms"]
    assert plan_reminders([rule], [visit], [], nobody, LONG_AGO) == []
