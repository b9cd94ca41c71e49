"""Writes and use cases of the trials app: importing and exporting protocol versions."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from trials.models import (
    Anchor,
    Arm,
    EligibilityCriterion,
    Epoch,
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    ReminderRule,
    ScheduledActivity,
    Trial,
    TrialRegistration,
    VisitDefinition,
)
from trials.protocol_file import (
    Activity,
    AnchorRef,
    AnchorSection,
    ArmSection,
    Blinding,
    CheckedAttribute,
    CriterionCheck,
    CriterionKind,
    CriterionSection,
    EpochSection,
    MilestoneKind,
    MilestoneSection,
    PlanStep,
    ProcedureSection,
    ProtocolDocument,
    Registration,
    Registry,
    ReminderEvent,
    ReminderSection,
    Repeat,
    StaffNeed,
    Taper,
    TrialSection,
    VersionSection,
    VisitAnchor,
    VisitMode,
    VisitSection,
    Window,
    dump_protocol,
    parse_protocol,
)
from trials.protocol_limits import DATABASE_CHECKS

BLINDING_WORDS = {"open": "open-label", "single": "single-blind", "double": "double-blind"}


class ProtocolImportError(ValueError):
    """The file is valid but cannot be imported (e.g. that version is already published)."""


# ProtocolVersion.source_name: a longer path keeps its end, the part that names the file.
SOURCE_NAME_LENGTH = ProtocolVersion._meta.get_field("source_name").max_length or 200


def source_name(source: str) -> str:
    """The file's name as stored: its last SOURCE_NAME_LENGTH characters, marked when cut."""
    if len(source) <= SOURCE_NAME_LENGTH:
        return source
    return "…" + source[-(SOURCE_NAME_LENGTH - 1) :]


@transaction.atomic
def protocol_import(*, text: str | bytes, source: str) -> ProtocolVersion:
    """Validate a protocol file and store it as a new version of its trial.

    `text` is the file's text or its bytes (UTF-8 only). Every problem in the file is reported
    at once (ProtocolFileError: the file, the path in it and the line), including a value the
    database could not hold and a registry number another trial has, and nothing is written.
    A published version is immutable: importing a label that exists is refused, except a draft,
    which is replaced as a whole. The trial's own description follows the newest file.
    """
    document = parse_protocol(text, source=source, checks=DATABASE_CHECKS)
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    current = Trial.objects.filter(code=document.trial.code).first()
    if current is not None and current.blinding != document.trial.blinding.value:
        # Unblinding is an unblinded role's decision with a reason, audited; a file must not
        # do it on the side.
        raise ProtocolImportError(
            f"{source}: trial.blinding: {current.code} is {BLINDING_WORDS[current.blinding]} "
            f"and this file says {document.trial.blinding.value!r}; a trial's blinding is "
            "changed only by an unblinded role, with a reason, not by importing a file"
        )
    trial = _trial_upsert(document.trial)
    existing = ProtocolVersion.objects.filter(trial=trial, label=document.version.label).first()
    if existing is not None:
        if existing.is_published:
            raise ProtocolImportError(
                f"{source}: version.label: {trial.code} version {existing.label!r} is already "
                "published and cannot change; an amendment needs a new version label"
            )
        _version_delete(existing)
    is_published = document.version.status == "published"
    version = ProtocolVersion.objects.create(
        trial=trial,
        label=document.version.label,
        status=document.version.status,
        version_date=document.version.date,
        published_at=timezone.now() if is_published else None,
        source_name=source_name(source),
        source_sha256=hashlib.sha256(raw).hexdigest(),
        default_reminders=document.reminders is None,
    )
    _version_parts_create(version, document)
    return version


@transaction.atomic
def protocol_version_publish(*, version: ProtocolVersion, by: Any = None) -> ProtocolVersion:
    """Publish a draft version; from then on it is immutable and participants can be moved
    onto it. Publishing a published version is refused rather than silently ignored."""
    version = ProtocolVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_published:
        raise ProtocolImportError(f"{version} is already published")
    version.status = ProtocolVersion.Status.PUBLISHED
    version.published_at = timezone.now()
    version._history_user = by  # type: ignore[attr-defined]
    version._change_reason = "published"  # type: ignore[attr-defined]
    version.save(update_fields=["status", "published_at"])
    return version


