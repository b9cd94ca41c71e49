"""Delivering one claimed reminder by its channel: email, SMS, in-app or webhook.

Texts are plain words in the participant's language; they name the visit, the day and what
to prepare, never the diagnosis or the arm. Coordinator texts name participants by trial code
and study id (the same study id exists in several trials), never by name.

- A coordinator email for a site without a mailbox falls back to an in-app notice, and the
  row says so: a coordinator reminder never goes dead for want of an address.
- A mail server's refusal is recorded with its reply code and text, the address scrubbed out
  (`errors.smtp_reason`), so a coordinator can tell a full mailbox from a wrong address.
- The welcome message is the participant's first: what their study calendar holds, the
  address of their calendar feed (created for it, and revoked again if the message cannot
  be sent), and whom to call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db.models import Count, Max, Min
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from participants.contact import sms_number
from participants.models import Participant
from scheduler.access import participant_today, site_today
from scheduler.calendars.events import (
    UID_DOMAIN,
    attendee_of,
    organizer_of,
    participant_clock,
    participant_label,
    participant_visit_event,
)
from scheduler.calendars.feeds import feed_create, feed_public_url, feed_revoke
from scheduler.calendars.ical import CalendarEvent, Method, calendar_text
from scheduler.calendars.imip import INVITE_EVENT, invite_message, last_sent_invite_sequence
from scheduler.engine.reminders import EVENT_VISIT_STATUSES
from scheduler.models import CalendarFeed, CoordinatorNotification, Reminder, ScheduledVisit
from scheduler.outbox.errors import (
    NotNeeded,
    PermanentDeliveryError,
    ProviderSilent,
    Superseded,
    TransientDeliveryError,
    smtp_reason,
    timed_out,
)
from scheduler.outbox.plan import WELCOME_EVENT
from scheduler.outbox.sms import sms_backend
from scheduler.outbox.webhooks import WEBHOOK_CHANNEL, deliver_webhook
from trials.models import taper_drug

# The mail server connection of the batch being sent, if any (`mail_connection_per_batch`).
_batch_mail: ContextVar[BaseEmailBackend | None] = ContextVar("batch_mail", default=None)


@contextmanager
def mail_connection_per_batch() -> Iterator[None]:
    """One connection to the mail server for the emails of a batch: an SMTP server's connect,
    TLS and login once, not once per message. Opened at the first email, closed at the end;
    a message that fails closes it, so the next one opens a fresh connection."""
    connection = get_connection()
    token = _batch_mail.set(connection)
    try:
        yield
    finally:
        _batch_mail.reset(token)
        connection.close()


def not_accepted(exc: OSError) -> TransientDeliveryError:
    """A mail server that refused or dropped the message: retried later. One that did not
    answer in time (EMAIL_TIMEOUT) is ProviderSilent: the rest of a batch waits too."""
    kind = ProviderSilent if timed_out(exc) else TransientDeliveryError
    return kind(f"email not accepted: {smtp_reason(exc)}")


def _send(message: EmailMessage) -> None:
    """Send one email, on the batch's connection when there is one."""
    connection = _batch_mail.get()
    if connection is None:
        message.send()
        return
    message.connection = connection
    try:
        connection.open()  # a no-op while it is open
        message.send()
    except BaseException:
        connection.close()  # never reuse a connection that failed
        raise


def deliver(reminder: Reminder) -> str:
    if reminder.channel == WEBHOOK_CHANNEL:
        return deliver_webhook(reminder)
    if reminder.event == INVITE_EVENT:
        return _deliver_invite(reminder)
    if reminder.event == WELCOME_EVENT:
        return _deliver_welcome(reminder)
    no_longer = _no_longer_applies(reminder, timezone.now())
    if no_longer:
        raise NotNeeded(no_longer)
    if reminder.channel == "in_app":
        return _deliver_in_app(reminder)
    if reminder.audience == "coordinator":
        return _deliver_coordinator_email(reminder)
    with translation.override(reminder.participant.language):
        if reminder.channel == "sms":
            subject, text = participant_text(reminder)
            number = sms_number(reminder.participant, today=participant_today(reminder.participant))
            if not number:
                raise PermanentDeliveryError(
                    "the participant has no phone number (or no guardian's, for a minor)"
                )
            return sms_backend().send(
                to=number,
                body=sms_text(reminder, subject, text),
                reference=f"reminder-{reminder.pk}",
            )
        return _deliver_participant_email(reminder)


