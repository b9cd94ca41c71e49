from __future__ import annotations

import datetime as dt
import functools
import operator
import zoneinfo
from collections.abc import Generator, Iterable, Sequence
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Count, IntegerField, Model, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_noop

from participants.models import Participant
from scheduler.access import zone_today
from scheduler.engine import ProtocolSnapshot
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.snapshot import snapshot_from_document
from trials.models import (
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    Site,
    VisitDefinition,
    iana_zones,
)
from trials.services import protocol_document

VISIT_STATUS_KEYS = ("due", "booked", "done", "missed", "out_of_window", "overdue")

# What a person is shown for one visit, computed from its record and the site's today, never
# stored (a stored "planned" goes stale the day the window closes).
# English, marked for translation (gettext_noop: the texts stay plain strings, so calendars
# and exports that have no reader's language keep them): faces show them through gettext.
VISIT_GLANCE_LABELS = {
    "upcoming": gettext_noop("upcoming"),
    "due": gettext_noop("due"),
    "booked": gettext_noop("booked"),
    "overdue": gettext_noop("overdue"),
    "done": gettext_noop("done"),
    "out_of_window": gettext_noop("out of window"),
    "missed": gettext_noop("missed"),
    "cancelled": gettext_noop("cancelled"),
}


# Snapshots of published versions, built once per process: a published version never changes
# (trials.services refuses to re-import or re-publish it, and the admin shows protocol content
# read-only), and rebuilding its snapshot was a dozen queries in every enrollment, booking and
# reschedule. Keyed by what identifies the content, not the id alone: the source file's
# SHA-256 and the publication instant. Bounded: a process serving more versions than this
# starts over.
PUBLISHED_SNAPSHOTS_MAX = 256
_published_snapshots: dict[tuple[int, str, dt.datetime], ProtocolSnapshot] = {}


def _published_key(version: ProtocolVersion) -> tuple[int, str, dt.datetime] | None:
    """What identifies a published version's content for the process-wide caches below (a
    published version never changes; the hash and instant guard against ids a test database
    hands out again); None for a draft, which is read afresh every time."""
    if not (version.is_published and version.source_sha256 and version.published_at):
        return None
    return (version.pk, version.source_sha256, version.published_at)


def protocol_snapshot(*, version: ProtocolVersion) -> ProtocolSnapshot:
    """The engine's view of a stored protocol version: a fixed number of queries for a draft,
    none for a published version seen before by this process (the same snapshot object, so
    the engine's per-snapshot compilation is reused too)."""
    key = _published_key(version)
    if key is None:
        return snapshot_from_document(protocol_document(version=version))
    snapshot = _published_snapshots.get(key)
    if snapshot is None:
        snapshot = snapshot_from_document(protocol_document(version=version))
        if len(_published_snapshots) >= PUBLISHED_SNAPSHOTS_MAX:
            _published_snapshots.clear()
        _published_snapshots[key] = snapshot
    return snapshot


Catalog = tuple[
    dict[str, VisitDefinition], dict[str, ProcedureDefinition], dict[str, MilestoneRule]
]
M = TypeVar("M", bound=Model)
T = TypeVar("T")
_published_catalogs: dict[tuple[int, str, dt.datetime], Catalog] = {}


def _by_code(rows: QuerySet[M]) -> dict[str, M]:
    return {row.code: row for row in rows.select_related("version")}  # type: ignore[attr-defined]


def protocol_catalog(*, version: ProtocolVersion) -> Catalog:
    """A version's visit definitions, procedures and milestone rules by code, each with its
    version joined: three queries for a draft, none for a published version this process has
    read before. Calendar writes point their rows at these; nothing may change them."""
    key = _published_key(version)
    catalog = None if key is None else _published_catalogs.get(key)
    if catalog is None:
        catalog = (
            _by_code(VisitDefinition.objects.filter(version=version)),
            _by_code(ProcedureDefinition.objects.filter(version=version)),
            _by_code(MilestoneRule.objects.filter(version=version)),
        )
        if key is not None:
            if len(_published_catalogs) >= PUBLISHED_SNAPSHOTS_MAX:
                _published_catalogs.clear()
            _published_catalogs[key] = catalog
    return catalog


