"""What participants' and coordinators' calendars say about a visit or a milestone.

Privacy rules, enforced here and crawled by the tests: an event names the visit in plain words,
its time, place, expected duration and how to prepare. It never carries the diagnosis, the
trial's title, the treatment arm or another participant. Site feeds name participants by study
id only. Text follows the participant's language (English or Japanese).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from participants.models import Participant
from scheduler.calendars.ical import CalendarEvent, Person
from scheduler.models import ScheduledMilestone, ScheduledVisit
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


def elapsed_end(start: dt.datetime, minutes: int, zone: ZoneInfo) -> dt.datetime:
    """When something that starts at `start` and lasts `minutes` ends, in `zone`'s wall time.

    Added in UTC: Python adds a timedelta to an aware datetime on the wall clock, so a 4-hour
    visit at 01:00 on a spring-forward night would otherwise end at 05:00 local, 3 real hours.
    """
    return (start.astimezone(dt.UTC) + dt.timedelta(minutes=minutes)).astimezone(zone)


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
        start, end = local_start, elapsed_end(visit.booked_start, minutes, zone)
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
        zone = ZoneInfo(site.timezone)
        local_start = visit.booked_start.astimezone(zone)
        start, end = local_start, elapsed_end(visit.booked_start, _visit_duration(visit), zone)
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
