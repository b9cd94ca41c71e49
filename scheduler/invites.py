"""What participants' and coordinators' calendars say: events, feeds and iMIP invites.

Privacy rules, enforced here and crawled by the tests: an event names the visit in plain words,
its time, place, expected duration and how to prepare. It never carries the diagnosis, the
trial's title, the treatment arm or another participant. Site feeds name participants by study
id only. Text follows the participant's language (English or Japanese).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Max, Q, QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from participants.models import Participant
from scheduler.ical import CalendarEvent, Method, Person, build_calendar
from scheduler.models import CalendarFeed, ScheduledMilestone, ScheduledVisit
from trials.eligibility import age_in_years
from trials.models import Site

UID_DOMAIN = "trial-visit-scheduler"


def visit_uid(visit: ScheduledVisit) -> str:
    return f"visit-{visit.ical_uid}@{UID_DOMAIN}"


def milestone_uid(milestone: ScheduledMilestone) -> str:
    return f"milestone-{milestone.ical_uid}@{UID_DOMAIN}"


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours})
    if rest:
        parts.append(ngettext("%(count)d minute", "%(count)d minutes", rest) % {"count": rest})
    return " ".join(parts)


def _day(value: dt.date, language: str) -> str:
    return format_date(value, format="full", locale=language)


def _visit_duration(visit: ScheduledVisit) -> int:
    return visit.visit_definition.duration_minutes if visit.visit_definition else 60


def _where(site: Site) -> str:
    return ", ".join(part for part in (site.name, site.address) if part)


def attendee_of(participant: Participant, today: dt.date) -> Person | None:
    """The participant, or the guardian when the participant is a minor; None if no email."""
    if age_in_years(participant.birth_date, today) < 18:
        return (
            Person(participant.guardian_email, participant.guardian_name)
            if (participant.guardian_email)
            else None
        )
    return Person(participant.email) if participant.email else None


def organizer_of(site: Site) -> Person:
    return Person(site.email or settings.DEFAULT_FROM_EMAIL, site.name)


def participant_visit_event(
    visit: ScheduledVisit, *, attendee: Person | None = None
) -> CalendarEvent:
    """The participant's view of a visit, in the participant's language (call inside it)."""
    site = visit.participant.site
    language = translation.get_language() or "en"
    zone = ZoneInfo(site.timezone)
    minutes = _visit_duration(visit)
    lines: list[str] = []
    start: dt.datetime | dt.date
    end: dt.datetime | dt.date
    if visit.booked_start is not None:
        local_start = visit.booked_start.astimezone(zone)
        start, end = local_start, local_start + dt.timedelta(minutes=minutes)
        summary = _("Study visit: %(name)s") % {"name": visit.name}
        status = "CONFIRMED"
        lines.append(
            _("When: %(day)s at %(time)s (%(zone)s time)")
            % {
                "day": _day(local_start.date(), language),
                "time": format_time(local_start, format="short", locale=language),
                "zone": site.timezone,
            }
        )
    else:
        start, end = visit.window_start, visit.window_end + dt.timedelta(days=1)
        summary = _("To book: %(name)s") % {"name": visit.name}
        status = "TENTATIVE"
        lines.append(
            _(
                "Not booked yet. The visit can take place between %(first)s and %(last)s; the "
                "site will confirm the day and time."
            )
            % {
                "first": _day(visit.window_start, language),
                "last": _day(visit.window_end, language),
            }
        )
    if visit.status == ScheduledVisit.Status.CANCELLED:
        status = "CANCELLED"
        lines.insert(0, _("This visit is cancelled."))
    lines.append(_("Expected duration: up to %(duration)s") % {"duration": _duration(minutes)})
    lines.append(_("Where: %(place)s") % {"place": _where(site)})
    preparations = [
        f"- {procedure.procedure.name}: {procedure.procedure.preparation}"
        for procedure in visit.procedures.all()
        if procedure.procedure.preparation
    ]
    if preparations:
        lines.append(_("How to prepare:"))
        lines.extend(preparations)
    if site.phone:
        lines.append(_("Questions, or need another time? Call %(phone)s.") % {"phone": site.phone})
    return CalendarEvent(
        uid=visit_uid(visit),
        sequence=visit.ical_sequence,
        summary=summary,
        description="\n".join(lines),
        location=_where(site),
        status=status,  # type: ignore[arg-type]
        start=start,
        end=end,
        organizer=organizer_of(site),
        attendees=(attendee,) if attendee else (),
    )


def milestone_event(milestone: ScheduledMilestone, previous_dose: object) -> CalendarEvent | None:
    """An all-day event for a participant-facing milestone (a new taper dose, say)."""
    rule = milestone.rule
    if milestone.dose_mg is not None:
        if milestone.dose_mg == previous_dose:
            return None  # the same dose as last week: nothing to act on
        drug = (rule.taper or {}).get("drug", rule.name)
        summary = _("%(drug)s dose from today: %(dose)s mg/day") % {
            "drug": drug.capitalize(),
            "dose": f"{milestone.dose_mg.normalize():f}",
        }
    else:
        summary = rule.name
    return CalendarEvent(
        uid=milestone_uid(milestone),
        sequence=milestone.ical_sequence,
        summary=summary,
        description="",
        location="",
        status="CANCELLED" if milestone.status == "cancelled" else "CONFIRMED",
        start=milestone.due_date,
        end=milestone.due_date + dt.timedelta(days=1),
    )


def site_visit_event(visit: ScheduledVisit) -> CalendarEvent:
    """A coordinator's view: study id and visit, never a name or contact detail."""
    site = visit.participant.site
    title = f"{visit.participant.study_id} · {visit.code} {visit.name}"
    start: dt.datetime | dt.date
    end: dt.datetime | dt.date
    if visit.booked_start is not None:
        local_start = visit.booked_start.astimezone(ZoneInfo(site.timezone))
        start, end = local_start, local_start + dt.timedelta(minutes=_visit_duration(visit))
        status = "CONFIRMED"
    else:
        start, end = visit.window_start, visit.window_end + dt.timedelta(days=1)
        title = f"{title} (to book)"
        status = "TENTATIVE"
    if visit.status == ScheduledVisit.Status.CANCELLED:
        status = "CANCELLED"
    description = "\n".join(
        [
            f"Status: {visit.status}",
            f"Target {visit.target_date.isoformat()}, window {visit.window_start.isoformat()} "
            f"to {visit.window_end.isoformat()}",
            *([f"Out of window by {visit.deviation_days} day(s)"] if visit.deviation_days else []),
        ]
    )
    return CalendarEvent(
        uid=visit_uid(visit),
        sequence=visit.ical_sequence,
        summary=title,
        description=description,
        location=_where(site),
        status=status,  # type: ignore[arg-type]
        start=start,
        end=end,
    )


