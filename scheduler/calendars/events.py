"""What participants' and coordinators' calendars say about a visit or a milestone.

Privacy rules, enforced here and crawled by the tests: an event names the visit in plain words,
its time, place, expected duration and how to prepare. It never carries the diagnosis, the
trial's title, the treatment arm or another participant. Site feeds name participants by trial
code and study id only (the same study id exists in several trials). Text follows the
participant's language (English or Japanese), protocol-defined names too: the Japanese name the
protocol file gives (`name_ja`), else the file's `name` (`visit_name`, `trials.models.localized`).

What an event shows is the visit's state as it is today: a visit done appears where it
happened, not where it was planned; missed and cancelled visits stay in feeds as CANCELLED (a
subscribed calendar that already holds them strikes or drops them, rather than keeping a stale
copy); the status text is computed at a glance (`visit_glance_status`, with the site's today),
never a stored "planned" that went stale when the window closed.
"""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_interval, format_time
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from participants.models import Participant
from scheduler.access import site_today
from scheduler.calendars.ical import CalendarEvent, Person, Status
from scheduler.models import ScheduledMilestone, ScheduledVisit
from scheduler.selectors import VISIT_GLANCE_LABELS, visit_glance_status
from trials.eligibility import age_in_years
from trials.models import Site, localized, localized_name, taper_drug

UID_DOMAIN = "trial-visit-scheduler"

# VISIT_GLANCE_LABELS' texts, marked for translation: participants read them in their language.
GLANCE_LABELS_TO_TRANSLATE = (
    gettext_noop("upcoming"),
    gettext_noop("due"),
    gettext_noop("booked"),
    gettext_noop("overdue"),
    gettext_noop("done"),
    gettext_noop("out of window"),
    gettext_noop("missed"),
    gettext_noop("cancelled"),
)


def visit_uid(visit: ScheduledVisit) -> str:
    return f"visit-{visit.ical_uid}@{UID_DOMAIN}"


def milestone_uid(milestone: ScheduledMilestone) -> str:
    return f"milestone-{milestone.ical_uid}@{UID_DOMAIN}"


def participant_label(participant: Participant) -> str:
    """How coordinators' texts name a participant: trial code and study id, nothing else."""
    return f"{participant.trial.code} {participant.study_id}"


def visit_name(visit: ScheduledVisit) -> str:
    """The visit's name in the active language: the protocol's Japanese name for a Japanese
    reader when the file gives one, else the protocol's name."""
    return visit.name


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours})
    if rest:
        parts.append(ngettext("%(count)d minute", "%(count)d minutes", rest) % {"count": rest})
    return " ".join(parts)


@functools.lru_cache(maxsize=4096)
def _day(value: dt.date, language: str) -> str:
    """'Monday, March 15, 2027'. Cached: babel's formatting was a tenth of a reminder's send,
    and a batch's reminders name the same few days (a window's first and last, say)."""
    return format_date(value, format="full", locale=language)


def day_and_time(instant: dt.datetime, zone: ZoneInfo, language: str) -> str:
    """'Monday, March 15, 2027 9:00 AM': an instant on the site's wall clock, in words."""
    local = instant.astimezone(zone)
    return f"{_day(local.date(), language)} {format_time(local, format='short', locale=language)}"


def window_range(first: dt.date, last: dt.date, language: str) -> str:
    """'Sat, Jan 31 – Wed, Feb 4, 2026' (one day when the window is one day)."""
    return format_interval(first, last, "yMMMEd", locale=language)


def _visit_duration(visit: ScheduledVisit) -> int:
    return visit.visit_definition.duration_minutes if visit.visit_definition else 60


def elapsed_end(start: dt.datetime, minutes: int, zone: ZoneInfo) -> dt.datetime:
    """When something that starts at `start` and lasts `minutes` ends, in `zone`'s wall time.

    Added in UTC: Python adds a timedelta to an aware datetime on the wall clock, so a 4-hour
    visit at 01:00 on a spring-forward night would otherwise end at 05:00 local, 3 real hours.
    """
    return (start.astimezone(dt.UTC) + dt.timedelta(minutes=minutes)).astimezone(zone)


