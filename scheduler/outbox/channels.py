"""Delivering one claimed reminder by its channel: email, SMS or in-app.

Texts are plain words in the participant's language; they name the visit, the day and what
to prepare, never the diagnosis or the arm. Coordinator texts name participants by study id.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from scheduler.calendars.events import (
    UID_DOMAIN,
    attendee_of,
    organizer_of,
    participant_visit_event,
)
from scheduler.calendars.ical import Method, build_calendar
from scheduler.calendars.imip import invite_message
from scheduler.models import CoordinatorNotification, Reminder, ScheduledVisit
from scheduler.outbox.errors import PermanentDeliveryError, Superseded, TransientDeliveryError
from scheduler.outbox.sms import sms_backend


def deliver(reminder: Reminder) -> str:
    if reminder.event == "invite":
        return _deliver_invite(reminder)
    if reminder.channel == "in_app":
        return _deliver_in_app(reminder)
    if reminder.audience == "coordinator":
        return _deliver_coordinator_email(reminder)
    with translation.override(reminder.participant.language):
        subject, text = participant_text(reminder)
        if reminder.channel == "sms":
            if not reminder.participant.phone:
                raise PermanentDeliveryError("the participant has no phone number")
            return sms_backend().send(
                to=reminder.participant.phone,
                body=f"{subject}. {text.splitlines()[0]}",
                reference=f"reminder-{reminder.pk}",
            )
        return _deliver_participant_email(reminder, subject, text)


def participant_text(reminder: Reminder) -> tuple[str, str]:
    """(subject, body) in the active language."""
    participant = reminder.participant
    language = participant.language
    if reminder.milestone is not None:
        milestone = reminder.milestone
        drug = (milestone.rule.taper or {}).get("drug", milestone.rule.name).capitalize()
        dose = f"{milestone.dose_mg.normalize():f}" if milestone.dose_mg is not None else ""
        subject = _("From today: %(drug)s %(dose)s mg a day") % {"drug": drug, "dose": dose}
        return subject, subject
    visit = reminder.visit
    assert visit is not None
    event = participant_visit_event(visit)
    start = (
        visit.booked_start.astimezone(ZoneInfo(participant.site.timezone))
        if (visit.booked_start)
        else None
    )
    when = {
        "name": visit.name,
        "day": format_date(start.date(), format="full", locale=language) if start else "",
        "time": format_time(start, format="short", locale=language) if start else "",
    }
    if reminder.event == "evening_before_procedure":
        subject = _("Tomorrow: %(name)s at %(time)s. Please prepare") % when
    else:
        subject = _("Reminder: %(name)s, %(day)s at %(time)s") % when
    return subject, event.description


def _deliver_participant_email(reminder: Reminder, subject: str, text: str) -> str:
    participant, site = reminder.participant, reminder.participant.site
    attendee = attendee_of(participant, timezone.localdate())
    if attendee is None:
        raise PermanentDeliveryError("nobody to email: no address (or no guardian's, for a minor)")
    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=organizer_of(site).header(),
        to=[attendee.header()],
        headers={"Message-ID": message_id},
    )
    if reminder.visit is not None and reminder.visit.booked_start is not None:
        # A reminder of a booked visit carries its current invite, so it also mends a
        # calendar that missed an update.
        event = participant_visit_event(reminder.visit, attendee=attendee)
        ics = build_calendar([event], method="REQUEST", stamp=timezone.now()).to_ical()
        message.attach_alternative(ics.decode(), "text/calendar; method=REQUEST")
    try:
        message.send()
    except OSError as exc:  # SMTP down, refused, timed out
        raise TransientDeliveryError(f"email not accepted: {type(exc).__name__}") from exc
    return message_id


def _deliver_invite(reminder: Reminder) -> str:
    visit = reminder.visit
    assert visit is not None
    if visit.ical_sequence != reminder.ical_sequence:
        raise Superseded
    method: Method = "CANCEL" if visit.status == ScheduledVisit.Status.CANCELLED else "REQUEST"
    message = invite_message(visit, method=method)
    if message is None:
        raise PermanentDeliveryError("nobody to invite: no address (or no guardian's, for a minor)")
    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    message.extra_headers["Message-ID"] = message_id
    try:
        message.send()
    except OSError as exc:
        raise TransientDeliveryError(f"email not accepted: {type(exc).__name__}") from exc
    return message_id


def coordinator_text(reminder: Reminder) -> str:
    visit = reminder.visit
    assert visit is not None
    label = f"{reminder.participant.study_id} {visit.code} {visit.name}"
    window = f"{visit.window_start.isoformat()} to {visit.window_end.isoformat()}"
    event = reminder.event
    if event == "window_opens_unbooked":
        return f"{label}: window open ({window}), not booked yet"
    if event == "window_closing_unbooked":
        return f"{label}: window closes {visit.window_end.isoformat()}, still not booked"
    booked = f"booked {visit.booked_date.isoformat()}" if visit.booked_date else f"window {window}"
    return f"{label}: overdue ({booked}), neither recorded nor rescheduled"


def _deliver_in_app(reminder: Reminder) -> str:
    notification, _created = CoordinatorNotification.objects.get_or_create(
        reminder=reminder,
        defaults={"site": reminder.participant.site, "text": coordinator_text(reminder)},
    )
    return f"in-app-{notification.pk}"


def _deliver_coordinator_email(reminder: Reminder) -> str:
    site = reminder.participant.site
    if not site.email:
        raise PermanentDeliveryError(f"site {site.code} has no mailbox")
    text = coordinator_text(reminder)
    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    message = EmailMultiAlternatives(
        subject=text,
        body=text,
        from_email=organizer_of(site).header(),
        to=[site.email],
        headers={"Message-ID": message_id},
    )
    try:
        message.send()
    except OSError as exc:
        raise TransientDeliveryError(f"email not accepted: {type(exc).__name__}") from exc
    return message_id