def _trial_upsert(section: TrialSection) -> Trial:
    trial, _ = Trial.objects.update_or_create(
        code=section.code,
        defaults={
            "title": section.title,
            "title_ja": section.title_ja or "",
            "phase": section.phase,
            "sponsor": section.sponsor,
            "blinding": section.blinding.value,
            "conditions": list(section.conditions),
        },
    )
    known = set(trial.registrations.values_list("registry", "identifier"))
    TrialRegistration.objects.bulk_create(
        [
            TrialRegistration(trial=trial, registry=r.registry.value, identifier=r.identifier)
            for r in section.registrations
            if (r.registry.value, r.identifier) not in known
        ]
    )
    return trial


def _version_delete(version: ProtocolVersion) -> None:
    # Visit definitions point at each other (PROTECT), so unlink them before deleting.
    VisitDefinition.objects.filter(version=version).update(anchor_visit=None, anchor_code="-")
    MilestoneRule.objects.filter(version=version).delete()
    ReminderRule.objects.filter(version=version).delete()
    ScheduledActivity.objects.filter(visit__version=version).delete()
    VisitDefinition.objects.filter(version=version).delete()
    version.delete()


def _anchor_fields(ref: AnchorRef, visits: dict[str, VisitDefinition]) -> dict[str, Any]:
    if isinstance(ref, str):
        return {"anchor_code": ref, "anchor_visit": None, "anchor_occurrence": None}
    return {
        "anchor_code": "",
        "anchor_visit": visits[ref.visit],
        "anchor_occurrence": ref.occurrence,
    }


def _plan_rows(visit: VisitSection) -> list[dict[str, Any]] | None:
    # Checked by parse_protocol (every procedure of the visit once, and the layout fits the
    # visit's duration_minutes); stored as the file said it.
    steps = visit.plan_steps()
    if steps is None:
        return None
    return [step.model_dump(mode="json") for step in steps]


def _plan_section(rows: list[dict[str, Any]] | None) -> tuple[str | PlanStep, ...] | None:
    if rows is None:
        return None
    steps = [PlanStep.model_validate(row) for row in rows]
    return tuple(
        step.procedure if step.relation == "after" and not step.overlap_minutes else step
        for step in steps
    )