def visit_span(
    visit: ScheduledVisit, zone: ZoneInfo
) -> tuple[dt.datetime | dt.date, dt.datetime | dt.date]:
    """Where a visit sits in a calendar: (start, exclusive end), timed or all-day.

    Done: when it happened (its actual start, timed, else all day on its actual date).
    Otherwise its booking, else its whole window (all day).
    """
    minutes = _visit_duration(visit)
    if visit.status == ScheduledVisit.Status.DONE and visit.actual_date is not None:
        if visit.actual_start is not None:
            return visit.actual_start.astimezone(zone), elapsed_end(
                visit.actual_start, minutes, zone
            )
        return visit.actual_date, visit.actual_date + dt.timedelta(days=1)
    if visit.booked_start is not None:
        return visit.booked_start.astimezone(zone), elapsed_end(visit.booked_start, minutes, zone)
    return visit.window_start, visit.window_end + dt.timedelta(days=1)


def _where(site: Site) -> str:
    return ", ".join(part for part in (site.name, site.address) if part)


def attendee_of(participant: Participant, today: dt.date) -> Person | None:
    """The participant, or the guardian when the participant is a minor; None if no email.

    `today` is the participant's (`access.participant_today`): a birthday counts where they live.
    """
    if age_in_years(participant.birth_date, today) < 18:
        return (
            Person(participant.guardian_email, participant.guardian_name)
            if (participant.guardian_email)
            else None
        )
    return Person(participant.email) if participant.email else None


def organizer_of(site: Site) -> Person:
    return Person(site.email or settings.DEFAULT_FROM_EMAIL, site.name)


def participant_clock(start: dt.datetime, participant_zone: str, language: str) -> str:
    """The same instant on the participant's own clock, when it reads differently there (a
    participant who lives in another zone than the site's); empty otherwise."""
    if not participant_zone:
        return ""
    theirs = start.astimezone(ZoneInfo(participant_zone))
    if theirs.replace(tzinfo=None) == start.replace(tzinfo=None):
        return ""
    return _("That is %(day)s at %(time)s where you are (%(zone)s time).") % {
        "day": _day(theirs.date(), language),
        "time": format_time(theirs, format="short", locale=language),
        "zone": participant_zone,
    }


