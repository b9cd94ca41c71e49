"""The slot finder's rules, one at a time: clock changes, hours, capacity, staff, reasons."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler.engine.slots import (
    Closure,
    Hold,
    HoldIndex,
    Hours,
    Need,
    OutOfService,
    Resource,
    SiteCalendar,
    SlotPlanError,
    SlotSearch,
    StaffShift,
    Step,
    VisitPlan,
    find_slots,
    index_holds,
    site_problems,
)
from tests.slots.sites import (
    CAVI,
    CHAIR,
    NEW_YORK,
    NIAMS_PET_VISIT,
    NIAMS_SEQUENTIAL,
    NURSE,
    NURSED_INFUSION,
    SCANNER,
    T,
    niams_site,
    nurse_shifts,
    weekdays,
)

D = dt.date
NY = ZoneInfo(NEW_YORK)
UTC = dt.UTC
SUNDAY = 6


def ny(day: dt.date, hour: int, minute: int = 0, fold: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, fold=fold), tzinfo=NY)


def one_step(minutes: int, *needs: Need, staff: tuple[Need, ...] = ()) -> VisitPlan:
    return VisitPlan("V", (Step("P", minutes, resources=needs, staff=staff),), minutes)


def on_day(
    plan: VisitPlan,
    site: SiteCalendar,
    day: dt.date,
    holds: HoldIndex | Sequence[Hold] = (),
    **options: Any,
) -> SlotSearch:
    options.setdefault("count", 50)
    return find_slots(plan, site, holds, window_start=day, window_end=day, target=day, **options)


def site_with(hours: tuple[Hours, ...], *resources: Resource, **more: Any) -> SiteCalendar:
    return SiteCalendar(NEW_YORK, hours, resources=resources, **more)


# --- clock changes ---------------------------------------------------------------------------

SPRING_FORWARD = D(2026, 3, 8)  # a Sunday: 02:00 EST -> 03:00 EDT
FALL_BACK = D(2026, 11, 1)  # a Sunday: 02:00 EDT -> 01:00 EST


def test_on_the_spring_forward_night_no_slot_starts_at_a_skipped_time() -> None:
    sleep_lab = site_with((Hours(SUNDAY, T(0), T(6)),))
    found = on_day(one_step(60), sleep_lab, SPRING_FORWARD, step_minutes=30)
    # 00:00 EST to 06:00 EDT is 5 real hours: starts every 30 real minutes, the last one
    # hour before closing; after 01:30 EST comes 03:00 EDT.
    assert [slot.start.strftime("%H:%M %Z") for slot in found.slots] == [
        "00:00 EST",
        "00:30 EST",
        "01:00 EST",
        "01:30 EST",
        "03:00 EDT",
        "03:30 EDT",
        "04:00 EDT",
        "04:30 EDT",
        "05:00 EDT",
    ]
    assert found.slots[4].start_utc == dt.datetime(2026, 3, 8, 7, tzinfo=UTC)


def test_an_eight_to_four_day_is_eight_real_hours_on_the_spring_forward_day() -> None:
    site = site_with((Hours(SUNDAY, T(8), T(16)),))
    found = on_day(one_step(60), site, SPRING_FORWARD, step_minutes=60)
    assert [slot.start for slot in found.slots] == [ny(SPRING_FORWARD, h) for h in range(8, 16)]
    assert [slot.start_utc.hour for slot in found.slots] == list(range(12, 20))


def test_on_the_fall_back_night_the_repeated_hour_gives_two_slots() -> None:
    site = site_with((Hours(SUNDAY, T(0), T(4)),))
    found = on_day(one_step(60), site, FALL_BACK, step_minutes=60)
    assert [slot.start_utc.hour for slot in found.slots] == [4, 5, 6, 7, 8]
    assert [slot.start.strftime("%H:%M %Z") for slot in found.slots] == [
        "00:00 EDT",
        "01:00 EDT",
        "01:00 EST",
        "02:00 EST",
        "03:00 EST",
    ]
    assert [slot.end_utc - slot.start_utc for slot in found.slots] == [dt.timedelta(hours=1)] * 5


# --- hours -----------------------------------------------------------------------------------

MONDAY = D(2026, 11, 23)


def test_a_resource_with_narrower_hours_than_the_clinic_limits_the_starts() -> None:
    scanner = Resource(SCANNER, "PET/CT 1", hours=weekdays(T(10), T(12)))
    site = site_with(weekdays(T(7), T(18)), scanner)
    found = on_day(one_step(110, Need(SCANNER)), site, MONDAY)
    assert [slot.start for slot in found.slots] == [ny(MONDAY, 10)]


def test_a_visit_never_spans_the_lunch_break() -> None:
    hours = (Hours(0, T(8), T(12)), Hours(0, T(13), T(17)))
    found = on_day(one_step(180), site_with(hours), MONDAY, step_minutes=60)
    assert [slot.start for slot in found.slots] == [
        ny(MONDAY, 8),
        ny(MONDAY, 9),
        ny(MONDAY, 13),
        ny(MONDAY, 14),
    ]


def test_an_out_of_service_period_is_avoided_and_named_when_it_blocks_the_day() -> None:
    maintenance = OutOfService(ny(MONDAY, 0), ny(MONDAY, 12), "annual maintenance")
    scanner = Resource(SCANNER, "PET/CT 1", out_of_service=(maintenance,))
    site = site_with(weekdays(T(8), T(16)), scanner)
    found = on_day(one_step(110, Need(SCANNER)), site, MONDAY, count=1)
    assert found.slots[0].start == ny(MONDAY, 12)

    whole_day = OutOfService(ny(MONDAY, 0), ny(MONDAY + dt.timedelta(days=1), 0), "tube swap")
    site = site_with(
        weekdays(T(8), T(16)), Resource(SCANNER, "PET/CT 1", out_of_service=(whole_day,))
    )
    found = on_day(one_step(110, Need(SCANNER)), site, MONDAY, count=1)
    assert found.slots == ()
    assert found.reason == (
        "window 2026-11-23: PET/CT scanner unavailable at the needed times on 23 Nov "
        "(out of service: tube swap)"
    )
    assert found.deviations[0].start == ny(MONDAY + dt.timedelta(days=1), 8)


def test_opening_hours_too_short_for_the_visit_are_a_reason() -> None:
    saturday = D(2026, 11, 28)
    site = site_with((*weekdays(T(8), T(16)), Hours(5, T(9), T(12))))
    found = on_day(one_step(235), site, saturday, count=1)
    assert found.reason == (
        "window 2026-11-28: opening hours too short for the 235-minute visit on 28 Nov"
    )
    assert [(slot.start, slot.days_out) for slot in found.deviations] == [
        (ny(D(2026, 11, 27), 8), -1)
    ]


# --- capacity --------------------------------------------------------------------------------


def chairs(n: int) -> tuple[Resource, ...]:
    return tuple(Resource(CHAIR, f"Chair {k}") for k in range(1, n + 1))


def test_four_chairs_hold_four_visits_at_once_and_the_fifth_waits() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(4))
    busy = [Hold(f"Chair {k}", ny(MONDAY, 8), ny(MONDAY, 9)) for k in (1, 2, 3)]
    found = on_day(one_step(60, Need(CHAIR)), site, MONDAY, busy, count=1)
    assert [(h.resource, h.start) for h in found.slots[0].holds] == [("Chair 4", ny(MONDAY, 8))]

    busy.append(Hold("Chair 4", ny(MONDAY, 8), ny(MONDAY, 9)))
    found = on_day(one_step(60, Need(CHAIR)), site, MONDAY, busy, count=1)
    assert found.slots[0].start == ny(MONDAY, 9)
    assert found.slots[0].holds[0].resource == "Chair 1"


def test_one_resource_of_capacity_four_counts_like_four_units() -> None:
    bay = Resource(CHAIR, "Infusion bay", capacity=4)
    site = site_with(weekdays(T(8), T(16)), bay)
    busy = [Hold("Infusion bay", ny(MONDAY, 8), ny(MONDAY, 9), count=3)]
    found = on_day(one_step(60, Need(CHAIR, 2)), site, MONDAY, busy, count=1)
    assert found.slots[0].start == ny(MONDAY, 9)
    assert [(h.resource, h.count) for h in found.slots[0].holds] == [("Infusion bay", 2)]


def test_a_need_for_two_spreads_over_units_and_parallel_steps_never_share_one() -> None:
    plan = VisitPlan(
        "V",
        (
            Step("A", 60, resources=(Need(CHAIR),)),
            Step("B", 60, resources=(Need(CHAIR),), relation="with"),
        ),
        60,
    )
    found = on_day(plan, site_with(weekdays(T(8), T(16)), *chairs(1)), MONDAY)
    assert found.slots == ()
    assert found.reason == (
        "window 2026-11-23: infusion chair unavailable at the needed times on 23 Nov; "
        "nothing fits within 14 days either side of it either"
    )
    found = on_day(plan, site_with(weekdays(T(8), T(16)), *chairs(2)), MONDAY, count=1)
    assert [(h.procedure, h.resource) for h in found.slots[0].holds] == [
        ("A", "Chair 1"),
        ("B", "Chair 2"),
    ]


def test_a_participant_keeps_the_chair_of_their_earlier_step() -> None:
    plan = VisitPlan(
        "V",
        (
            Step("INFUSION", 30, resources=(Need(CHAIR),)),
            Step("OBSERVATION", 60, resources=(Need(CHAIR),)),
        ),
        90,
    )
    busy = [Hold("Chair 1", ny(MONDAY, 8), ny(MONDAY, 8, 30))]
    found = on_day(plan, site_with(weekdays(T(8), T(16)), *chairs(2)), MONDAY, busy, count=1)
    assert [(h.procedure, h.resource) for h in found.slots[0].holds] == [
        ("INFUSION", "Chair 2"),
        ("OBSERVATION", "Chair 2"),
    ]


def test_one_nurse_per_two_chairs_lets_two_of_four_chairs_run_at_once() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(4), staff=nurse_shifts(per_nurse=2, nurses=1))
    index = index_holds(())
    starts = []
    for _ in range(3):
        (slot,) = on_day(NURSED_INFUSION, site, MONDAY, index, count=1).slots
        index = index.with_holds(slot.holds)
        starts.append((slot.start, [(h.resource, h.staff) for h in slot.holds]))
    assert starts == [
        (ny(MONDAY, 8), [("Chair 1", False), (NURSE, True)]),
        (ny(MONDAY, 8), [("Chair 2", False), (NURSE, True)]),
        (ny(MONDAY, 9), [("Chair 1", False), (NURSE, True)]),
    ]


def test_staff_shifts_add_up_over_the_day_and_a_booked_nurse_is_a_reason() -> None:
    shifts = (
        StaffShift(NURSE, 0, T(8), T(12), count=1),
        StaffShift(NURSE, 0, T(10), T(16), count=1),
    )
    site = site_with(weekdays(T(8), T(16)), *chairs(4), staff=shifts)
    busy = [Hold(NURSE, ny(MONDAY, 8), ny(MONDAY, 16), staff=True)]
    found = on_day(NURSED_INFUSION, site, MONDAY, busy)
    # One nurse is booked all day; the second is there 10:00-16:00 only.
    assert [slot.start for slot in found.slots][:2] == [ny(MONDAY, 10), ny(MONDAY, 10, 15)]
    busy.append(Hold(NURSE, ny(MONDAY, 10), ny(MONDAY, 16), staff=True))
    found = on_day(NURSED_INFUSION, site, MONDAY, busy, horizon_days=0)
    assert found.reason == (
        "window 2026-11-23: no infusion nurse free on 23 Nov; nothing fits within 0 days "
        "either side of it either"
    )


def test_holds_are_widened_to_whole_minutes() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(1))
    busy = [Hold("Chair 1", ny(MONDAY, 8), ny(MONDAY, 9) + dt.timedelta(seconds=30))]
    found = on_day(one_step(60, Need(CHAIR)), site, MONDAY, busy, count=1, step_minutes=1)
    assert found.slots[0].start == ny(MONDAY, 9, 1)


# --- preference, limits and reasons ------------------------------------------------------------


def test_target_first_then_nearest_days_earlier_first_earliest_time_first() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(1))
    found = find_slots(
        one_step(60, Need(CHAIR)),
        site,
        window_start=D(2026, 11, 16),
        window_end=D(2026, 11, 20),
        target=D(2026, 11, 18),
        count=6,
        per_day=2,
    )
    assert [slot.start for slot in found.slots] == [
        ny(D(2026, 11, 18), 8),
        ny(D(2026, 11, 18), 8, 15),
        ny(D(2026, 11, 17), 8),
        ny(D(2026, 11, 17), 8, 15),
        ny(D(2026, 11, 19), 8),
        ny(D(2026, 11, 19), 8, 15),
    ]
    assert {slot.days_out for slot in found.slots} == {0}


def test_nothing_starts_before_not_before_and_a_past_day_is_a_reason() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(1))
    now = ny(MONDAY, 15, 10)
    found = on_day(one_step(60, Need(CHAIR)), site, MONDAY, not_before=now, count=1)
    assert found.reason == "window 2026-11-23: too late to book on 23 Nov"
    assert found.deviations[0].start == ny(D(2026, 11, 24), 8)
    found = on_day(one_step(30, Need(CHAIR)), site, MONDAY, not_before=now, count=2)
    assert [slot.start for slot in found.slots] == [ny(MONDAY, 15, 15), ny(MONDAY, 15, 30)]


def test_a_kind_the_site_does_not_have_is_the_reason() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(4))
    found = on_day(NIAMS_PET_VISIT, site, MONDAY)
    assert found.slots == () and found.deviations == ()
    assert found.reason == (
        "window 2026-11-23: the site has no PET/CT scanner; the site has no CAVI device"
    )


def test_closures_with_one_reason_are_grouped_and_weekends_named() -> None:
    winter = tuple(Closure(D(2026, 12, day), "Winter break") for day in (28, 29, 30, 31))
    site = site_with(weekdays(T(8), T(16)), *chairs(1), closures=winter)
    found = find_slots(
        one_step(60, Need(CHAIR)),
        site,
        window_start=D(2026, 12, 26),
        window_end=D(2026, 12, 31),
        target=D(2026, 12, 29),
        count=1,
    )
    assert found.reason == (
        "window 2026-12-26 to 2026-12-31: closed on 26 and 27 Dec (weekend); "
        "closed on 28, 29, 30 and 31 Dec (Winter break)"
    )
    assert [(s.day, s.days_out) for s in found.deviations] == [(D(2026, 12, 25), -1)]


def test_full_days_across_a_month_end_read_naturally() -> None:
    busy = [Hold("PET/CT 1", ny(D(2026, 11, 30), 8), ny(D(2026, 11, 30), 16))] + [
        Hold("PET/CT 1", ny(D(2026, 12, d), 8), ny(D(2026, 12, d), 16)) for d in (1, 2)
    ]
    found = find_slots(
        NIAMS_PET_VISIT,
        niams_site(),
        busy,
        window_start=D(2026, 11, 30),
        window_end=D(2026, 12, 2),
        target=D(2026, 12, 1),
    )
    assert (
        found.reason
        == "window 2026-11-30 to 2026-12-02: PET/CT scanner full on 30 Nov, 1 and 2 Dec"
    )


# --- inputs ----------------------------------------------------------------------------------


def test_an_invalid_plan_or_window_or_naive_hold_is_refused() -> None:
    site = niams_site()
    with pytest.raises(SlotPlanError):
        on_day(NIAMS_SEQUENTIAL, site, MONDAY)
    with pytest.raises(ValueError, match="before it starts"):
        find_slots(
            NIAMS_PET_VISIT, site, window_start=MONDAY, window_end=D(2026, 11, 1), target=MONDAY
        )
    naive = Hold("PET/CT 1", dt.datetime(2026, 11, 23, 8), dt.datetime(2026, 11, 23, 9))
    with pytest.raises(ValueError, match="naive"):
        on_day(NIAMS_PET_VISIT, site, MONDAY, [naive])


def test_adding_holds_to_an_index_leaves_the_original_as_it_was() -> None:
    first = index_holds([Hold("CAVI 1", ny(MONDAY, 7, 30), ny(MONDAY, 9))])
    second = first.with_holds([Hold("CAVI 1", ny(MONDAY, 9), ny(MONDAY, 10))])
    key = (False, "CAVI 1")
    assert len(first.by_key[key].spans) == 1
    assert len(second.by_key[key].spans) == 2
    plan = one_step(20, Need(CAVI))
    assert on_day(plan, niams_site(), MONDAY, first, count=1).slots[0].start == ny(MONDAY, 9)
    assert on_day(plan, niams_site(), MONDAY, second, count=1).slots[0].start == ny(MONDAY, 10)


def test_not_before_with_seconds_rounds_up_to_the_next_minute() -> None:
    site = site_with(weekdays(T(8), T(16)), *chairs(1))
    now = ny(MONDAY, 10) + dt.timedelta(seconds=1)
    found = on_day(one_step(60, Need(CHAIR)), site, MONDAY, not_before=now, step_minutes=1)
    assert found.slots[0].start == ny(MONDAY, 10, 1)


def test_a_site_calendar_with_mistakes_says_where() -> None:
    site = SiteCalendar(
        "Mars/Olympus_Mons",
        (Hours(7, T(8), T(16)), Hours(0, T(16), T(8))),
        resources=(
            Resource(CHAIR, "Chair 1", capacity=0),
            Resource(
                CHAIR, "Chair 1", out_of_service=(OutOfService(ny(MONDAY, 9), ny(MONDAY, 8)),)
            ),
        ),
        staff=(StaffShift(NURSE, 0, T(8), T(12), count=0),),
    )
    assert site_problems(site) == [
        "timezone 'Mars/Olympus_Mons' is not an IANA zone",
        "opening hours: weekday 7 is not 0 (Monday) to 6 (Sunday)",
        "opening hours: 16:00-08:00 must end after it starts",
        "resource Chair 1 (infusion chair): capacity 0; at least 1",
        "resource Chair 1 (infusion chair): another resource has the same name",
        "resource Chair 1 (infusion chair): an out-of-service period must end after it starts",
        "staff infusion nurse: 0 on duty; at least 1",
    ]
    assert site_problems(niams_site()) == []