def visit_status_filters(*, today: dt.date, prefix: str = "") -> dict[str, Q]:
    """What each status-at-a-glance count means, as filters on scheduled visits.

    due: planned, and its window is open today; booked: booked for today or later;
    done, missed: as recorded; out_of_window: done or booked outside its window (a protocol
    deviation); overdue: its window closed (planned) or its booked day passed (booked) with
    nothing recorded.
    """

    def q(**lookups: object) -> Q:
        return Q(**{f"{prefix}{field}": value for field, value in lookups.items()})

    return {
        "due": q(status="planned", window_start__lte=today, window_end__gte=today),
        "booked": q(status="booked", booked_date__gte=today),
        "done": q(status="done"),
        "missed": q(status="missed"),
        "out_of_window": q(status__in=["done", "booked"], deviation_days__isnull=False)
        & ~q(deviation_days=0),
        "overdue": q(status="planned", window_end__lt=today)
        | q(status="booked", booked_date__lt=today),
    }


def visit_glance_status(visit: ScheduledVisit, *, today: dt.date) -> str:
    """One visit's status at a glance, a key of VISIT_GLANCE_LABELS; `today` is the site's.

    Agrees with `visit_status_filters` (a visit counted under a key there gets that key here),
    choosing one key where the counts overlap: overdue before out of window for a booking whose
    day passed unrecorded; out of window before done for a deviation.
    """
    status = visit.status
    if status in ("cancelled", "missed"):
        return status
    off_window = visit.deviation_days not in (None, 0)
    if status == "done":
        return "out_of_window" if off_window else "done"
    if status == "booked":
        if visit.booked_date is not None and visit.booked_date < today:
            return "overdue"
        return "out_of_window" if off_window else "booked"
    if visit.window_end < today:
        return "overdue"
    return "due" if visit.window_start <= today else "upcoming"


@functools.cache
def _every_zone() -> tuple[zoneinfo.ZoneInfo, ...]:
    # Held for the life of the process: ZoneInfo's own cache is weak, and reading the ~600
    # zone files again on every list page would cost tens of milliseconds.
    return tuple(zoneinfo.ZoneInfo(name) for name in sorted(iana_zones()))


def zones_by_today(*, now: dt.datetime | None = None) -> list[tuple[dt.date, list[str]]]:
    """Every IANA zone grouped by its date at this instant, the largest group first.

    There are two groups most of the day (three between about 10:00 and 12:00 UTC, when the
    Pacific's +13/+14 zones have reached tomorrow while -11/-12 are still on yesterday).
    """
    groups: dict[dt.date, list[str]] = {}
    for zone in _every_zone():
        groups.setdefault(zone_today(zone.key, now=now), []).append(zone.key)
    return sorted(groups.items(), key=lambda group: (-len(group[1]), group[0]))


def visit_status_filters_per_site(
    *, zone_field: str, prefix: str = "", now: dt.datetime | None = None
) -> dict[str, Q]:
    """`visit_status_filters` with each site's own today, for lists spanning sites in several
    zones: a Tokyo visit is due on 8 December's list while a New York one is still on the 7th.

    `zone_field` is the lookup of the visit's site zone from the rows being filtered
    (`participant__site__timezone` for visits, `site__timezone` for participants, `timezone`
    for sites). No query is made: a site's zone is an IANA zone (trials.validate_timezone), so
    the zones are grouped by their today here and each group gets its own filter; the largest
    group is "every other zone", which keeps the SQL short.
    """
    groups = zones_by_today(now=now)
    (common_today, _), *others = groups
    listed = [zone for _, zones in others for zone in zones]
    per_today = [
        (Q(**{f"{zone_field}__in": zones}), visit_status_filters(today=today, prefix=prefix))
        for today, zones in others
    ]
    rest = ~Q(**{f"{zone_field}__in": listed}) if listed else Q()
    common = visit_status_filters(today=common_today, prefix=prefix)
    return {
        key: functools.reduce(
            operator.or_,
            [in_zones & filters[key] for in_zones, filters in per_today],
            rest & common[key],
        )
        for key in VISIT_STATUS_KEYS
    }


