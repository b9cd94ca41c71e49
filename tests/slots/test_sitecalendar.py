"""Public holidays from the `holidays` package as site closures (Japan, US federal)."""

from __future__ import annotations

import datetime as dt

from scheduler.engine.slots import Closure
from scheduler.sitecalendar import closures_between, public_holidays

D = dt.date


def test_us_federal_holidays_2026_with_the_observed_independence_day() -> None:
    assert public_holidays("US", [2026]) == (
        Closure(D(2026, 1, 1), "New Year's Day"),
        Closure(D(2026, 1, 19), "Martin Luther King Jr. Day"),
        Closure(D(2026, 2, 16), "Washington's Birthday"),
        Closure(D(2026, 5, 25), "Memorial Day"),
        Closure(D(2026, 6, 19), "Juneteenth National Independence Day"),
        Closure(D(2026, 7, 3), "Independence Day (observed)"),
        Closure(D(2026, 7, 4), "Independence Day"),
        Closure(D(2026, 9, 7), "Labor Day"),
        Closure(D(2026, 10, 12), "Columbus Day"),
        Closure(D(2026, 11, 11), "Veterans Day"),
        Closure(D(2026, 11, 26), "Thanksgiving Day"),
        Closure(D(2026, 12, 25), "Christmas Day"),
    )


def test_japanese_holidays_in_november_in_english_and_in_japanese() -> None:
    first, last = D(2026, 11, 1), D(2026, 11, 30)
    assert closures_between("JP", first, last) == (
        Closure(D(2026, 11, 3), "Culture Day"),
        Closure(D(2026, 11, 23), "Labor Thanksgiving Day"),
    )
    assert closures_between("jp", first, last, language="ja") == (
        Closure(D(2026, 11, 3), "文化の日"),
        Closure(D(2026, 11, 23), "勤労感謝の日"),
    )


def test_golden_week_2026_includes_the_substitute_holiday() -> None:
    assert [c.day for c in closures_between("JP", D(2026, 4, 29), D(2026, 5, 6))] == [
        D(2026, 4, 29),
        D(2026, 5, 3),
        D(2026, 5, 4),
        D(2026, 5, 5),
        D(2026, 5, 6),  # 振替休日: Constitution Day fell on a Sunday
    ]


def test_a_range_across_new_year_takes_both_years() -> None:
    assert closures_between("US", D(2026, 12, 20), D(2027, 1, 5)) == (
        Closure(D(2026, 12, 25), "Christmas Day"),
        Closure(D(2027, 1, 1), "New Year's Day"),
    )


def test_a_subdivision_adds_its_own_holidays() -> None:
    federal = {c.day for c in public_holidays("US", [2026])}
    maryland = {c.day for c in public_holidays("US", [2026], subdivision="MD")}
    assert federal < maryland
    assert D(2026, 11, 27) in maryland - federal  # American Indian Heritage Day
