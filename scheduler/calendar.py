"""Keeping a stored calendar equal to what the engine plans, and saying what that changes.

`calendar_diff` plans a participant's calendar from what is known now (optionally with a
proposed change applied) and compares it with the stored rows, without writing anything: that
is the preview a coordinator confirms. `calendar_apply` writes exactly that difference, in bulk,
with one audit entry per changed row. Done, missed and cancelled visits, and done or cancelled
milestones, are history: they never appear in a diff and are never written here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from django.utils import timezone

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from scheduler.bulkwrite import (
    create_with_history,
    keys_delete_with_history,
    keys_update_with_history,
    update_with_history,
    values_create_with_history,
)
from scheduler.engine import (
    ParticipantFacts,
    PlannedMilestone,
    PlannedVisit,
    ProtocolSnapshot,
    plan,
)
from scheduler.engine.types import History, TaperAdjustment
from scheduler.models import (
    BookingHold,
    ScheduledMilestone,
    ScheduledProcedure,
    ScheduledVisit,
)
from scheduler.models import TaperAdjustment as TaperAdjustmentRow
from scheduler.outbox.plan import (
    announce_to_site_systems_many,
    announce_visits_many,
    invitees,
    reminders_sync_many,
)
from scheduler.selectors import protocol_catalog, protocol_snapshot, rows_share_related
from trials.models import ProcedureDefinition, ProtocolVersion, VisitDefinition

VisitKey = tuple[str, int]
Window = tuple[dt.date, dt.date]


@dataclass(frozen=True)
class VisitChange:
    """One visit whose date, window or protocol version would change (or appear/disappear)."""

    visit_code: str
    occurrence: int
    old_target: dt.date | None
    old_window: Window | None
    new_target: dt.date | None
    new_window: Window | None
    booked_date: dt.date | None = None
    old_version: str = ""
    new_version: str = ""

    @property
    def kind(self) -> str:
        if self.old_target is None:
            return "added"
        if self.new_target is None:
            return "cancelled"
        return "moved" if self.old_target != self.new_target else "changed"

    @property
    def out_of_window(self) -> bool:
        """The booked date would fall outside the new window."""
        if self.booked_date is None or self.new_window is None:
            return False
        return not self.new_window[0] <= self.booked_date <= self.new_window[1]


@dataclass(frozen=True)
class MilestoneChange:
    milestone_code: str
    sequence: int
    old_due: dt.date | None
    new_due: dt.date | None
    old_dose_mg: Decimal | None = None
    new_dose_mg: Decimal | None = None
    flag: str = ""

    @property
    def kind(self) -> str:
        if self.old_due is None:
            return "added"
        return "cancelled" if self.new_due is None else "changed"


@dataclass(frozen=True)
class CalendarDiff:
    visits: tuple[VisitChange, ...] = ()
    milestones: tuple[MilestoneChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.visits or self.milestones)


@dataclass
class PendingCalendar:
    """A diff plus what is needed to write it; produced and consumed inside one transaction."""

    participant: Participant
    version: ProtocolVersion
    diff: CalendarDiff
    visit_updates: list[tuple[ScheduledVisit, PlannedVisit | None]] = field(default_factory=list)
    visit_creates: list[PlannedVisit] = field(default_factory=list)
    milestone_updates: list[tuple[ScheduledMilestone, PlannedMilestone | None]] = field(
        default_factory=list
    )
    milestone_creates: list[PlannedMilestone] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClosedVisit:
    """A visit done, missed or cancelled, as re-planning reads it: which visit it is, and the
    day it was done. Re-planning never changes one, so it is not read as a model instance (a
    year into a weekly trial, half of an amendment's rows)."""

    pk: int
    participant_id: int
    visit_definition: VisitDefinition
    occurrence: int
    status: str
    target_date: dt.date
    actual_date: dt.date | None
    booked_date: None = None
    is_open: bool = False

    # The columns it is made of, in the order of its fields.
    READ: ClassVar[tuple[str, ...]] = (
        "id",
        "participant_id",
        "visit_definition_id",
        "occurrence",
        "status",
        "target_date",
        "actual_date",
    )


@dataclass
class StoredCalendar:
    """What re-planning reads of one participant: their scheduled visits (by date; open ones
    as model instances, the others as `ClosedVisit`s) and milestones, anchors, taper
    decisions and arm."""

    visits: list[ScheduledVisit | ClosedVisit] = field(default_factory=list)
    milestones: list[ScheduledMilestone] = field(default_factory=list)
    anchors: dict[str, dt.date] = field(default_factory=dict)
    adjustments: dict[tuple[str, int], TaperAdjustment] = field(default_factory=dict)
    arm: str | None = None


def stored_calendars(
    participants: Sequence[Participant], *, versions: Sequence[ProtocolVersion] = ()
) -> dict[int, StoredCalendar]:
    """`StoredCalendar` of each participant, by id: five queries however many they are (a
    site's amendment reads its movers in chunks), and up to four more for the definitions
    and rules of visits and milestones of other `versions` than those given (and their
    versions)."""
    stored = {participant.pk: StoredCalendar() for participant in participants}
    # One query for both kinds: open visits become model instances (re-planning writes them),
    # the others `ClosedVisit`s.
    columns = [f.attname for f in ScheduledVisit._meta.concrete_fields]
    status_at = columns.index("status")
    closed_at = [columns.index(name) for name in ClosedVisit.READ]
    visits: list[ScheduledVisit] = []
    closed: list[list[Any]] = []  # ClosedVisit.READ of each
    scheduled = ScheduledVisit.objects.filter(
        participant__in=stored, visit_definition__isnull=False
    ).order_by()
    for values in scheduled.values_list(*columns):
        if values[status_at] in ScheduledVisit.OPEN:
            visits.append(ScheduledVisit.from_db(scheduled.db, columns, values))
        else:
            closed.append([values[i] for i in closed_at])
    # Ordered by their own columns: the models' default orders join the participant and the
    # trial (or the visit) for every row read.
    milestones = list(
        ScheduledMilestone.objects.filter(participant__in=stored).order_by("due_date", "id")
    )
    # Each definition, rule and version once, shared by every row that names it, instead of
    # a joined copy per row: an amendment reads tens of thousands of rows of a few dozen.
    catalogs = [protocol_catalog(version=version) for version in versions]
    definitions: dict[int, VisitDefinition] = {d.pk: d for c in catalogs for d in c[0].values()}
    rows_share_related(visits, "visit_definition", known=definitions.values())
    rows_share_related(milestones, "rule", known=[r for c in catalogs for r in c[2].values()])
    # Those not in a catalog given were read just now, without their version (one query for
    # definitions and rules alike: both name it by the same foreign key, `version`).
    field = VisitDefinition._meta.get_field("version")
    rows_share_related(
        [
            row
            for rows in (
                {visit.visit_definition_id: visit.visit_definition for visit in visits},
                {milestone.rule_id: milestone.rule for milestone in milestones},
            )
            for row in rows.values()
            if row is not None and not field.is_cached(row)
        ],
        "version",
    )
    # Closed visits share the same definitions; one query for those only they name.
    for visit in visits:
        if visit.visit_definition is not None:
            definitions[visit.visit_definition.pk] = visit.visit_definition
    missing = {row[2] for row in closed} - definitions.keys()
    if missing:
        definitions.update(VisitDefinition.objects.in_bulk(missing))
    rows: list[ScheduledVisit | ClosedVisit] = list(visits)
    rows += [
        ClosedVisit(pk, participant_id, definitions[definition], occurrence, status, day, done)
        for pk, participant_id, definition, occurrence, status, day, done in closed
    ]
    rows.sort(key=lambda row: (row.target_date, row.pk))  # as they were read before
    for row in rows:
        stored[row.participant_id].visits.append(row)
    for milestone in milestones:
        stored[milestone.participant_id].milestones.append(milestone)
    for participant_id, code, date in (
        ParticipantAnchor.objects.filter(participant__in=stored)
        .order_by()
        .values_list("participant_id", "code", "date")
    ):
        stored[participant_id].anchors[code] = date
    for decision in TaperAdjustmentRow.objects.filter(participant__in=stored).order_by():
        stored[decision.participant_id].adjustments[(decision.milestone_code, decision.week)] = (
            TaperAdjustment(
                decision.kind,  # type: ignore[arg-type]
                decision.dose_mg,
            )
        )
    for participant_id, arm in (
        TreatmentAssignment.objects.filter(participant__in=stored)
        .order_by("pk")
        .values_list("participant_id", "arm__code")
    ):
        if stored[participant_id].arm is None:
            stored[participant_id].arm = arm
    return stored


def calendar_diff(
    participant: Participant,
    *,
    version: ProtocolVersion | None = None,
    visit_dates: Mapping[VisitKey, dt.date | None] | None = None,
    anchors: Mapping[str, dt.date] | None = None,
    taper_adjustments: Mapping[tuple[str, int], TaperAdjustment | None] | None = None,
    not_before: dt.date | None = None,
    snapshot: ProtocolSnapshot | None = None,
    stored: StoredCalendar | None = None,
    amendment: bool = False,
) -> PendingCalendar:
    """What re-planning would change, with the given facts overriding the stored ones.

    `not_before` limits the change to visits and milestones on or after that date (protocol
    amendments): open visits before it keep their dates and their protocol version.
    `amendment`: this is a move onto `version`. Any other re-plan leaves alone the open rows
    an earlier move left on their own version (dated before its move date): they keep their
    dates and version for good, not just until the next booking re-plans the calendar.
    `stored`: the participant's, when the caller read many at once (`stored_calendars`).
    """
    version = version or participant.protocol_version
    if stored is None:
        stored = stored_calendars([participant], versions=[version])[participant.pk]
    rows = stored.visits
    known: dict[VisitKey, dt.date] = {}
    for row in rows:
        key = (row.visit_definition.code, row.occurrence)  # type: ignore[union-attr]
        if row.status == ScheduledVisit.Status.DONE and row.actual_date:
            known[key] = row.actual_date
        elif row.status == ScheduledVisit.Status.BOOKED and row.booked_date:
            known[key] = row.booked_date
    for key, value in (visit_dates or {}).items():
        if value is None:
            known.pop(key, None)
        else:
            known[key] = value

    anchor_dates = {**stored.anchors, **(anchors or {})}
    adjustments = dict(stored.adjustments)
    for key, adjustment in (taper_adjustments or {}).items():
        if adjustment is None:
            adjustments.pop(key, None)
        else:
            adjustments[key] = adjustment

    calendar = plan(
        snapshot or protocol_snapshot(version=version),
        ParticipantFacts(anchors=anchor_dates, weight_kg=participant.weight_kg, arm=stored.arm),
        History(visit_dates=known, taper_adjustments=adjustments),
    )
    pending = PendingCalendar(participant=participant, version=version, diff=CalendarDiff())
    keep_other_versions = not amendment
    visit_changes = _visit_changes(pending, rows, calendar.visits, not_before, keep_other_versions)
    milestone_changes = _milestone_changes(
        pending, stored.milestones, calendar.milestones, not_before, keep_other_versions
    )
    pending.diff = CalendarDiff(tuple(visit_changes), tuple(milestone_changes))
    return pending


def _visit_changes(
    pending: PendingCalendar,
    rows: list[ScheduledVisit | ClosedVisit],
    planned_visits: tuple[PlannedVisit, ...],
    not_before: dt.date | None,
    keep_other_versions: bool,
) -> list[VisitChange]:
    by_key = {(row.visit_definition.code, row.occurrence): row for row in rows}  # type: ignore[union-attr]
    label = pending.version.label
    version_id = pending.version.pk
    changes: list[VisitChange] = []
    planned_keys = set()
    for planned in planned_visits:
        key = (planned.visit_code, planned.occurrence)
        planned_keys.add(key)
        row = by_key.get(key)
        if row is not None and (isinstance(row, ClosedVisit) or not row.is_open):
            continue
        if row is not None and keep_other_versions and row.protocol_version_id != version_id:
            continue  # left on its version by an earlier move
        frozen_date = row.target_date if row is not None else planned.target
        if not_before is not None and frozen_date < not_before:
            continue
        new_window = (planned.window_start, planned.window_end)
        if row is None:
            changes.append(
                VisitChange(
                    planned.visit_code,
                    planned.occurrence,
                    None,
                    None,
                    planned.target,
                    new_window,
                    new_version=label,
                )
            )
            pending.visit_creates.append(planned)
            continue
        old_window = (row.window_start, row.window_end)
        old_label = row.visit_definition.version.label  # type: ignore[union-attr]
        if (row.target_date, old_window, old_label, row.estimated) == (
            planned.target,
            new_window,
            label,
            planned.estimated,
        ):
            continue
        changes.append(
            VisitChange(
                planned.visit_code,
                planned.occurrence,
                row.target_date,
                old_window,
                planned.target,
                new_window,
                row.booked_date,
                old_label,
                label,
            )
        )
        pending.visit_updates.append((row, planned))
    for key, row in by_key.items():
        if key in planned_keys or isinstance(row, ClosedVisit) or not row.is_open:
            continue
        if not_before is not None and row.target_date < not_before:
            continue
        if keep_other_versions and row.protocol_version_id != version_id:
            continue
        changes.append(
            VisitChange(
                key[0],
                key[1],
                row.target_date,
                (row.window_start, row.window_end),
                None,
                None,
                row.booked_date,
                row.visit_definition.version.label,  # type: ignore[union-attr]
                "",
            )
        )
        pending.visit_updates.append((row, None))
    changes.sort(
        key=lambda c: (c.new_target or c.old_target or dt.date.min, c.visit_code, c.occurrence)
    )
    return changes


def _milestone_changes(
    pending: PendingCalendar,
    stored: list[ScheduledMilestone],
    planned_milestones: tuple[PlannedMilestone, ...],
    not_before: dt.date | None,
    keep_other_versions: bool,
) -> list[MilestoneChange]:
    rows = {(row.rule.code, row.sequence): row for row in stored}
    changes: list[MilestoneChange] = []
    planned_keys = set()
    for planned in planned_milestones:
        key = (planned.milestone_code, planned.sequence)
        planned_keys.add(key)
        row = rows.get(key)
        if row is not None and row.status != ScheduledMilestone.Status.PLANNED:
            continue
        if (
            row is not None
            and keep_other_versions
            and row.protocol_version_id != pending.version.pk
        ):
            continue  # left on its version by an earlier move
        if not_before is not None and (row.due_date if row else planned.due) < not_before:
            continue
        if row is None:
            changes.append(
                MilestoneChange(
                    key[0], key[1], None, planned.due, None, planned.dose_mg, planned.flag
                )
            )
            pending.milestone_creates.append(planned)
            continue
        if (row.due_date, row.dose_mg, row.flag, row.rule.version_id, row.estimated) == (
            planned.due,
            planned.dose_mg,
            planned.flag,
            pending.version.id,
            planned.estimated,
        ):
            continue
        changes.append(
            MilestoneChange(
                key[0],
                key[1],
                row.due_date,
                planned.due,
                row.dose_mg,
                planned.dose_mg,
                planned.flag,
            )
        )
        pending.milestone_updates.append((row, planned))
    for key, row in rows.items():
        if key in planned_keys or row.status != ScheduledMilestone.Status.PLANNED:
            continue
        if not_before is not None and row.due_date < not_before:
            continue
        if keep_other_versions and row.protocol_version_id != pending.version.pk:
            continue
        changes.append(MilestoneChange(key[0], key[1], row.due_date, None, row.dose_mg, None))
        pending.milestone_updates.append((row, None))
    changes.sort(
        key=lambda c: (c.new_due or c.old_due or dt.date.min, c.milestone_code, c.sequence)
    )
    return changes


def deviation_days(day: dt.date, window_start: dt.date, window_end: dt.date) -> int:
    """Days outside [start, end]: negative when early, positive when late, 0 inside."""
    if day < window_start:
        return (day - window_start).days
    if day > window_end:
        return (day - window_end).days
    return 0


def calendar_apply(
    pending: PendingCalendar, *, by: Any, reason: str, sync_reminders: bool = True
) -> CalendarDiff:
    """Write a pending calendar diff: one audit entry per changed row, all in bulk."""
    calendar_apply_many([pending], by=by, reason=reason, sync_reminders=sync_reminders)
    return pending.diff


VISIT_FIELDS = [
    "status",
    "reason",
    "visit_definition",
    "protocol_version",
    "target_date",
    "window_start",
    "window_end",
    "estimated",
    "deviation_days",
    "version",
    "ical_sequence",
]
MILESTONE_FIELDS = [
    "status",
    "rule",
    "protocol_version",
    "due_date",
    "dose_mg",
    "flag",
    "estimated",
    "ical_sequence",
]


# What a new visit is given (in this order); the rest are a new visit's defaults.
NEW_VISIT_FIELDS = [
    "participant",
    "visit_definition",
    "occurrence",
    "protocol_version",
    "target_date",
    "window_start",
    "window_end",
    "estimated",
]


def calendar_apply_many(
    pendings: Sequence[PendingCalendar], *, by: Any, reason: str, sync_reminders: bool = True
) -> set[int]:
    """`calendar_apply` for the diffs of many participants onto one protocol version (a site's
    amendment): each table's changes for all of them in one statement, with their history;
    the outbox per participant. `sync_reminders=False`: the caller re-plans the reminders
    itself (`reminders_sync_many`), in the same transaction.

    Returns the visits whose reminders the change may have changed: those added, and those
    whose code, status, window or procedures it changed (not those only re-pointed at the
    same visit of a new version)."""
    if not pendings:
        return set()
    version = pendings[0].version
    if any(pending.version.pk != version.pk for pending in pendings):
        raise ValueError("calendar_apply_many takes diffs onto one protocol version")
    definitions, procedures, rules = protocol_catalog(version=version)

    updated_visits: dict[int, list[ScheduledVisit]] = {}
    repointed: list[tuple[ScheduledVisit, PlannedVisit]] = []
    reminded: set[int] = set()  # what the return value says
    for pending in pendings:
        for row, planned in pending.visit_updates:
            facts = _reminder_facts(row)
            if planned is None:
                row.status = ScheduledVisit.Status.CANCELLED
                row.reason = reason
            else:
                if row.visit_definition.version_id != version.id:  # type: ignore[union-attr]
                    row.visit_definition = definitions[planned.visit_code]
                    row.protocol_version = version
                    repointed.append((row, planned))
                row.target_date = planned.target
                row.window_start, row.window_end = planned.window_start, planned.window_end
                row.estimated = planned.estimated
                if row.booked_date is not None:
                    row.deviation_days = deviation_days(
                        row.booked_date, *(planned.window_start, planned.window_end)
                    )
            row.version += 1
            row.ical_sequence += 1
            updated_visits.setdefault(pending.participant.pk, []).append(row)
            if _reminder_facts(row) != facts:
                reminded.add(row.pk)
    all_updated = [row for rows in updated_visits.values() for row in rows]
    if all_updated:
        update_with_history(all_updated, ScheduledVisit, VISIT_FIELDS, by=by, reason=reason)
        # A visit an amendment drops frees what its booking held.
        BookingHold.objects.filter(
            visit__in=[r for r in all_updated if r.status == ScheduledVisit.Status.CANCELLED]
        ).delete()
    changed = [
        (pending.participant, updated_visits.get(pending.participant.pk, []))
        for pending in pendings
    ]
    announce_visits_many(changed)
    # Site systems hear of visits this change moved (or re-planned) and cancelled.
    for event, cancelled in (("visit.moved", False), ("visit.cancelled", True)):
        announce_to_site_systems_many(
            event,
            [
                (
                    participant,
                    [r for r in rows if (r.status == ScheduledVisit.Status.CANCELLED) == cancelled],
                )
                for participant, rows in changed
            ],
        )
    if repointed:
        reminded |= _procedures_follow_version(repointed, procedures, by=by, reason=reason)

    # New visits and procedures go in as plain values (a cohort's are hundreds of thousands
    # of rows); only the visits of participants sent invites are read back as instances.
    planned_new = [(pending, p) for pending in pendings for p in pending.visit_creates]
    created = values_create_with_history(
        ScheduledVisit,
        NEW_VISIT_FIELDS,
        [
            (
                pending.participant.pk,
                definitions[p.visit_code].pk,
                p.occurrence,
                version.pk,
                p.target,
                p.window_start,
                p.window_end,
                p.estimated,
            )
            for pending, p in planned_new
        ],
        by=by,
        reason=reason,
    )
    reminded.update(created)
    now = timezone.now()
    invited = invitees(
        [pending.participant for pending in pendings if pending.visit_creates], now=now
    )
    if invited:
        created_of: dict[int, list[ScheduledVisit]] = {}
        for visit in ScheduledVisit.objects.filter(
            pk__in=[
                key
                for key, (pending, _) in zip(created, planned_new, strict=True)
                if pending.participant.pk in invited
            ]
        ).order_by("pk"):
            created_of.setdefault(visit.participant_id, []).append(visit)
        announce_visits_many(
            [
                (pending.participant, created_of.get(pending.participant.pk, []))
                for pending in pendings
            ],
            now=now,
            todays=invited,
        )
    values_create_with_history(
        ScheduledProcedure,
        ["visit", "procedure"],
        [
            (key, procedures[code].pk)
            for key, (_, planned) in zip(created, planned_new, strict=True)
            for code in planned.procedures
        ],
        by=by,
        reason=reason,
    )

    updated_milestones: list[ScheduledMilestone] = []
    for pending in pendings:
        for milestone, planned_milestone in pending.milestone_updates:
            if planned_milestone is None:
                milestone.status = ScheduledMilestone.Status.CANCELLED
            else:
                milestone.rule = rules[planned_milestone.milestone_code]
                milestone.protocol_version = version
                milestone.due_date = planned_milestone.due
                milestone.dose_mg = planned_milestone.dose_mg
                milestone.flag = planned_milestone.flag
                milestone.estimated = planned_milestone.estimated
            milestone.ical_sequence += 1
            updated_milestones.append(milestone)
    if updated_milestones:
        update_with_history(
            updated_milestones, ScheduledMilestone, MILESTONE_FIELDS, by=by, reason=reason
        )
    create_with_history(
        [
            ScheduledMilestone(
                participant=pending.participant,
                rule=rules[m.milestone_code],
                sequence=m.sequence,
                protocol_version=version,
                due_date=m.due,
                dose_mg=m.dose_mg,
                estimated=m.estimated,
                flag=m.flag,
            )
            for pending in pendings
            for m in pending.milestone_creates
        ],
        ScheduledMilestone,
        by=by,
        reason=reason,
    )
    if sync_reminders:
        reminders_sync_many([pending.participant for pending in pendings])
    return reminded


def _reminder_facts(row: ScheduledVisit) -> tuple[Any, ...]:
    """What of a stored visit its reminders depend on, apart from its procedures
    (`scheduler.engine.reminders.VisitFacts`)."""
    code = row.visit_definition.code if row.visit_definition is not None else None
    return (code, row.status, row.window_start, row.window_end, row.booked_start)


def _procedures_follow_version(
    repointed: list[tuple[ScheduledVisit, PlannedVisit]],
    procedures: dict[str, ProcedureDefinition],
    *,
    by: Any,
    reason: str,
) -> set[int]:
    """Planned procedures of visits moved to a new protocol version follow its schedule of
    activities: kept ones point at the new definitions, new ones are added, dropped ones go.
    Returns the visits that gained or lost a procedure."""
    # Keys and codes, not model instances: an amendment re-points tens of thousands.
    existing: dict[int, dict[str, int]] = {}
    for pk, visit_id, code in (
        ScheduledProcedure.objects.filter(
            visit__in=[row for row, _ in repointed], status=ScheduledProcedure.Status.PLANNED
        )
        .order_by()  # in no order: the model's joins the visit, participant and trial
        .values_list("pk", "visit_id", "procedure__code")
    ):
        existing.setdefault(visit_id, {})[code] = pk
    kept: list[int] = []
    kept_as: list[int] = []  # the new version's definition of each kept one
    added: list[ScheduledProcedure] = []
    dropped: list[int] = []
    changed: set[int] = set()
    for row, planned in repointed:
        current = existing.get(row.pk, {})
        for code in planned.procedures:
            if code in current:
                kept.append(current.pop(code))
                kept_as.append(procedures[code].pk)
            else:
                added.append(ScheduledProcedure(visit=row, procedure=procedures[code]))
                changed.add(row.pk)
        if current:
            changed.add(row.pk)
            dropped += current.values()
    keys_delete_with_history(ScheduledProcedure, dropped, by=by, reason=reason)
    keys_update_with_history(ScheduledProcedure, kept, {"procedure": kept_as}, by=by, reason=reason)
    create_with_history(added, ScheduledProcedure, by=by, reason=reason)
    return changed
