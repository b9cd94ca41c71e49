"""The schedule engine: pure functions over plain dataclasses (see planner.py for the rules)."""

from scheduler.engine.planner import plan, resolve_anchors
from scheduler.engine.types import (
    History,
    ParticipantFacts,
    Plan,
    PlannedMilestone,
    PlannedVisit,
    PlanningError,
    ProtocolSnapshot,
)

__all__ = [
    "History",
    "ParticipantFacts",
    "Plan",
    "PlannedMilestone",
    "PlannedVisit",
    "PlanningError",
    "ProtocolSnapshot",
    "plan",
    "resolve_anchors",
]
