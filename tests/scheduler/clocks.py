"""Clocks for tests that book: a booking is refused in the past at the site, so a test that
books a visit of a calendar whose days have passed makes the booking before them."""

from __future__ import annotations

import datetime as dt

import time_machine


def on_the_eve(day: dt.date) -> time_machine.travel:
    """The clock at noon UTC the day before `day` (still that day before, at every site)."""
    eve = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(12), tzinfo=dt.UTC)
    return time_machine.travel(eve, tick=False)
