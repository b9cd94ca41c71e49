"""Local wall times read at clock changes: which instants they could mean and which is used.

Pure: no database, no clock.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.engine.localtime import LocalTimeReading, local_to_utc, read_local_time
from tests.conftest import bounded

D = dt.date
T = dt.time


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        # An ordinary morning: one instant.
        (
            "Asia/Tokyo",
            D(2026, 12, 8),
            T(9, 30),
            LocalTimeReading("normal", utc(2026, 12, 8, 0, 30), (utc(2026, 12, 8, 0, 30),)),
        ),
        # New York springs forward at 02:00 on 2027-03-14: 02:30 is skipped. Read with the
        # offset before the jump (EST) it is 07:30Z, which the clock shows as 03:30 EDT.
        (
            "America/New_York",
            D(2027, 3, 14),
            T(2, 30),
            LocalTimeReading(
                "nonexistent",
                utc(2027, 3, 14, 7, 30),
                (utc(2027, 3, 14, 6, 30), utc(2027, 3, 14, 7, 30)),
            ),
        ),
        # New York falls back at 02:00 on 2027-11-07: 01:30 happens twice; the first is used.
        (
            "America/New_York",
            D(2027, 11, 7),
            T(1, 30),
            LocalTimeReading(
                "ambiguous",
                utc(2027, 11, 7, 5, 30),
                (utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 6, 30)),
            ),
        ),
        # Lord Howe moves half an hour (02:00 -> 02:30 on 2026-10-04, +10:30 -> +11:00).
        (
            "Australia/Lord_Howe",
            D(2026, 10, 4),
            T(2, 15),
            LocalTimeReading(
                "nonexistent",
                utc(2026, 10, 3, 15, 45),
                (utc(2026, 10, 3, 15, 15), utc(2026, 10, 3, 15, 45)),
            ),
        ),
        # ... and back (02:00 -> 01:30 on 2027-04-04): 01:45 happens twice, 30 minutes apart.
        (
            "Australia/Lord_Howe",
            D(2027, 4, 4),
            T(1, 45),
            LocalTimeReading(
                "ambiguous",
                utc(2027, 4, 3, 14, 45),
                (utc(2027, 4, 3, 14, 45), utc(2027, 4, 3, 15, 15)),
            ),
        ),
        # Southern hemisphere: Santiago falls back at midnight (2027-04-04 00:00 -> 2027-04-03
        # 23:00), so 23:30 on the 3rd happens twice.
        (
            "America/Santiago",
            D(2027, 4, 3),
            T(23, 30),
            LocalTimeReading(
                "ambiguous",
                utc(2027, 4, 4, 2, 30),
                (utc(2027, 4, 4, 2, 30), utc(2027, 4, 4, 3, 30)),
            ),
        ),
    ],
)
def test_read_local_time_names_the_case_and_every_instant_it_could_mean(
    zone, day, at, expected
) -> None:
    assert read_local_time(day, at, zone) == expected


ZONES = sorted(zoneinfo.available_timezones())
# Zones whose clock changes are hard: half-hour and two-hour shifts, southern hemisphere,
# changes at midnight, negative DST (Dublin), DST abolished recently (Tehran 2022, Apia 2021),
# Ramadan suspensions (Casablanca), offsets that are not whole hours.
HARD_ZONES = [
    "America/New_York",
    "America/St_Johns",
    "America/Santiago",
    "America/Havana",
    "Asia/Beirut",
    "Asia/Tehran",
    "Asia/Gaza",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "Australia/Lord_Howe",
    "Europe/Dublin",
    "Pacific/Apia",
    "Pacific/Chatham",
]


def _transitions(zone: str, first: int, last: int) -> list[tuple[str, dt.datetime]]:
    """Each change of the zone's UTC offset from `first` to `last` (years), as the local wall
    time at which it happens read with the offset before it."""
    tz = zoneinfo.ZoneInfo(zone)
    found = []
    day = dt.datetime(first, 1, 1, tzinfo=dt.UTC)
    while day.year <= last:
        after = day + dt.timedelta(days=1)
        if day.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset():
            low, high = day, after
            while high - low > dt.timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            offset = low.astimezone(tz).utcoffset()
            assert offset is not None
            found.append((zone, (high + offset).replace(tzinfo=None)))
        day = after
    return found


TRANSITIONS = [moment for zone in HARD_ZONES for moment in _transitions(zone, 2019, 2031)]

any_moment = st.tuples(
    st.sampled_from(ZONES),
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2060, 12, 31)),
)
# Wall times within two hours of a clock change, minute by minute.
near_a_change = st.tuples(st.sampled_from(TRANSITIONS), st.integers(-120, 120)).map(
    lambda case: (case[0][0], case[0][1] + dt.timedelta(minutes=case[1]))
)


def test_the_hard_zones_change_their_clocks_in_the_years_drawn() -> None:
    assert len(TRANSITIONS) > 150


@settings(max_examples=bounded(4_000), deadline=None)
@given(case=st.one_of(any_moment, near_a_change))
def test_read_local_time_agrees_with_the_booking_rule_in_every_zone(case) -> None:
    zone, wall = case
    reading = read_local_time(wall.date(), wall.time(), zone)

    tz = zoneinfo.ZoneInfo(zone)
    # The instant used is the one bookings store (local_to_utc), one of the candidates.
    assert reading.used == local_to_utc(wall.date(), wall.time(), zone)
    assert reading.used in reading.candidates
    assert list(reading.candidates) == sorted(set(reading.candidates))
    shown = [c.astimezone(tz).replace(tzinfo=None, fold=0) for c in reading.candidates]
    if reading.kind == "normal":
        assert shown == [wall]
    elif reading.kind == "ambiguous":
        # Both instants show the wall time typed; the first is used.
        assert (shown, reading.used) == ([wall, wall], reading.candidates[0])
    else:
        # Neither instant shows the wall time typed: the clocks jumped over it.
        assert reading.kind == "nonexistent"
        assert len(shown) == 2
        assert wall not in shown


def test_local_to_utc_answers_from_its_cache_exactly_as_it_computes() -> None:
    """Answers are kept per (day, time, fold, zone): asked again, in another order, or for the
    same wall time in another zone or fold, each is what the zone's rules give."""
    from scheduler.engine.localtime import _local_to_utc

    _local_to_utc.cache_clear()
    asked = [
        ("America/New_York", D(2026, 11, 1), T(1, 30)),  # happens twice: the first
        ("America/New_York", D(2026, 11, 1), T(1, 30, fold=1)),  # as given, the second
        ("Europe/Berlin", D(2026, 11, 1), T(1, 30)),
        ("America/New_York", D(2027, 3, 14), T(2, 30)),  # skipped: the offset before
        ("Asia/Tokyo", D(2026, 12, 8), T(9, 30)),
    ]
    expected = [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 30),
        utc(2026, 11, 1, 0, 30),
        utc(2027, 3, 14, 7, 30),
        utc(2026, 12, 8, 0, 30),
    ]
    first = [local_to_utc(day, at, zone) for zone, day, at in asked]
    again = [local_to_utc(day, at, zone) for zone, day, at in reversed(asked)][::-1]
    assert first == again == expected
    assert _local_to_utc.cache_info().hits == len(asked)
    assert _local_to_utc.cache_info().currsize == len(asked)
    # A time that carries a zone is read as the wall time it shows, in the zone asked for.
    assert local_to_utc(D(2026, 12, 8), T(9, 30, tzinfo=dt.UTC), "Asia/Tokyo") == expected[-1]