def participants_with_visit_status(
    *, queryset: QuerySet[Participant], now: dt.datetime | None = None
) -> QuerySet[Participant]:
    """Participants annotated with visits_due, visits_booked, … visits_overdue, each counted
    from the participant's site's today (one query)."""
    # One correlated count per key, not a join grouped by participant: a list page shows 100
    # participants of thousands, and Postgres evaluates these only for the rows it returns
    # (a GROUP BY over the join would count every visit of every participant first).
    filters = visit_status_filters_per_site(zone_field="participant__site__timezone", now=now)
    return queryset.annotate(
        **{
            f"visits_{key}": Coalesce(
                Subquery(
                    ScheduledVisit.objects.filter(participant=OuterRef("pk"))
                    .filter(filters[key])
                    .order_by()
                    .values("participant")
                    .annotate(count=Count("pk"))
                    .values("count"),
                    output_field=IntegerField(),
                ),
                0,
            )
            for key in VISIT_STATUS_KEYS
        }
    )


def sites_with_visit_status(
    *, queryset: QuerySet[Site], now: dt.datetime | None = None
) -> QuerySet[Site]:
    """Sites annotated with the same counts over all their participants' visits, each site
    counting from its own today."""
    filters = visit_status_filters_per_site(
        zone_field="timezone", prefix="participants__visits__", now=now
    )
    return queryset.annotate(
        **{
            f"visits_{key}": Count("participants__visits", filter=filters[key])
            for key in VISIT_STATUS_KEYS
        }
    )


# What a taper week is to a person today: the weeks before the current dose, the current dose
# (the last week whose day has come), and the weeks still ahead.
TAPER_STEP_LABELS = {
    "past": gettext_noop("past"),
    "current": gettext_noop("current"),
    "planned": gettext_noop("planned"),
    "cancelled": gettext_noop("cancelled"),
}


def milestones_with_next_step(
    queryset: QuerySet[ScheduledMilestone],
) -> QuerySet[ScheduledMilestone]:
    """Milestones annotated with `next_step_due`: the due date of the next week of the same
    taper (not cancelled), or None for the last week and for milestones without a dose."""
    later = (
        ScheduledMilestone.objects.filter(
            participant=OuterRef("participant"),
            rule=OuterRef("rule"),
            dose_mg__isnull=False,
            due_date__gt=OuterRef("due_date"),
        )
        .exclude(status=ScheduledMilestone.Status.CANCELLED)
        .order_by("due_date")
        .values("due_date")[:1]
    )
    return queryset.annotate(next_step_due=Subquery(later))


def milestone_step_status(milestone: ScheduledMilestone, *, today: dt.date) -> str:
    """A milestone's status at a glance, a key of TAPER_STEP_LABELS for a taper week (a row
    with a dose), else its stored status; `today` is the site's.

    A taper week is current from its day until the next week's day: the current dose is the
    last week whose due date is today or earlier. Needs `milestones_with_next_step`.
    """
    if milestone.dose_mg is None or milestone.status == ScheduledMilestone.Status.CANCELLED:
        return str(milestone.status)
    if milestone.due_date > today:
        return "planned"
    following = getattr(milestone, "next_step_due", None)
    return "past" if following is not None and following <= today else "current"


def withdrawal_cancellations(
    *, participant: Participant, on: dt.date
) -> tuple[list[ScheduledVisit], list[ScheduledMilestone]]:
    """What withdrawing on `on` cancels: open visits dated (booked, else target) on or after
    it, and planned milestones due on or after it. The withdrawal service and its confirmation
    page both use this, so the page lists exactly what will happen."""
    visits = [
        visit
        for visit in ScheduledVisit.objects.filter(
            participant=participant, status__in=ScheduledVisit.OPEN
        )
        .select_related("visit_definition")
        .order_by("target_date", "id")
        if (visit.booked_date or visit.target_date) >= on
    ]
    milestones = list(
        ScheduledMilestone.objects.filter(
            participant=participant, status=ScheduledMilestone.Status.PLANNED, due_date__gte=on
        )
        .select_related("rule")
        .order_by("due_date", "id")
    )
    return visits, milestones


