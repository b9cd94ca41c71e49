"""`{{ instant|zone_time:zone }}`: an instant on a site's clock in templates, in the one format
of scheduler.display ("Tue 8 Dec 2026 09:30 JST"), never Django's server-zone rendering."""

from __future__ import annotations

import datetime as dt

from django import template

from scheduler import display

register = template.Library()


@register.filter
def zone_time(instant: dt.datetime | None, zone: str) -> str:
    return display.zone_time(instant, zone)