def _version_parts_create(version: ProtocolVersion, doc: ProtocolDocument) -> None:
    Anchor.objects.bulk_create(
        Anchor(
            version=version,
            order=i,
            code=a.code,
            name=a.name,
            name_ja=a.name_ja or "",
            relative_to=a.relative_to or "",
            min_days=a.min_days,
            max_days=a.max_days,
            default_days=a.default_days,
        )
        for i, a in enumerate(doc.anchors)
    )
    arms = {
        arm.code: arm
        for arm in Arm.objects.bulk_create(
            Arm(version=version, order=i, code=a.code, name=a.name, description=a.description)
            for i, a in enumerate(doc.arms)
        )
    }
    epochs = {
        epoch.code: epoch
        for epoch in Epoch.objects.bulk_create(
            Epoch(version=version, order=i, code=e.code, name=e.name, name_ja=e.name_ja or "")
            for i, e in enumerate(doc.epochs)
        )
    }
    procedures = {
        p.code: p
        for p in ProcedureDefinition.objects.bulk_create(
            ProcedureDefinition(
                version=version,
                order=i,
                code=p.code,
                name=p.name,
                name_ja=p.name_ja or "",
                duration_minutes=p.duration_minutes,
                preparation=p.preparation,
                preparation_ja=p.preparation_ja or "",
                resource=p.resource,
                resource_count=p.resource_count,
                staff_kind=p.staff.kind if p.staff else "",
                staff_count=p.staff.count if p.staff else 1,
            )
            for i, p in enumerate(doc.procedures)
        )
    }

    # A visit anchored to another visit needs that visit's id: every visit is inserted at once,
    # those anchored to a visit with a placeholder anchor code (the one-anchor check holds),
    # then given their anchor visit in one batched update. A few queries whatever the depth of
    # the chains (a 10,000-deep one included).
    pending = "(anchor visit set below)"
    created = VisitDefinition.objects.bulk_create(
        VisitDefinition(
            version=version,
            order=i,
            code=v.code,
            name=v.name,
            name_ja=v.name_ja or "",
            epoch=epochs[v.epoch],
            offset_days=v.offset_days,
            window_before_days=v.window.before,
            window_after_days=v.window.after,
            repeat_every_days=v.repeat.every_days if v.repeat else None,
            repeat_count=v.count,
            duration_minutes=v.duration_minutes,
            mode=v.mode.value,
            unscheduled_allowed=v.unscheduled_allowed,
            plan=_plan_rows(v),
            anchor_code=v.anchor if isinstance(v.anchor, str) else pending,
        )
        for i, v in enumerate(doc.visits)
    )
    visits: dict[str, VisitDefinition] = {visit.code: visit for visit in created}
    chained = []
    for v in doc.visits:
        if not isinstance(v.anchor, str):
            visit = visits[v.code]
            for name, value in _anchor_fields(v.anchor, visits).items():
                setattr(visit, name, value)
            chained.append(visit)
    VisitDefinition.objects.bulk_update(
        chained, ["anchor_code", "anchor_visit", "anchor_occurrence"], batch_size=500
    )

    VisitDefinition.arms.through.objects.bulk_create(
        VisitDefinition.arms.through(visitdefinition=visits[v.code], arm=arms[arm])
        for v in doc.visits
        for arm in v.arms
    )
    ScheduledActivity.objects.bulk_create(
        ScheduledActivity(
            visit=visits[v.code],
            procedure=procedures[a.procedure],
            order=order,
            occurrences=list(a.occurrences) if a.occurrences is not None else None,
        )
        for v in doc.visits
        for order, a in enumerate(v.activities())
    )
    MilestoneRule.objects.bulk_create(
        MilestoneRule(
            version=version,
            order=i,
            code=m.code,
            name=m.name,
            name_ja=m.name_ja or "",
            kind=m.kind.value,
            offset_days=m.offset_days,
            participant_facing=m.participant_facing,
            taper=m.taper.model_dump(mode="json") if m.taper else None,
            **_anchor_fields(m.anchor, visits),
        )
        for i, m in enumerate(doc.milestones)
    )
    ReminderRule.objects.bulk_create(
        ReminderRule(
            version=version,
            order=i,
            code=r.code,
            event=r.event.value,
            days=r.days,
            at=r.at,
            channels=[c.value for c in r.channels],
            visit_codes=list(r.visits),
            procedure_codes=list(r.procedures),
        )
        for i, r in enumerate(doc.reminders or ())
    )
    EligibilityCriterion.objects.bulk_create(
        EligibilityCriterion(
            version=version,
            order=i,
            code=c.code,
            kind=c.kind.value,
            text=c.text,
            check_attribute=c.check.attribute.value if c.check else "",
            check_min=c.check.min if c.check else None,
            check_max=c.check.max if c.check else None,
            check_min_inclusive=c.check.min_inclusive if c.check else True,
            check_max_inclusive=c.check.max_inclusive if c.check else True,
        )
        for i, c in enumerate(doc.eligibility)
    )


# ----------------------------------------------------------------------------------------
# Export: the database back into the file format (and so into engine snapshots).