def _no_longer_applies(reminder: Reminder, now: dt.datetime) -> str:
    """Why a reminder due now must not go, or "". A re-plan cancels what no longer applies,
    but a row can be claimed before it commits, or retried after a failure: what is sent is
    checked against the calendar as it is, from the rows the text is written from anyway."""
    participant = reminder.participant
    if participant.status not in ("screening", "enrolled"):
        return f"the participant is {participant.status}"
    if reminder.audience == "participant":
        if participant.reminders_opt_out:
            return "the participant opted out of reminders"
        if reminder.channel not in (participant.reminder_channels or ["email"]):
            return f"the participant no longer wants reminders by {reminder.channel}"
    if reminder.milestone is not None:
        if reminder.milestone.status == "cancelled":
            return "its milestone was cancelled"
        return ""
    visit = reminder.visit
    if visit is None:
        return ""
    statuses = EVENT_VISIT_STATUSES.get(reminder.event)
    if statuses is not None and visit.status not in statuses:
        return f"the visit is {visit.status}"
    if (
        reminder.audience == "participant"
        and visit.booked_start is not None
        and visit.booked_start <= now
    ):
        return "the visit had begun"
    return ""


def sms_text(reminder: Reminder, subject: str, text: str) -> str:
    """The subject and the text's first line (the day and time on the site's clock), and for
    a participant in another zone the same time on their own clock, as the email gives it."""
    body = f"{subject}. {text.splitlines()[0]}"
    visit = reminder.visit
    if reminder.milestone is None and visit is not None and visit.booked_start is not None:
        participant = reminder.participant
        start = visit.booked_start.astimezone(ZoneInfo(participant.site.timezone))
        elsewhere = participant_clock(start, participant.timezone, participant.language)
        if elsewhere:
            body = f"{body} {elsewhere}"
    return body


def participant_text(reminder: Reminder, *, event: CalendarEvent | None = None) -> tuple[str, str]:
    """(subject, body) in the active language. `event`: the visit's event in that language,
    when the caller has it already (an email's invite is the same event, with its attendee)."""
    participant = reminder.participant
    language = participant.language
    if reminder.milestone is not None:
        milestone = reminder.milestone
        drug = taper_drug(milestone.rule).capitalize()
        dose = f"{milestone.dose_mg.normalize():f}" if milestone.dose_mg is not None else ""
        subject = _("From today: %(drug)s %(dose)s mg a day") % {"drug": drug, "dose": dose}
        return subject, subject
    visit = reminder.visit
    assert visit is not None
    event = event or participant_visit_event(visit)
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


def _deliver_participant_email(reminder: Reminder) -> str:
    """Call inside the participant's language."""
    participant, site = reminder.participant, reminder.participant.site
    attendee = attendee_of(participant, participant_today(participant))
    if attendee is None:
        raise PermanentDeliveryError("nobody to email: no address (or no guardian's, for a minor)")
    # The visit's event is written once, for the text and the invite the email carries.
    event = (
        participant_visit_event(reminder.visit, attendee=attendee)
        if reminder.visit is not None and reminder.milestone is None
        else None
    )
    subject, text = participant_text(reminder, event=event)
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
        # calendar that missed an update. Written as plain text: icalendar's bytes
        # (tests/calendars/test_ical.py, tests/reminders/test_invite_bytes.py).
        if event is None:
            event = participant_visit_event(reminder.visit, attendee=attendee)
        ics = calendar_text([event], method="REQUEST", stamp=timezone.now())
        message.attach_alternative(ics.decode(), "text/calendar; method=REQUEST")
    try:
        _send(message)
    except OSError as exc:  # SMTP down, refused, timed out
        raise not_accepted(exc) from None
    return message_id


def _deliver_invite(reminder: Reminder) -> str:
    visit = reminder.visit
    assert visit is not None
    if visit.ical_sequence != reminder.ical_sequence:
        raise Superseded
    if last_sent_invite_sequence(visit) is None:
        # A first invite planned weeks ago: the visit may have been recorded since (which
        # does not raise its SEQUENCE), or its window may have closed while the outbox was down.
        if not visit.is_open:
            raise NotNeeded(f"the visit was {visit.status} before its first invite went out")
        if visit.booked_start is None and visit.window_end < site_today(visit.participant.site):
            raise NotNeeded("its window closed before its first invite went out")
    method: Method = "CANCEL" if visit.status == ScheduledVisit.Status.CANCELLED else "REQUEST"
    message = invite_message(visit, method=method)
    if message is None:
        raise PermanentDeliveryError("nobody to invite: no address (or no guardian's, for a minor)")
    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    message.extra_headers["Message-ID"] = message_id
    try:
        _send(message)
    except OSError as exc:
        raise not_accepted(exc) from None
    return message_id


