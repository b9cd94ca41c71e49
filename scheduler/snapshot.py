"""Protocol document (the validated file format) -> engine snapshot: the one translation
between `trials`' file format and the engine's own types, kept outside `engine/` so the engine
imports nothing of ours. Still no Django."""

from __future__ import annotations

from scheduler.engine.types import (
    ActivitySpec,
    AnchorRef,
    AnchorSpec,
    MilestoneSpec,
    ProtocolSnapshot,
    TaperSpec,
    VisitSpec,
)
from trials.protocol_file import AnchorRef as FileAnchorRef
from trials.protocol_file import ProtocolDocument


def _anchor(ref: FileAnchorRef) -> AnchorRef:
    if isinstance(ref, str):
        return AnchorRef(anchor=ref)
    return AnchorRef(visit=ref.visit, occurrence=ref.occurrence)


def snapshot_from_document(document: ProtocolDocument) -> ProtocolSnapshot:
    return ProtocolSnapshot(
        anchors=tuple(
            AnchorSpec(
                code=a.code,
                name=a.name,
                relative_to=a.relative_to,
                min_days=a.min_days,
                max_days=a.max_days,
                default_days=a.default_days,
            )
            for a in document.anchors
        ),
        visits=tuple(
            VisitSpec(
                code=v.code,
                name=v.name,
                epoch=v.epoch,
                anchor=_anchor(v.anchor),
                offset_days=v.offset_days,
                window_before=v.window.before,
                window_after=v.window.after,
                duration_minutes=v.duration_minutes,
                repeat_every_days=v.repeat.every_days if v.repeat else None,
                repeat_count=v.count,
                arms=frozenset(v.arms),
                activities=tuple(
                    ActivitySpec(
                        procedure=a.procedure,
                        occurrences=frozenset(a.occurrences) if a.occurrences else None,
                    )
                    for a in v.activities()
                ),
            )
            for v in document.visits
        ),
        milestones=tuple(
            MilestoneSpec(
                code=m.code,
                name=m.name,
                kind=m.kind.value,
                anchor=_anchor(m.anchor),
                offset_days=m.offset_days,
                participant_facing=m.participant_facing,
                taper=(
                    TaperSpec(
                        initial_mg_per_kg=m.taper.initial_mg_per_kg,
                        initial_weeks=m.taper.initial_weeks,
                        target_mg=m.taper.target_mg,
                        target_week=m.taper.target_week,
                        step_mg=m.taper.step_mg,
                        initial_max_mg=m.taper.initial_max_mg,
                        shape=m.taper.shape,
                        drug=m.taper.drug,
                        exact_doses=m.taper.exact_doses,
                    )
                    if m.taper
                    else None
                ),
            )
            for m in document.milestones
        ),
    )