# ----------------------------------------------------------------------------------------
# Feeds


def _visits() -> QuerySet[ScheduledVisit]:
    return ScheduledVisit.objects.select_related(
        "participant__site", "visit_definition"
    ).prefetch_related("procedures__procedure")


def participant_feed_ical(participant: Participant, *, stamp: dt.datetime) -> bytes:
    visits = list(
        _visits()
        .filter(participant=participant)
        .exclude(status="cancelled")  # type: ignore[attr-defined]
        .order_by("target_date", "id")
    )
    milestones = list(
        ScheduledMilestone.objects.filter(participant=participant, rule__participant_facing=True)
        .exclude(status="cancelled")
        .select_related("rule")
        .order_by("rule__code", "sequence")
    )
    with translation.override(participant.language):
        events = [participant_visit_event(visit) for visit in visits]
        previous: dict[int, object] = {}
        for milestone in milestones:
            event = milestone_event(milestone, previous.get(milestone.rule_id))
            previous[milestone.rule_id] = milestone.dose_mg
            if event is not None:
                events.append(event)
        name = _("Study visits")
    return build_calendar(events, method="PUBLISH", stamp=stamp, name=name).to_ical()


def site_feed_ical(site: Site, *, stamp: dt.datetime) -> bytes:
    visits = (
        ScheduledVisit.objects.filter(participant__site=site)
        .exclude(status="cancelled")
        .select_related("participant__site", "visit_definition")
        .order_by("target_date", "id")
    )
    events = [site_visit_event(visit) for visit in visits]
    return build_calendar(
        events, method="PUBLISH", stamp=stamp, name=f"{site.name}: study visits"
    ).to_ical()


@dataclass(frozen=True)
class FeedVersion:
    etag: str
    last_modified: dt.datetime | None


def feed_version(feed: CalendarFeed) -> FeedVersion:
    """A cheap fingerprint of everything a feed shows (a few aggregate queries, no rendering).

    Every change to a visit, milestone, participant or site writes a history row, so the
    newest history ids in the feed's scope change whenever the feed's content can.
    """
    if feed.participant_id is not None:
        scope = Q(participant_id=feed.participant_id)
        owner_history = Participant.history.filter(id=feed.participant_id)
    else:
        scope = Q(participant__site_id=feed.site_id)
        owner_history = Participant.history.filter(site_id=feed.site_id)
    visit_mark = ScheduledVisit.history.filter(scope).aggregate(
        id=Max("history_id"), at=Max("history_date")
    )
    milestone_mark = ScheduledMilestone.history.filter(scope).aggregate(
        id=Max("history_id"), at=Max("history_date")
    )
    owner_mark = owner_history.aggregate(id=Max("history_id"), at=Max("history_date"))
    site = feed.site or feed.participant.site  # type: ignore[union-attr]
    fingerprint = "|".join(
        str(part)
        for part in (
            feed.pk,
            visit_mark["id"],
            milestone_mark["id"],
            owner_mark["id"],
            site.name,
            site.address,
            site.phone,
            site.timezone,
            site.email,
        )
    )
    moments = [m["at"] for m in (visit_mark, milestone_mark, owner_mark) if m["at"]]
    return FeedVersion(
        etag=f'"{hashlib.sha256(fingerprint.encode()).hexdigest()[:32]}"',
        last_modified=max(moments) if moments else feed.created_at,
    )


# ----------------------------------------------------------------------------------------
# Invites by email (iMIP)


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