def protocol_document(*, version: ProtocolVersion) -> ProtocolDocument:
    """Rebuild the validated document of a stored version, in a fixed number of queries."""
    trial = version.trial
    visits = list(
        VisitDefinition.objects.filter(version=version)
        .select_related("epoch", "anchor_visit")
        .prefetch_related("arms", "activities__procedure")
        .order_by("order")
    )

    def anchor_ref(part: VisitDefinition | MilestoneRule) -> AnchorRef:
        if part.anchor_visit is not None:
            return VisitAnchor(visit=part.anchor_visit.code, occurrence=part.anchor_occurrence)
        return part.anchor_code

    def visit_section(v: VisitDefinition) -> VisitSection:
        activities: list[str | Activity] = [
            a.procedure.code
            if a.occurrences is None
            else Activity(procedure=a.procedure.code, occurrences=tuple(a.occurrences))
            for a in sorted(v.activities.all(), key=lambda a: a.order)
        ]
        return VisitSection(
            code=v.code,
            name=v.name,
            name_ja=v.name_ja or None,
            epoch=v.epoch.code,
            anchor=anchor_ref(v),
            offset_days=v.offset_days,
            window=Window(before=v.window_before_days, after=v.window_after_days),
            repeat=(
                Repeat(every_days=v.repeat_every_days, count=v.repeat_count)
                if v.repeat_every_days
                else None
            ),
            duration_minutes=v.duration_minutes,
            mode=VisitMode(v.mode),
            arms=tuple(arm.code for arm in sorted(v.arms.all(), key=lambda a: a.order)),
            unscheduled_allowed=v.unscheduled_allowed,
            procedures=tuple(activities),
            plan=_plan_section(v.plan),
        )

    def criterion_section(c: EligibilityCriterion) -> CriterionSection:
        check = None
        if c.check_attribute:
            check = CriterionCheck(
                attribute=CheckedAttribute(c.check_attribute),
                min=_normal(c.check_min),
                max=_normal(c.check_max),
                min_inclusive=c.check_min_inclusive,
                max_inclusive=c.check_max_inclusive,
            )
        return CriterionSection(code=c.code, kind=CriterionKind(c.kind), text=c.text, check=check)

    reminders = tuple(
        ReminderSection(
            code=r.code,
            event=ReminderEvent(r.event),
            days=r.days,
            at=r.at,
            channels=tuple(r.channels),
            visits=tuple(r.visit_codes),
            procedures=tuple(r.procedure_codes),
        )
        for r in ReminderRule.objects.filter(version=version).order_by("order")
    )
    return ProtocolDocument(
        format=1,
        trial=TrialSection(
            code=trial.code,
            title=trial.title,
            title_ja=trial.title_ja or None,
            phase=trial.phase,  # type: ignore[arg-type]  # validated on import
            sponsor=trial.sponsor,
            blinding=Blinding(trial.blinding),
            registrations=tuple(
                Registration(registry=Registry(r.registry), identifier=r.identifier)
                for r in trial.registrations.order_by("id")
            ),
            conditions=tuple(trial.conditions),
        ),
        version=VersionSection(
            label=version.label,
            status=version.status,  # type: ignore[arg-type]
            date=version.version_date,
        ),
        anchors=tuple(
            AnchorSection(
                code=a.code,
                name=a.name,
                name_ja=a.name_ja or None,
                relative_to=a.relative_to or None,
                min_days=a.min_days,
                max_days=a.max_days,
                default_days=a.default_days,
            )
            for a in Anchor.objects.filter(version=version).order_by("order")
        ),
        arms=tuple(
            ArmSection(code=a.code, name=a.name, description=a.description)
            for a in Arm.objects.filter(version=version).order_by("order")
        ),
        epochs=tuple(
            EpochSection(code=e.code, name=e.name, name_ja=e.name_ja or None)
            for e in Epoch.objects.filter(version=version).order_by("order")
        ),
        procedures=tuple(
            ProcedureSection(
                code=p.code,
                name=p.name,
                name_ja=p.name_ja or None,
                duration_minutes=p.duration_minutes,
                preparation=p.preparation,
                preparation_ja=p.preparation_ja or None,
                resource=p.resource,
                resource_count=p.resource_count,
                staff=StaffNeed(kind=p.staff_kind, count=p.staff_count) if p.staff_kind else None,
            )
            for p in ProcedureDefinition.objects.filter(version=version).order_by("order")
        ),
        visits=tuple(visit_section(v) for v in visits),
        milestones=tuple(
            MilestoneSection(
                code=m.code,
                name=m.name,
                name_ja=m.name_ja or None,
                kind=MilestoneKind(m.kind),
                anchor=anchor_ref(m),
                offset_days=m.offset_days,
                participant_facing=m.participant_facing,
                taper=Taper.model_validate(m.taper) if m.taper else None,
            )
            for m in MilestoneRule.objects.filter(version=version)
            .select_related("anchor_visit")
            .order_by("order")
        ),
        eligibility=tuple(
            criterion_section(c)
            for c in EligibilityCriterion.objects.filter(version=version).order_by("order")
        ),
        reminders=None if version.default_reminders else reminders,
    )


def _normal(value: Decimal | None) -> Decimal | None:
    # DecimalField gives 18.00 back for 18; the file said 18.
    if value is None:
        return None
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


def protocol_export(*, version: ProtocolVersion) -> str:
    """The stored version as protocol YAML that re-imports to an identical version."""
    return dump_protocol(protocol_document(version=version))