def coordinator_text(reminder: Reminder) -> str:
    visit = reminder.visit
    assert visit is not None
    label = f"{participant_label(reminder.participant)} · {visit.code} {visit.name}"
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
        return _fall_back_to_in_app(reminder)
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
        _send(message)
    except OSError as exc:
        raise not_accepted(exc) from None
    return message_id


def _fall_back_to_in_app(reminder: Reminder) -> str:
    """A coordinator email with nowhere to go becomes an in-app notice; the provider id says
    so. When the same rule already notifies the site in the app (a sibling in_app row that is
    not cancelled or dead), that notice stands for both, so coordinators read it once."""
    sibling = (
        Reminder.objects.filter(
            target_key=reminder.target_key,
            rule_code=reminder.rule_code,
            due_at=reminder.due_at,
            channel="in_app",
        )
        .exclude(status__in=[Reminder.Status.CANCELLED, Reminder.Status.DEAD])
        .values_list("pk", flat=True)
        .first()
    )
    if sibling is not None:
        return f"in-app reminder {sibling} (fallback: the site has no mailbox)"
    notification, _created = CoordinatorNotification.objects.get_or_create(
        reminder=reminder,
        defaults={"site": reminder.participant.site, "text": coordinator_text(reminder)},
    )
    return f"in-app-{notification.pk} (fallback: the site has no mailbox)"


def welcome_text(participant: Participant, feed_url: str | None) -> tuple[str, str]:
    """(subject, body) of the welcome message, in the active language.

    `feed_url` is the participant's new calendar feed, or None when they already have one
    (its address cannot be shown again: only its hash is stored).
    """
    site = participant.site
    language = participant.language
    span = ScheduledVisit.objects.filter(
        participant=participant, status__in=ScheduledVisit.OPEN
    ).aggregate(
        count=Count("id"),
        first=Min(Coalesce("booked_date", "window_start")),
        last=Max(Coalesce("booked_date", "window_end")),
    )
    lines = [_("Thank you for taking part in this study."), ""]
    if span["count"]:
        lines.append(
            ngettext(
                "Your study calendar holds %(count)d visit, from %(first)s to %(last)s.",
                "Your study calendar holds %(count)d visits, from %(first)s to %(last)s.",
                span["count"],
            )
            % {
                "count": span["count"],
                "first": format_date(span["first"], format="full", locale=language),
                "last": format_date(span["last"], format="full", locale=language),
            }
        )
    lines.append(
        _(
            "We will email you an invitation to each visit %(lead)s before it can take place, "
            "and again whenever its day or time changes. Add each one to your calendar."
        )
        % {
            "lead": ngettext("%(count)d day", "%(count)d days", settings.INVITE_LEAD_DAYS)
            % {"count": settings.INVITE_LEAD_DAYS}
        }
    )
    lines.append("")
    if feed_url is not None:
        lines += [
            _(
                "To see all your study visits in your calendar app, subscribe to this address "
                "(in most apps: Add calendar, From URL):"
            ),
            feed_url,
            _("Keep this address to yourself: anyone who has it can see your visit dates."),
        ]
    else:
        lines.append(
            _(
                "Your study team has already given you an address to see all your visits in "
                "your calendar app; ask them for a new one if you no longer have it."
            )
        )
    lines.append("")
    if site.phone:
        lines.append(
            _("Questions, or need another time? Call %(site)s on %(phone)s.")
            % {"site": site.name, "phone": site.phone}
        )
    else:
        lines.append(_("Questions? Reply to this email."))
    subject = _("Welcome: your study visits at %(site)s") % {"site": site.name}
    return subject, "\n".join(lines) + "\n"


def _deliver_welcome(reminder: Reminder) -> str:
    participant, site = reminder.participant, reminder.participant.site
    attendee = attendee_of(participant, participant_today(participant))
    if attendee is None:
        raise PermanentDeliveryError("nobody to email: no address (or no guardian's, for a minor)")
    new_feed, feed_url = None, None
    if not CalendarFeed.objects.filter(participant=participant, revoked_at__isnull=True).exists():
        new_feed, token = feed_create(participant=participant)
        feed_url = feed_public_url(feed=new_feed, token=token)
    with translation.override(participant.language):
        subject, text = welcome_text(participant, feed_url)
    message_id = f"<reminder-{reminder.pk}@{UID_DOMAIN}>"
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=organizer_of(site).header(),
        to=[attendee.header()],
        reply_to=[organizer_of(site).header()],
        headers={"Message-ID": message_id},
    )
    try:
        _send(message)
    except BaseException as exc:
        # The token was only ever in this message: a feed nobody can subscribe to is revoked,
        # and the next attempt makes a new one.
        if new_feed is not None:
            feed_revoke(feed=new_feed)
        if isinstance(exc, OSError):
            raise not_accepted(exc) from None
        raise
    return message_id