class PlannedProcedure:
    """A scheduled procedure as its readers read it (the API's ScheduledProcedureOut, an
    event's preparations): its procedure (the definition), status and reason. Not a model
    instance: a 200-visit page carries a thousand procedures, and building (and
    prefetch-wiring, a manager cloned per visit) that many ScheduledProcedure instances was
    the largest cost of an API page and of a reminder batch (bench/api.py,
    bench/reminders.py); these come from one `values_list`."""

    __slots__ = ("not_done_reason", "procedure", "status")

    def __init__(self, procedure: ProcedureDefinition, status: str, not_done_reason: str) -> None:
        self.procedure = procedure
        self.status = status
        self.not_done_reason = not_done_reason


def rows_streamed(rows: QuerySet[Any, T], *, chunk_size: int) -> Generator[T, None, None]:
    """Every row of `rows`, read `chunk_size` at a time (a feed, an export).

    On PostgreSQL through a server-side cursor planned for reading every row. With the default
    cursor_tuple_fraction (0.1) the planner picks the plan quickest to a first row: for one
    site's visits, a walk of the whole trial's visits in date order, keeping the site's. Its
    cost grows with the trial, not the site: a 24,000-visit site feed read in 7 s instead of
    0.4 s, a coordinator's export of 60,000 of 600,000 visits in 1.8 s instead of 1.0 s."""
    if connection.vendor != "postgresql":
        yield from rows.iterator(chunk_size=chunk_size)
        return
    with connection.cursor() as cursor:
        cursor.execute("SET cursor_tuple_fraction = 1.0")
    try:
        yield from rows.iterator(chunk_size=chunk_size)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET cursor_tuple_fraction")


def visits_attach_procedures(
    visits: list[ScheduledVisit], *, known: Iterable[ProcedureDefinition] = ()
) -> list[ScheduledVisit]:
    """Give each visit its procedures in the protocol's order as `PlannedProcedure`s, read
    through `ScheduledVisit.procedures_in_order`, in two queries: the rows, then their
    definitions, each loaded once however many visits carry it (none of those `known`)."""
    by_visit: dict[int, list[PlannedProcedure]] = {visit.pk: [] for visit in visits}
    if by_visit:
        rows = list(
            ScheduledProcedure.objects.filter(visit_id__in=list(by_visit))
            .order_by("procedure__order", "id")
            .values_list("visit_id", "procedure_id", "status", "not_done_reason")
        )
        definitions = {definition.pk: definition for definition in known}
        missing = {row[1] for row in rows} - definitions.keys()
        if missing:
            definitions.update(ProcedureDefinition.objects.in_bulk(missing))
        for visit_id, procedure_id, status, reason in rows:
            by_visit[visit_id].append(PlannedProcedure(definitions[procedure_id], status, reason))
    for visit in visits:
        visit.__dict__[ScheduledVisit.PROCEDURES_IN_ORDER] = by_visit[visit.pk]
    return visits


def rows_share_related(
    rows: Sequence[Model], relation: str, *, known: Iterable[Model] = ()
) -> dict[Any, Model]:
    """Give every row its `relation` (a foreign key), one instance per distinct target: the
    `known` ones as they are, the others read in one query, only if any. What a join or a
    prefetch would give, without an instance per row or a query when all are known.

    Returns every target it had, by key: the `known` of the next batch of rows."""
    targets = {target.pk: target for target in known}
    if not rows:
        return targets
    field = rows[0]._meta.get_field(relation)
    column = field.attname  # type: ignore[union-attr]
    missing = {getattr(row, column) for row in rows} - targets.keys() - {None}
    if missing:
        targets.update(field.related_model._default_manager.order_by().in_bulk(missing))  # type: ignore[union-attr]
    # Cached as a join caches it: the row's key already names the target, so the descriptor's
    # assignment (which sets the key again) would only cost time on large reads.
    for row in rows:
        target = getattr(row, column)
        if target is not None:
            field.set_cached_value(row, targets[target])  # type: ignore[union-attr]
    return targets