def participant_visit_event(
    visit: ScheduledVisit, *, attendee: Person | None = None, today: dt.date | None = None
) -> CalendarEvent:
    """The participant's view of a visit, in the participant's language (call inside it).

    `today` is the site's (computed when not given; a feed passes it once for all its visits).
    """
    site = visit.participant.site
    language = translation.get_language() or "en"
    zone = ZoneInfo(site.timezone)
    glance = visit_glance_status(visit, today=today or site_today(site))
    minutes = _visit_duration(visit)
    start, end = visit_span(visit, zone)
    names = {"name": visit_name(visit)}
    lines: list[str] = []
    status: Status
    if visit.status == ScheduledVisit.Status.CANCELLED:
        summary, status = _("Cancelled: %(name)s") % names, "CANCELLED"
        lines.append(_("This visit is cancelled."))
    elif visit.status == ScheduledVisit.Status.MISSED:
        summary, status = _("Missed: %(name)s") % names, "CANCELLED"
        lines.append(_("This visit did not take place."))
    elif visit.status == ScheduledVisit.Status.DONE:
        summary, status = _("Done: %(name)s") % names, "CONFIRMED"
    elif isinstance(start, dt.datetime):
        summary, status = _("Study visit: %(name)s") % names, "CONFIRMED"
    else:
        summary, status = _("To book: %(name)s") % names, "TENTATIVE"
    if isinstance(start, dt.datetime):
        lines.append(
            _("When: %(day)s at %(time)s (%(zone)s time)")
            % {
                "day": _day(start.date(), language),
                "time": format_time(start, format="short", locale=language),
                "zone": site.timezone,
            }
        )
        elsewhere = participant_clock(start, visit.participant.timezone, language)
        if elsewhere:
            lines.append(elsewhere)
    elif visit.status == ScheduledVisit.Status.DONE:
        lines.append(_("When: %(day)s") % {"day": _day(start, language)})
    elif visit.is_open and visit.window_start == visit.window_end:
        lines.append(
            _(
                "Not booked yet. The visit will take place on %(day)s; the site will confirm "
                "the time."
            )
            % {"day": _day(visit.window_start, language)}
        )
    elif visit.is_open:
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
    else:
        lines.append(
            _("When: between %(first)s and %(last)s")
            % {
                "first": _day(visit.window_start, language),
                "last": _day(visit.window_end, language),
            }
        )
    lines.append(_("Status: %(status)s") % {"status": _(VISIT_GLANCE_LABELS[glance])})
    lines.append(_("Expected duration: up to %(duration)s") % {"duration": _duration(minutes)})
    lines.append(_("Where: %(place)s") % {"place": _where(site)})
    preparations = [
        f"- {localized_name(procedure.procedure)}: {localized(procedure.procedure, 'preparation')}"
        for procedure in visit.procedures_in_order
        if procedure.procedure.preparation
    ]
    if preparations and visit.is_open:
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
        status=status,
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
        drug = taper_drug(rule)
        summary = _("%(drug)s dose from today: %(dose)s mg/day") % {
            "drug": drug.capitalize(),
            "dose": f"{milestone.dose_mg.normalize():f}",
        }
    else:
        summary = localized_name(rule)
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


def site_visit_event(visit: ScheduledVisit, *, today: dt.date | None = None) -> CalendarEvent:
    """A coordinator's view: trial, study id and visit, never a name or contact detail.

    `today` is the site's (computed when not given; a feed passes it once for all its visits).
    Needs the visit's participant with its site and trial loaded.
    """
    site = visit.participant.site
    glance = visit_glance_status(visit, today=today or site_today(site))
    label = VISIT_GLANCE_LABELS[glance]
    start, end = visit_span(visit, ZoneInfo(site.timezone))
    status: Status
    if visit.status in (ScheduledVisit.Status.MISSED, ScheduledVisit.Status.CANCELLED):
        status = "CANCELLED"
    elif visit.status == ScheduledVisit.Status.DONE or isinstance(start, dt.datetime):
        status = "CONFIRMED"
    else:
        status = "TENTATIVE"
    # In the active language (the feed's request's, rendered under it; texts are cached per
    # language).
    shown = _(label)
    if visit.status == ScheduledVisit.Status.DONE:
        suffix = _("done") if glance == "done" else _("done, %(status)s") % {"status": shown}
    elif glance == "booked":
        suffix = ""
    elif glance in ("upcoming", "due"):
        suffix = _("to book")
    else:  # overdue, out of window, missed, cancelled
        suffix = shown
    title = f"{participant_label(visit.participant)} · {visit.code} {visit.name}"
    description = [_("Status: %(status)s") % {"status": shown}]
    if visit.actual_date is not None:
        description.append(_("Done %(date)s") % {"date": visit.actual_date.isoformat()})
    description.append(
        _("Target %(target)s, window %(start)s to %(end)s")
        % {
            "target": visit.target_date.isoformat(),
            "start": visit.window_start.isoformat(),
            "end": visit.window_end.isoformat(),
        }
    )
    if visit.deviation_days:
        description.append(
            ngettext(
                "Out of window by %(days)d day",
                "Out of window by %(days)d days",
                abs(visit.deviation_days),
            )
            % {"days": visit.deviation_days}
        )
    return CalendarEvent(
        uid=visit_uid(visit),
        sequence=visit.ical_sequence,
        summary=f"{title} ({suffix})" if suffix else title,
        description="\n".join(description),
        location=_where(site),
        status=status,
        start=start,
        end=end,
    )
