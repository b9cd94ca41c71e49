"""Instants on staff pages read the reader's way: English "Tue 8 Dec 2026 09:30 JST",
Japanese "2026年12月8日(火) 09:30 JST"; the clock and the zone are the site's either way."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import translation

from scheduler.display import utc_time, zone_time

# 00:30 UTC on Tuesday 8 December 2026: 09:30 in Tokyo, 19:30 on Monday 7 in New York.
INSTANT = dt.datetime(2026, 12, 8, 0, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("language", "zone", "expected"),
    [
        ("en", "Asia/Tokyo", "Tue 8 Dec 2026 09:30 JST"),
        ("ja", "Asia/Tokyo", "2026年12月8日(火) 09:30 JST"),
        ("en", "America/New_York", "Mon 7 Dec 2026 19:30 EST"),
        ("ja", "America/New_York", "2026年12月7日(月) 19:30 EST"),
        ("ja", "Pacific/Kiritimati", "2026年12月8日(火) 14:30 +14"),
    ],
)
def test_an_instant_reads_in_the_readers_language(language: str, zone: str, expected: str) -> None:
    with translation.override(language):
        assert zone_time(INSTANT, zone) == expected


def test_utc_and_missing_instants() -> None:
    with translation.override("ja"):
        assert (utc_time(INSTANT), zone_time(None, "Asia/Tokyo")) == (
            "2026年12月8日(火) 00:30 UTC",
            "—",
        )
