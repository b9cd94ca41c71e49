"""Who may see and do what, and a site's (or a participant's) "now" and "today".

Every date a person sees is the site's local date (or, for what a participant receives, the
participant's), never the server's: `timezone.localdate()` is UTC here and would show a Tokyo
site yesterday's list until 09:00 and turn New York visits overdue at 19:00.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.utils import timezone

from participants.models import Participant
from trials.models import Site


def site_now(site: Site, *, now: dt.datetime | None = None) -> dt.datetime:
    """The current instant on the site's wall clock (an aware datetime in its zone)."""
    return (now or timezone.now()).astimezone(ZoneInfo(site.timezone))


def site_today(site: Site, *, now: dt.datetime | None = None) -> dt.date:
    """The calendar date at the site right now."""
    return site_now(site, now=now).date()


def participant_today(participant: Participant, *, now: dt.datetime | None = None) -> dt.date:
    """The calendar date where the participant lives (their own zone, else their site's)."""
    zone = participant.timezone or participant.site.timezone
    return (now or timezone.now()).astimezone(ZoneInfo(zone)).date()


def zone_today(zone: str, *, now: dt.datetime | None = None) -> dt.date:
    """The calendar date in an IANA zone right now (for lists that span one zone)."""
    return (now or timezone.now()).astimezone(ZoneInfo(zone)).date()
