"""What a coordinator's start page shows: the day's and the week's work at each of their sites.

Every row comes from scheduler/access.py (the user's scope) and every date is the site's own:
a user working at Tokyo and New York sees each site's rows against that site's today. The
page is read in a fixed number of queries whatever the number of sites, participants and
visits (memberships, sites, three counts, three row lists and the rows' procedures): counts
are grouped by site in one query each, and rows are capped per site and section in the
database with a window function.

The sections and what each one means (`visit_section_filters`; a site's `today`):
- today: booked for today;
- week: booked for one of the next 6 days (the week is today and the 6 days after it);
- due: planned, its window open today, nothing booked (`closing`: of those, the window
  closes within `CLOSING_SOON_DAYS` days);
- overdue: planned and its window closed, or booked for a day that passed unrecorded;
- missed: marked missed, its window closed within the last `RECENT_MISSED_DAYS` days;
- deviation: done outside its window with no reason recorded (awaiting one);
- taper: a planned taper week due this week (today to 6 days ahead);
- failed and dead reminders and webhook deliveries, and those whose outcome is unknown (their
  worker stopped mid-send on a channel without de-duplication): the outbox rows that need a
  person.
The admin's lists have filters with exactly these meanings (scheduler/admin/lists.py), so
every count on the page is a link to the list of exactly its rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    Prefetch,
    Q,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber

from scheduler import access
from scheduler.models import Reminder, ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.selectors import zones_by_today
from trials.models import Site
from trials.protocol_file import MilestoneKind

WEEK_DAYS = 7
CLOSING_SOON_DAYS = 3
RECENT_MISSED_DAYS = 14
ROWS_PER_SECTION = 15
# Past this many sites on one page, each section shows fewer rows (the counts stay whole).
FULL_PAGE_SITES = 3
ROWS_PER_SECTION_MANY_SITES = 5

# Visit sections with rows on the page, in the page's order; they never overlap.
VISIT_ROW_SECTIONS = ("today", "week", "due", "overdue", "missed", "deviation")
# Counted too: a part of "due".
VISIT_COUNT_KEYS = (*VISIT_ROW_SECTIONS, "closing")
ATTENTION_STATUSES = (Reminder.Status.FAILED, Reminder.Status.DEAD, Reminder.Status.UNKNOWN)

Status = ScheduledVisit.Status
TodayGroups = list[tuple[dt.date, list[str]]]


def week_end(today: dt.date) -> dt.date:
    """The last day of the week that starts today."""
    return today + dt.timedelta(days=WEEK_DAYS - 1)


def per_site_today(
    build: Callable[[dt.date], Q],
    *,
    zone_field: str,
    now: dt.datetime | None = None,
    groups: TodayGroups | None = None,
) -> Q:
    """`build(today)` with each row's own site's today, as one filter.

    `zone_field` is the lookup of the row's site zone (`participant__site__timezone` for
    visits). Like `selectors.visit_status_filters_per_site`, no query is made: every IANA zone
    is grouped by its date now, and the largest group is "every other zone"."""
    (common_today, _), *others = groups if groups is not None else zones_by_today(now=now)
    listed = [zone for _, zones in others for zone in zones]
    rest = ~Q(**{f"{zone_field}__in": listed}) if listed else Q()
    return functools.reduce(
        operator.or_,
        [Q(**{f"{zone_field}__in": zones}) & build(today) for today, zones in others],
        rest & build(common_today),
    )


def visit_section_filters(today: dt.date) -> dict[str, Q]:
    """What each section of the start page means for visits, at a site whose today it is."""
    window_open = Q(status=Status.PLANNED, window_start__lte=today, window_end__gte=today)
    return {
        "today": Q(status=Status.BOOKED, booked_date=today),
        "week": Q(status=Status.BOOKED, booked_date__gt=today, booked_date__lte=week_end(today)),
        "due": window_open,
        "closing": window_open & Q(window_end__lte=today + dt.timedelta(days=CLOSING_SOON_DAYS)),
        "overdue": Q(status=Status.PLANNED, window_end__lt=today)
        | Q(status=Status.BOOKED, booked_date__lt=today),
        "missed": Q(
            status=Status.MISSED,
            window_end__lt=today,
            window_end__gte=today - dt.timedelta(days=RECENT_MISSED_DAYS),
        ),
        "deviation": deviation_awaiting_reason(),
    }


def deviation_awaiting_reason() -> Q:
    """Done outside the window, and no reason recorded for it."""
    return Q(status=Status.DONE, reason="", deviation_days__isnull=False) & ~Q(deviation_days=0)


def taper_due_filter(today: dt.date, *, prefix: str = "") -> Q:
    """A planned taper week due this week at a site whose today it is."""
    return Q(
        **{
            f"{prefix}rule__kind": MilestoneKind.TAPER.value,
            f"{prefix}status": ScheduledMilestone.Status.PLANNED,
            f"{prefix}due_date__gte": today,
            f"{prefix}due_date__lte": week_end(today),
        }
    )


@dataclass
class SiteWork:
    """One site's part of the start page; `today` is the site's."""

    site: Site
    today: dt.date
    counts: dict[str, int] = field(default_factory=dict)
    # Failed and dead outbox rows by channel ("webhook" for webhook deliveries).
    outbox_counts: dict[str, int] = field(default_factory=dict)
    # Outbox rows whose outcome is unknown, by channel: each waits for a person's decision.
    unknown_counts: dict[str, int] = field(default_factory=dict)
    visits: dict[str, list[ScheduledVisit]] = field(default_factory=dict)
    tapers: list[ScheduledMilestone] = field(default_factory=list)
    outbox: list[Reminder] = field(default_factory=list)

    @property
    def week_end(self) -> dt.date:
        return week_end(self.today)


def workspace_for(
    user: object, *, now: dt.datetime | None = None, rows: int = ROWS_PER_SECTION
) -> list[SiteWork]:
    """The start page of `user`: one entry per site they read, by site name.

    Counts are complete; rows are the first `rows` of each section at each site (the count's
    link lists them all). Visits carry `section` and their procedures (`procedures.all()`,
    with each procedure's definition); milestones and reminders their participant, site and
    trial."""
    sites = list(access.sites_for(user).order_by("name", "code"))
    if not sites:
        return []
    if len(sites) > FULL_PAGE_SITES:
        # A monitor of many sites reads each site's counts and its first rows; every count
        # links to the whole list.
        rows = min(rows, ROWS_PER_SECTION_MANY_SITES)
    # Only these sites' zones, grouped by their today: every row here belongs to one of them,
    # so the filters name a handful of zones instead of all of IANA's.
    groups = _site_zone_groups({site.timezone for site in sites}, now=now)
    work = {site.pk: SiteWork(site=site, today=access.site_today(site, now=now)) for site in sites}
    _count_visits(user, work, groups)
    _count_tapers(user, work, groups)
    _count_outbox(user, work)
    _visit_rows(user, work, groups, rows)
    _taper_rows(user, work, groups, rows)
    _outbox_rows(user, work, rows)
    return list(work.values())


def _site_zone_groups(zones: set[str], *, now: dt.datetime | None) -> TodayGroups:
    """`zones` grouped by their today, the largest group first (as `zones_by_today`)."""
    by_day: dict[dt.date, list[str]] = {}
    for zone in sorted(zones):
        by_day.setdefault(access.zone_today(zone, now=now), []).append(zone)
    return sorted(by_day.items(), key=lambda group: (-len(group[1]), group[0]))


def _candidates(groups: TodayGroups) -> Q:
    """The visits any section can hold, whatever the site's today, in the shape of the
    partial indexes on ScheduledVisit: the few near today, not the trial's whole history
    (600,000 rows for a large trial), are all the start page reads."""
    todays = [today for today, _ in groups]
    first, last = min(todays), max(todays)
    return (
        Q(status=Status.BOOKED, booked_date__lte=week_end(last))
        | Q(status=Status.PLANNED, window_start__lte=last)
        | Q(status=Status.MISSED, window_end__gte=first - dt.timedelta(days=RECENT_MISSED_DAYS))
        | deviation_awaiting_reason()
    )


def _visit_filter(key: str, groups: TodayGroups) -> Q:
    return per_site_today(
        lambda today: visit_section_filters(today)[key],
        zone_field="participant__site__timezone",
        groups=groups,
    )


def _count_visits(user: object, work: dict[int, SiteWork], groups: TodayGroups) -> None:
    counts = (
        access.visits_for(user)
        .filter(_candidates(groups))
        .values("participant__site_id")
        .annotate(
            **{key: Count("id", filter=_visit_filter(key, groups)) for key in VISIT_COUNT_KEYS}
        )
        .order_by()
    )
    for row in counts:
        site_work = work.get(row["participant__site_id"])
        if site_work is not None:
            site_work.counts.update({key: row[key] for key in VISIT_COUNT_KEYS})
    for site_work in work.values():
        for key in VISIT_COUNT_KEYS:
            site_work.counts.setdefault(key, 0)


def _taper_filter(groups: TodayGroups) -> Q:
    return per_site_today(taper_due_filter, zone_field="participant__site__timezone", groups=groups)


def _count_tapers(user: object, work: dict[int, SiteWork], groups: TodayGroups) -> None:
    counts = (
        access.milestones_for(user)
        .filter(_taper_filter(groups))
        .values("participant__site_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    found = {row["participant__site_id"]: row["n"] for row in counts}
    for site_id, site_work in work.items():
        site_work.counts["taper"] = found.get(site_id, 0)


def _count_outbox(user: object, work: dict[int, SiteWork]) -> None:
    counts = (
        access.reminders_for(user)
        .filter(status__in=ATTENTION_STATUSES)
        .values("participant__site_id", "channel", "status")
        .annotate(n=Count("id"))
        .order_by("participant__site_id", "channel", "status")
    )
    for row in counts:
        site_work = work.get(row["participant__site_id"])
        if site_work is None:
            continue
        found = (
            site_work.unknown_counts
            if row["status"] == Reminder.Status.UNKNOWN
            else site_work.outbox_counts
        )
        found[row["channel"]] = found.get(row["channel"], 0) + row["n"]


def _ranked(order_by: list[Any]) -> Window:
    return Window(RowNumber(), partition_by=[F("participant__site_id")], order_by=order_by)


def _visit_rows(user: object, work: dict[int, SiteWork], groups: TodayGroups, rows: int) -> None:
    filters = {key: _visit_filter(key, groups) for key in VISIT_ROW_SECTIONS}
    section = Case(
        *[When(filters[key], then=Value(key)) for key in VISIT_ROW_SECTIONS],
        default=Value(""),
        output_field=CharField(),
    )
    # Ranked on narrow rows (ids and sort keys), then only the chosen few read whole with
    # their site, trial and visit: sorting thousands of wide joined rows spilled to disk.
    ranked = (
        access.visits_for(user)
        .filter(_candidates(groups))
        .filter(functools.reduce(operator.or_, filters.values()))
        .annotate(
            section=section,
            # The booked day for a booking, the day it was done for a deviation, else the
            # window's last day (the visit whose window closes first comes first).
            sort_day=Coalesce("actual_date", "booked_date", "window_end"),
        )
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("participant__site_id"), F("section")],
                order_by=[F("sort_day").asc(), F("booked_start").asc(), F("id").asc()],
            )
        )
        .filter(rank__lte=rows)
        # In no order: the ids are read whole below, in the page's order. The model's
        # default order would join the trial for every candidate and sort by its code.
        .order_by()
        .values_list("id", flat=True)
    )
    visits = (
        # Its own query: as a subquery, Postgres misjudges how few ids come back and scans
        # every visit to join them.
        ScheduledVisit.objects.filter(id__in=list(ranked))
        .annotate(section=section, sort_day=Coalesce("actual_date", "booked_date", "window_end"))
        .select_related("participant__site", "participant__trial", "visit_definition")
        .prefetch_related(
            Prefetch(
                "procedures",
                queryset=ScheduledProcedure.objects.select_related("procedure").order_by(
                    "procedure__order", "id"
                ),
            )
        )
        .order_by("participant__site_id", "sort_day", "booked_start", "id")
    )
    for site_work in work.values():
        site_work.visits = {key: [] for key in VISIT_ROW_SECTIONS}
    for visit in visits:
        at_site = work.get(visit.participant.site_id)
        if at_site is not None and visit.section in at_site.visits:
            at_site.visits[visit.section].append(visit)


def _taper_rows(user: object, work: dict[int, SiteWork], groups: TodayGroups, rows: int) -> None:
    steps = (
        access.milestones_for(user)
        .filter(_taper_filter(groups))
        .annotate(rank=_ranked([F("due_date").asc(), F("id").asc()]))
        .filter(rank__lte=rows)
        .select_related("participant__site", "participant__trial", "rule")
        .order_by("participant__site_id", "due_date", "id")
    )
    for step in steps:
        site_work = work.get(step.participant.site_id)
        if site_work is not None:
            site_work.tapers.append(step)


def _outbox_rows(user: object, work: dict[int, SiteWork], rows: int) -> None:
    failed = (
        access.reminders_for(user)
        .filter(status__in=ATTENTION_STATUSES)
        .annotate(rank=_ranked([F("due_at").desc(), F("id").desc()]))
        .filter(rank__lte=rows)
        .select_related("participant__site", "participant__trial")
        .order_by("participant__site_id", "-due_at", "-id")
    )
    for reminder in failed:
        site_work = work.get(reminder.participant.site_id)
        if site_work is not None:
            site_work.outbox.append(reminder)


def procedure_resources(visit: ScheduledVisit) -> list[str]:
    """The resources the protocol names for a visit's procedures, each once, in order."""
    seen: dict[str, None] = {}
    for procedure in visit.procedures.all():
        if procedure.procedure.resource:
            seen.setdefault(procedure.procedure.resource, None)
    return list(seen)
