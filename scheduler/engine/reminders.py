"""Which reminders a participant's calendar needs, and when (UTC). Pure: no Django, no clock.

Rules (also in the README):
- Participant reminders are sent at the rule's local time in the *participant's* zone,
  coordinator reminders at the rule's local time in the *site's* zone; both become UTC
  instants by `local_to_utc` (a time that does not exist at a spring-forward change is read
  with the offset before the jump, a repeated one means its first occurrence).
- A participant reminder that falls in their quiet hours is sent earlier, one minute before
  the quiet hours begin: a reminder must never arrive after what it reminds of.
- Nothing is planned in the past: a visit rescheduled after its 7-day reminder went out gets a
  new 7-day reminder only if the new date is more than 7 days away.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.engine.localtime import local_date_of, local_to_utc
from scheduler.engine.types import within_calendar

PARTICIPANT_EVENTS = frozenset({"before_visit", "evening_before_procedure", "taper_step"})
PARTICIPANT_CHANNELS = frozenset({"email", "sms"})
COORDINATOR_CHANNELS = frozenset({"email", "in_app"})
# The visit statuses each reminder event of a visit is planned for (`_moments` below); a
# row is sent only while its visit still has one (scheduler.outbox.channels).
EVENT_VISIT_STATUSES = {
    "before_visit": ("booked",),
    "evening_before_procedure": ("booked",),
    "window_opens_unbooked": ("planned",),
    "window_closing_unbooked": ("planned",),
    "overdue": ("planned", "booked"),
}
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class ReminderRuleSpec:
    code: str
    event: str
    at: dt.time
    channels: tuple[str, ...]
    days: int = 0
    visits: frozenset[str] = frozenset()  # empty: every visit
    procedures: frozenset[str] = frozenset()

    @property
    def audience(self) -> str:
        return "participant" if self.event in PARTICIPANT_EVENTS else "coordinator"


@dataclass(frozen=True)
class VisitFacts:
    target_key: str
    visit_code: str
    status: str  # planned | booked | done | missed | cancelled
    window_start: dt.date
    window_end: dt.date
    booked_start: dt.datetime | None = None
    procedures: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MilestoneFacts:
    target_key: str
    due: dt.date
    starts_new_dose: bool


@dataclass(frozen=True)
class Recipients:
    participant_zone: str
    site_zone: str
    # Channels the participant can be reached by and has not opted out of.
    participant_channels: frozenset[str]
    quiet_start: dt.time | None = None
    quiet_end: dt.time | None = None


@dataclass(frozen=True, order=True)
class DueReminder:
    due_at: dt.datetime
    target_key: str
    rule_code: str
    channel: str
    audience: str
    event: str


def in_quiet_hours(at: dt.time, start: dt.time, end: dt.time) -> bool:
    if start <= end:
        return start <= at < end
    return at >= start or at < end  # quiet hours across midnight, e.g. 21:00-08:00


@within_calendar
def participant_send_time(day: dt.date, at: dt.time, recipients: Recipients) -> dt.datetime:
    start, end = recipients.quiet_start, recipients.quiet_end
    if start is not None and end is not None and in_quiet_hours(at, start, end):
        before_quiet = dt.datetime.combine(day, start) - dt.timedelta(minutes=1)
        if at < start and start > end:
            # The early-morning part of an overnight quiet period: the evening before.
            before_quiet -= DAY
        day, at = before_quiet.date(), before_quiet.time()
    return local_to_utc(day, at, recipients.participant_zone)


@within_calendar
def plan_reminders(
    rules: Iterable[ReminderRuleSpec],
    visits: Iterable[VisitFacts],
    milestones: Iterable[MilestoneFacts],
    recipients: Recipients,
    now: dt.datetime,
) -> list[DueReminder]:
    """Every reminder still to send for one participant's calendar, soonest first."""
    visits, milestones = list(visits), list(milestones)
    # As plain tuples in DueReminder's field order: hashed and sorted in C, the same order.
    planned: set[tuple[dt.datetime, str, str, str, str, str]] = set()
    for rule in rules:
        if rule.audience == "participant":
            channels = [c for c in rule.channels if c in recipients.participant_channels]
        else:
            channels = [c for c in rule.channels if c in COORDINATOR_CHANNELS]
        if not channels:
            continue
        for target_key, due_at in _moments(rule, visits, milestones, recipients):
            if due_at <= now:
                continue
            for channel in channels:
                planned.add((due_at, target_key, rule.code, channel, rule.audience, rule.event))
    return [DueReminder(*row) for row in sorted(planned)]


def _moments(
    rule: ReminderRuleSpec,
    visits: list[VisitFacts],
    milestones: list[MilestoneFacts],
    recipients: Recipients,
) -> Iterable[tuple[str, dt.datetime]]:
    def site_time(day: dt.date) -> dt.datetime:
        return local_to_utc(day, rule.at, recipients.site_zone)

    if rule.event == "taper_step":
        for milestone in milestones:
            if milestone.starts_new_dose:
                yield (
                    milestone.target_key,
                    participant_send_time(milestone.due, rule.at, recipients),
                )
        return
    for visit in visits:
        if rule.visits and visit.visit_code not in rule.visits:
            continue
        booked = visit.status == "booked" and visit.booked_start is not None
        if rule.event == "before_visit" and booked:
            day = local_date_of(visit.booked_start, recipients.participant_zone)  # type: ignore[arg-type]
            yield (
                visit.target_key,
                participant_send_time(day - rule.days * DAY, rule.at, recipients),
            )
        elif (
            rule.event == "evening_before_procedure"
            and booked
            and (visit.procedures & rule.procedures)
        ):
            day = local_date_of(visit.booked_start, recipients.participant_zone)  # type: ignore[arg-type]
            yield visit.target_key, participant_send_time(day - DAY, rule.at, recipients)
        elif rule.event == "window_opens_unbooked" and visit.status == "planned":
            yield visit.target_key, site_time(visit.window_start)
        elif rule.event == "window_closing_unbooked" and visit.status == "planned":
            yield visit.target_key, site_time(visit.window_end - rule.days * DAY)
        elif rule.event == "overdue" and visit.status in ("planned", "booked"):
            last_day = (
                local_date_of(visit.booked_start, recipients.site_zone)  # type: ignore[arg-type]
                if booked
                else visit.window_end
            )
            yield visit.target_key, site_time(last_day + DAY)
