"""Plain data the engine reads and returns. No ORM, no clock, no Django."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, ParamSpec, TypeVar


@dataclass(frozen=True)
class AnchorRef:
    """What a visit or milestone counts from: a participant anchor or an earlier visit."""

    anchor: str | None = None
    visit: str | None = None
    # Occurrence of a repeating visit; None means its last.
    occurrence: int | None = None


@dataclass(frozen=True)
class AnchorSpec:
    code: str
    name: str
    relative_to: str | None = None
    min_days: int | None = None
    max_days: int | None = None
    default_days: int | None = None


@dataclass(frozen=True)
class ActivitySpec:
    procedure: str
    occurrences: frozenset[int] | None = None  # None: every occurrence


@dataclass(frozen=True)
class VisitSpec:
    code: str
    name: str
    epoch: str
    anchor: AnchorRef
    offset_days: int
    window_before: int
    window_after: int
    duration_minutes: int
    repeat_every_days: int | None = None
    repeat_count: int = 1
    arms: frozenset[str] = frozenset()  # empty: every arm
    activities: tuple[ActivitySpec, ...] = ()


@dataclass(frozen=True)
class TaperSpec:
    initial_mg_per_kg: Decimal
    initial_weeks: int
    target_mg: Decimal
    target_week: int
    step_mg: Decimal
    initial_max_mg: Decimal | None = None
    shape: Literal["geometric", "linear"] = "geometric"
    drug: str = ""
    # The drug can be given in any dose (an oral solution): an investigator's prescribed dose
    # is kept exactly instead of being a multiple of step_mg. Computed doses still are.
    exact_doses: bool = False


@dataclass(frozen=True)
class MilestoneSpec:
    code: str
    name: str
    kind: Literal["date", "endpoint", "taper"]
    anchor: AnchorRef
    offset_days: int = 0
    participant_facing: bool = False
    taper: TaperSpec | None = None


@dataclass(frozen=True)
class ProtocolSnapshot:
    anchors: tuple[AnchorSpec, ...]
    visits: tuple[VisitSpec, ...]
    milestones: tuple[MilestoneSpec, ...] = ()


@dataclass(frozen=True)
class ParticipantFacts:
    anchors: dict[str, dt.date]
    weight_kg: Decimal | None = None
    arm: str | None = None


@dataclass(frozen=True)
class TaperAdjustment:
    """An investigator's decision at one taper week: hold the dose, or prescribe one."""

    kind: Literal["hold", "set"]
    dose_mg: Decimal | None = None


@dataclass(frozen=True)
class History:
    """What already happened or is fixed, as the engine needs it.

    visit_dates: the date each visit occurrence is known to happen on, by (visit code,
    occurrence): its actual date once done, its booked date while booked. Visits counted from
    it follow it.
    taper_adjustments: by (milestone code, week).
    """

    visit_dates: dict[tuple[str, int], dt.date] = field(default_factory=dict)
    taper_adjustments: dict[tuple[str, int], TaperAdjustment] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedVisit:
    """One occurrence of a visit, planned. The planner makes these without __init__ (which
    sets each field by an object.__setattr__ of its own): it gives each instance, in one step,
    the __dict__ __init__ would have given it. So a field added here must be added there too
    (scheduler/engine/planner.py, `plan`; tests/scheduler/test_engine_speedups.py checks),
    and a __post_init__ would not run."""

    visit_code: str
    occurrence: int
    target: dt.date
    window_start: dt.date
    window_end: dt.date
    procedures: tuple[str, ...]
    # True when it counts (directly or not) from an anchor whose date is only estimated.
    estimated: bool = False


@dataclass(frozen=True)
class PlannedMilestone:
    milestone_code: str
    sequence: int
    due: dt.date
    dose_mg: Decimal | None = None
    estimated: bool = False
    # Something the investigator must look at (e.g. a taper dose above target).
    flag: str = ""


@dataclass(frozen=True)
class Plan:
    visits: tuple[PlannedVisit, ...]
    milestones: tuple[PlannedMilestone, ...]
    anchors: dict[str, dt.date]
    estimated_anchors: frozenset[str]


class PlanningError(ValueError):
    """The participant's facts do not allow a plan; `problems` says which and why."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class DateOutOfRange(PlanningError):
    """Date arithmetic left the calendar Python holds (years 1 to 9999): a date given far
    outside any trial's (forms and the API accept 1900 to 2200; this guards every other
    caller), refused like any other fact that allows no plan rather than crashing."""

    def __init__(self) -> None:
        super().__init__(
            ["a date falls outside the calendar (years 1 to 9999): check the dates given"]
        )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def within_calendar(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn an OverflowError of date arithmetic inside `function` into DateOutOfRange."""

    @functools.wraps(function)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except OverflowError:
            raise DateOutOfRange() from None

    return guarded
