"""Invites by email (iMIP, RFC 6047): one message per visit state, REQUEST or CANCEL.

What a participant reads first is what this message means for them: a new visit (with its
booked day and time, or its window as a range while it is not booked), or an update that says
what changed since the last invite they were sent, old → new. The previous state is the
visit's audit history at the SEQUENCE of that last sent invite.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from zoneinfo import ZoneInfo

from django.core.mail import EmailMultiAlternatives
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from scheduler.access import participant_today, site_today
from scheduler.calendars.events import (
    attendee_of,
    day_and_time,
    organizer_of,
    participant_visit_event,
    visit_name,
    window_range,
)
from scheduler.calendars.ical import Method, calendar_text
from scheduler.models import Reminder, ScheduledVisit

# The outbox's event name for invite rows (the outbox imports it from here: calendars never
# import the outbox).
INVITE_EVENT = "invite"


def last_sent_invite_sequence(visit: ScheduledVisit) -> int | None:
    """The SEQUENCE of the newest invite the participant was sent for this visit, if any."""
    return (
        Reminder.objects.filter(visit=visit, event=INVITE_EVENT, status=Reminder.Status.SENT)
        .order_by("-sent_at", "-id")
        .values_list("ical_sequence", flat=True)
        .first()
    )


def _state_at(visit: ScheduledVisit, sequence: int) -> Any | None:
    """The visit's historical record as it was at `sequence` (its last record at it)."""
    return (
        ScheduledVisit.history.filter(id=visit.pk, ical_sequence=sequence)
        .order_by("-history_date", "-history_id")
        .first()
    )


def _when(state: Any, zone: ZoneInfo, language: str) -> tuple[str, bool]:
    """A visit state's day and time in words (or its window as a range); and whether timed."""
    if state.booked_start is not None:
        return day_and_time(state.booked_start, zone, language), True
    return window_range(state.window_start, state.window_end, language), False


def what_changed(visit: ScheduledVisit, previous: Any, *, method: Method) -> str:
    """One line, old → new: 'Moved: Monday, March 15, 2027 9:00 AM → … (America/New_York)'.

    Call inside the participant's language.
    """
    site = visit.participant.site
    zone = ZoneInfo(site.timezone)
    language = translation.get_language() or "en"
    old, old_timed = _when(previous, zone, language)
    new, new_timed = _when(visit, zone, language)
    if method == "CANCEL":
        line = _("Cancelled: %(old)s") % {"old": old}
        timed = old_timed
    else:
        timed = old_timed or new_timed
        words = {"old": old, "new": new}
        if old == new:
            line = _("Same day and time: %(new)s") % words
        elif old_timed and new_timed:
            line = _("Moved: %(old)s → %(new)s") % words
        elif new_timed:
            line = _("Booked: %(old)s → %(new)s") % words
        elif not old_timed:
            line = _("Window moved: %(old)s → %(new)s") % words
        else:
            line = _("Changed: %(old)s → %(new)s") % words
    return f"{line} ({site.timezone})" if timed else line


def invite_message(visit: ScheduledVisit, *, method: Method) -> EmailMultiAlternatives | None:
    """The iMIP message for a visit's current state, or None when nobody can receive it."""
    participant, site = visit.participant, visit.participant.site
    attendee = attendee_of(participant, participant_today(participant))
    if attendee is None:
        return None
    told = last_sent_invite_sequence(visit)
    previous = _state_at(visit, told) if told is not None and told != visit.ical_sequence else None
    language = participant.language
    with translation.override(language):
        event = participant_visit_event(visit, attendee=attendee, today=site_today(site))
        # Written as plain text: icalendar's bytes (tests/calendars/test_ical.py), not cached (an
        # invite is written once per SEQUENCE, and names its attendee).
        ics = calendar_text([event], method=method, stamp=timezone.now())
        if isinstance(event.start, dt.datetime):
            when = day_and_time(event.start, ZoneInfo(site.timezone), language)
        else:
            when = window_range(visit.window_start, visit.window_end, language)
        names = {"name": visit_name(visit), "when": when}
        change = what_changed(visit, previous, method=method) if previous is not None else ""
        if method == "CANCEL":
            subject = _("Cancelled: %(name)s, %(when)s") % names
            intro = _("This study visit has been cancelled. Your calendar will remove it.")
        elif previous is not None:
            subject = _("Changed: %(name)s, %(when)s") % names
            intro = _("This study visit has changed. Your calendar will update itself.")
        elif isinstance(event.start, dt.datetime):
            subject = _("Study visit: %(name)s, %(when)s") % names
            intro = _(
                "Here is your study visit. Add it to your calendar; it will update "
                "itself if anything changes."
            )
        else:
            subject = _("To book: %(name)s, %(when)s") % names
            intro = _(
                "Here is your study visit. Add it to your calendar; it will update "
                "itself if anything changes."
            )
        heading = [change, intro] if change else [intro]
        text = "\n".join(heading) + f"\n\n{event.summary}\n{event.description}\n"
        body = "".join(f"<p>{html.escape(line)}</p>" for line in event.description.split("\n"))
        page = (
            f'<html lang="{language}"><body>'
            + "".join(f"<p>{html.escape(line)}</p>" for line in heading)
            + f"<h2>{html.escape(event.summary)}</h2>{body}</body></html>"
        )
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=organizer_of(site).header(),
        to=[attendee.header()],
        reply_to=[organizer_of(site).header()],
    )
    message.attach_alternative(page, "text/html")
    # Django turns the subtype into the Content-Type parameters: text/calendar; method=…
    message.attach_alternative(ics.decode(), f"text/calendar; method={method}")
    return message
