"""Invites by email (iMIP, RFC 6047): one message per visit state, REQUEST or CANCEL."""

from __future__ import annotations

import datetime as dt
import html

from django.core.mail import EmailMultiAlternatives
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from scheduler.calendars.events import _day, attendee_of, organizer_of, participant_visit_event
from scheduler.calendars.ical import Method, build_calendar
from scheduler.models import ScheduledVisit


def invite_message(visit: ScheduledVisit, *, method: Method) -> EmailMultiAlternatives | None:
    """The iMIP message for a visit's current state, or None when nobody can receive it."""
    participant, site = visit.participant, visit.participant.site
    attendee = attendee_of(participant, timezone.localdate())
    if attendee is None:
        return None
    with translation.override(participant.language):
        event = participant_visit_event(visit, attendee=attendee)
        ics = build_calendar([event], method=method, stamp=timezone.now()).to_ical()
        when = (
            _day(event.start.date(), participant.language)  # type: ignore[union-attr]
            if isinstance(event.start, dt.datetime)
            else _day(visit.window_start, participant.language)
        )
        if method == "CANCEL":
            subject = _("Cancelled: %(name)s on %(day)s") % {"name": visit.name, "day": when}
            intro = _("This study visit has been cancelled. Your calendar will remove it.")
        else:
            subject = _("Study visit: %(name)s, %(day)s") % {"name": visit.name, "day": when}
            intro = _(
                "Here is your study visit. Add it to your calendar; it will update "
                "itself if anything changes."
            )
        text = f"{intro}\n\n{event.summary}\n{event.description}\n"
        body = "".join(f"<p>{html.escape(line)}</p>" for line in event.description.split("\n"))
        page = (
            f'<html lang="{participant.language}"><body><p>{html.escape(intro)}</p>'
            f"<h2>{html.escape(event.summary)}</h2>{body}</body></html>"
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
