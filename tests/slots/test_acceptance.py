"""Issue 11's acceptance cases on the pure slot finder (no database)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import holidays

from scheduler.engine.slots import Hold, find_slots, index_holds
from scheduler.sitecalendar import closures_between
from tests.slots.sites import (
    CAVI,
    CHAIR,
    NEW_YORK,
    NIAMS_PET_VISIT,
    SCANNER,
    TOKYO,
    TSUKUBA_INFUSION,
    niams_site,
    tsukuba_site,
)

D = dt.date
NY = ZoneInfo(NEW_YORK)
JST = ZoneInfo(TOKYO)


def ny(day: int, hour: int, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=NY)


def test_twelve_pet_visits_with_overlapping_windows_get_twelve_separate_scanner_holds() -> None:
    site = niams_site()
    # Twelve participants' week-0 targets around Thanksgiving, each window +/- 3 days.
    targets = [D(2026, 11, day) for day in (23, 24, 24, 25, 25, 25, 26, 26, 26, 27, 27, 30)]
    index = index_holds(())
    booked: list[tuple[dt.date, dt.datetime, Hold]] = []
    for target in targets:
        found = find_slots(
            NIAMS_PET_VISIT,
            site,
            index,
            window_start=target - dt.timedelta(days=3),
            window_end=target + dt.timedelta(days=3),
            target=target,
            count=1,
        )
        assert found.reason == ""
        (slot,) = found.slots
        index = index.with_holds(slot.holds)
        (scan,) = [hold for hold in slot.holds if hold.kind == SCANNER]
        booked.append((target, slot.start, scan))

    us_federal = holidays.country_holidays("US", years=2026)
    for target, start, scan in booked:
        assert abs((start.date() - target).days) <= 3
        assert start.weekday() < 5 and start.date() not in us_federal
        local = (scan.start.astimezone(NY).time(), scan.end.astimezone(NY).time())
        assert dt.time(8) <= local[0] and local[1] <= dt.time(16)
    scans = sorted((scan.start, scan.end) for _, _, scan in booked)
    assert all(end <= following for (_, end), (following, _) in zip(scans, scans[1:], strict=False))
    # Three scans a day fit the scanner's 08:00-16:00 (110 minutes each, the visit's start on
    # the 15-minute grid from 07:30); Thanksgiving (26 Nov) and the weekend are skipped.
    assert [start for _, start, _ in booked] == [
        ny(23, 7, 45),
        ny(24, 7, 45),
        ny(24, 9, 45),
        ny(25, 7, 45),
        ny(25, 9, 45),
        ny(25, 11, 45),
        ny(27, 7, 45),  # target 26 (closed): 25 is full, 27 is as near
        ny(27, 9, 45),
        ny(27, 11, 45),
        ny(24, 11, 45),  # target 27 (full): 26 closed, 28-29 weekend, 25 full, 24 has room
        ny(30, 7, 45),  # target 27: 24 is now full too, 30 Nov is 3 days after
        ny(30, 9, 45),
    ]


def test_a_target_on_a_japanese_public_holiday_is_proposed_on_the_nearest_open_day() -> None:
    # 2026-11-23 (Mon) is 勤労感謝の日; 22 Nov is a Sunday, so 24 Nov is nearest.
    found = find_slots(
        TSUKUBA_INFUSION,
        tsukuba_site(),
        window_start=D(2026, 11, 20),
        window_end=D(2026, 11, 26),
        target=D(2026, 11, 23),
        count=3,
        per_day=1,
    )
    assert [(slot.start, slot.days_out) for slot in found.slots] == [
        (dt.datetime(2026, 11, 24, 8, 30, tzinfo=JST), 0),
        (dt.datetime(2026, 11, 25, 8, 30, tzinfo=JST), 0),
        (dt.datetime(2026, 11, 20, 8, 30, tzinfo=JST), 0),
    ]
    first = found.slots[0]
    assert first.start_utc == dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.UTC)
    assert [(h.resource, h.kind, h.procedure) for h in first.holds] == [
        ("チェア1", CHAIR, "INFUSION")
    ]


def test_a_window_that_is_only_the_holiday_says_so_in_japanese_and_offers_deviations() -> None:
    in_japanese = closures_between("JP", D(2026, 11, 1), D(2026, 11, 30), language="ja")
    site = replace(tsukuba_site(), closures=in_japanese)
    found = find_slots(
        TSUKUBA_INFUSION,
        site,
        window_start=D(2026, 11, 23),
        window_end=D(2026, 11, 23),
        target=D(2026, 11, 23),
        count=2,
        per_day=1,
    )
    assert found.slots == ()
    assert found.reason == "window 2026-11-23: closed on 23 Nov (勤労感謝の日)"
    assert [(slot.day, slot.days_out, slot.deviation) for slot in found.deviations] == [
        (D(2026, 11, 24), 1, True),
        (D(2026, 11, 25), 2, True),
    ]


def full_scanner_days(*days: int) -> list[Hold]:
    return [Hold("PET/CT 1", ny(day, 8), ny(day, 16)) for day in days]


def test_a_window_without_capacity_gives_the_reason_and_the_nearest_deviations() -> None:
    found = find_slots(
        NIAMS_PET_VISIT,
        niams_site(),
        full_scanner_days(25, 27),
        window_start=D(2026, 11, 25),
        window_end=D(2026, 11, 27),
        target=D(2026, 11, 26),
        count=3,
        per_day=1,
    )
    assert found.slots == ()
    assert found.reason == (
        "window 2026-11-25 to 2026-11-27: closed on 26 Nov (Thanksgiving Day); "
        "PET/CT scanner full on 25 and 27 Nov"
    )
    assert [(o.kind, o.subject, o.days) for o in found.obstacles] == [
        ("closed", "Thanksgiving Day", (D(2026, 11, 26),)),
        ("full", SCANNER, (D(2026, 11, 25), D(2026, 11, 27))),
    ]
    # 28 and 29 Nov are a weekend, so after 24 (-1) and 23 (-2) comes 30 Nov (+3).
    assert [(slot.start, slot.days_out) for slot in found.deviations] == [
        (ny(24, 7, 45), -1),
        (ny(23, 7, 45), -2),
        (ny(30, 7, 45), 3),
    ]
    assert all(slot.deviation for slot in found.deviations)


def test_nothing_anywhere_says_so_too() -> None:
    found = find_slots(
        NIAMS_PET_VISIT,
        niams_site(),
        full_scanner_days(*range(18, 31)),
        window_start=D(2026, 11, 25),
        window_end=D(2026, 11, 27),
        target=D(2026, 11, 26),
        horizon_days=3,
    )
    assert found.slots == () and found.deviations == ()
    assert found.reason == (
        "window 2026-11-25 to 2026-11-27: closed on 26 Nov (Thanksgiving Day); "
        "PET/CT scanner full on 25 and 27 Nov; nothing fits within 3 days either side of it "
        "either"
    )


def test_the_procedures_keep_the_plans_order_when_a_device_is_busy() -> None:
    # The CAVI device is taken 09:30-10:30: the visit moves later as a whole rather than doing
    # CAVI after the infusion or the scan before the fasting blood draw.
    busy = [Hold("CAVI 1", ny(24, 9, 30), ny(24, 10, 30))]
    found = find_slots(
        NIAMS_PET_VISIT,
        niams_site(),
        busy,
        window_start=D(2026, 11, 24),
        window_end=D(2026, 11, 24),
        target=D(2026, 11, 24),
        count=1,
    )
    (slot,) = found.slots
    assert slot.start == ny(24, 8, 30)
    assert [
        (h.procedure, h.kind, h.start.astimezone(NY), h.end.astimezone(NY)) for h in slot.holds
    ] == [
        ("FDGPET", SCANNER, ny(24, 8, 45), ny(24, 10, 35)),
        ("CAVI", CAVI, ny(24, 10, 35), ny(24, 10, 55)),
        ("INFUSION", CHAIR, ny(24, 10, 55), ny(24, 12, 25)),
    ]
    assert slot.end == ny(24, 12, 25)
