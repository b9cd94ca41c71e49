"""The protocol file format: parsing, schema, and the clinical consistency checks.

A protocol version is authored as YAML. This module turns the text into a validated
`ProtocolDocument` or raises `ProtocolFileError` listing every problem with the file, the path
inside it, the line, and what was expected. It imports no Django, so the schedule engine's tests
can load protocol files without a database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

FORMAT_VERSION = 1
CODE_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
Code = Annotated[str, Field(pattern=CODE_PATTERN)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("expected text, not only spaces; leave the field out when there is none")
    return value


# The Japanese text of a protocol-defined name, beside the English one it translates
# (`name_ja:` next to `name:`), bounded like it. Optional: without it, people reading Japanese
# see the `name` the file gives. Shown to participants and coordinators whose language is ja.
_Japanese = AfterValidator(_not_blank)
JapaneseShortName = Annotated[str, Field(min_length=1, max_length=120), _Japanese]
JapaneseName = Annotated[str, Field(min_length=1, max_length=200), _Japanese]
JapaneseTitle = Annotated[str, Field(min_length=1, max_length=300), _Japanese]
JapaneseText = Annotated[str, Field(min_length=1), _Japanese]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `ofset_days` must not silently plan a visit on
    # its anchor day.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Blinding(StrEnum):
    OPEN = "open"
    SINGLE = "single"
    DOUBLE = "double"


class Registry(StrEnum):
    NCT = "NCT"
    JRCT = "jRCT"
    EUCT = "EUCT"
    OTHER = "other"


class VisitMode(StrEnum):
    IN_PERSON = "in_person"
    PHONE = "phone"
    REMOTE = "remote"


class MilestoneKind(StrEnum):
    DATE = "date"
    ENDPOINT = "endpoint"
    TAPER = "taper"


class CriterionKind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


class ReminderEvent(StrEnum):
    # For the participant:
    BEFORE_VISIT = "before_visit"  # `days` before a booked visit
    EVENING_BEFORE_PROCEDURE = "evening_before_procedure"  # the day before, for `procedures`
    TAPER_STEP = "taper_step"  # on the day a new taper dose starts
    # For the site's coordinators:
    WINDOW_OPENS_UNBOOKED = "window_opens_unbooked"
    WINDOW_CLOSING_UNBOOKED = "window_closing_unbooked"  # `days` before the window closes
    OVERDUE = "overdue"  # the day after, when neither recorded nor rescheduled

    @property
    def audience(self) -> str:
        participant_events = {"before_visit", "evening_before_procedure", "taper_step"}
        return "participant" if self.value in participant_events else "coordinator"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    IN_APP = "in_app"


class CheckedAttribute(StrEnum):
    AGE_YEARS = "age_years"
    WEIGHT_KG = "weight_kg"


class Registration(_Strict):
    registry: Registry
    identifier: str = Field(min_length=3, max_length=40)


class TrialSection(_Strict):
    code: Code
    title: str = Field(min_length=3, max_length=300)
    title_ja: JapaneseTitle | None = None
    phase: Literal["1", "1/2", "2", "2/3", "3", "4"]
    sponsor: str = Field(min_length=2, max_length=200)
    blinding: Blinding
    registrations: tuple[Registration, ...] = ()
    conditions: tuple[str, ...] = ()


class AnchorSection(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=120)
    name_ja: JapaneseShortName | None = None
    # An anchor may be constrained relative to another one (Tsukuba: anifrolumab Day 1 within
    # 2 weeks after PSL start); until its real date is known it is estimated at default_days.
    relative_to: Code | None = None
    min_days: int | None = None
    max_days: int | None = None
    default_days: int | None = None


class VisitAnchor(_Strict):
    """The actual date of an earlier visit (its target until it is done)."""

    visit: Code
    # Which occurrence of a repeating visit; omitted means its last one.
    occurrence: int | None = Field(default=None, ge=1)


AnchorRef = Code | VisitAnchor


class Window(_Strict):
    before: int = Field(ge=0, le=365)
    after: int = Field(ge=0, le=365)


class Repeat(_Strict):
    every_days: int = Field(ge=1, le=366)
    count: int = Field(ge=2, le=1000)


class Activity(_Strict):
    procedure: Code
    # Occurrences of a repeating visit at which it is done (1-based); omitted means all.
    occurrences: tuple[Annotated[int, Field(ge=1)], ...] | None = None


class ArmSection(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=120)
    description: str = ""


class EpochSection(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=120)
    name_ja: JapaneseShortName | None = None


class StaffNeed(_Strict):
    """`count` of a staff kind ("infusion nurse"), counted the way the site counts its shifts
    (one nurse who can watch two chairs is 2 on shift; an infusion then needs 1)."""

    kind: str = Field(min_length=1, max_length=120)
    count: int = Field(default=1, ge=1, le=50)


class ProcedureSection(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    name_ja: JapaneseName | None = None
    duration_minutes: int = Field(ge=1, le=24 * 60)
    # What the participant must do beforehand or during (fasting, lying still); it goes into
    # invites, so it must be written for the participant and carry no diagnosis.
    preparation: str = ""
    preparation_ja: JapaneseText | None = None
    # The kind of site resource the procedure holds for its whole duration ("PET/CT scanner"),
    # matched to the kinds of a site's resources; `resource_count` units of it.
    resource: str = ""
    resource_count: int = Field(default=1, ge=1, le=50)
    # The kind of staff it needs while it runs, and how much of them (see StaffNeed).
    staff: StaffNeed | None = None


class PlanStep(_Strict):
    """One procedure of a visit's plan inside the day, placed relative to the step before it:
    `after` it ends, `with` it (same start), or `overlap` its last `overlap_minutes`."""

    procedure: Code
    relation: Literal["after", "with", "overlap"] = "after"
    overlap_minutes: int = Field(default=0, ge=0, le=24 * 60)


class VisitSection(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    name_ja: JapaneseName | None = None
    epoch: Code
    anchor: AnchorRef
    offset_days: int = Field(ge=-3660, le=3660)
    window: Window
    repeat: Repeat | None = None
    duration_minutes: int = Field(ge=1, le=24 * 60)
    mode: VisitMode = VisitMode.IN_PERSON
    # Arms the visit applies to; empty means every arm.
    arms: tuple[Code, ...] = ()
    unscheduled_allowed: bool = False
    procedures: tuple[Code | Activity, ...] = ()
    # The order of the visit's procedures inside the day (see PlanStep): when given, every
    # procedure of the visit appears once, and the plan must fit `duration_minutes`.
    plan: tuple[Code | PlanStep, ...] | None = None

    @property
    def count(self) -> int:
        return self.repeat.count if self.repeat else 1

    def activities(self) -> tuple[Activity, ...]:
        return tuple(
            Activity(procedure=item) if isinstance(item, str) else item for item in self.procedures
        )

    def plan_steps(self) -> tuple[PlanStep, ...] | None:
        if self.plan is None:
            return None
        return tuple(
            PlanStep(procedure=item) if isinstance(item, str) else item for item in self.plan
        )


class Taper(_Strict):
    """A weight-based dose that is held, then reduced weekly to a target dose."""

    drug: str = Field(min_length=1, max_length=80)
    initial_mg_per_kg: Decimal = Field(gt=0, le=10)
    # A hard ceiling on the first dose when the protocol states one; None means none.
    initial_max_mg: Decimal | None = Field(default=None, gt=0)
    # Weeks at the initial dose before the first reduction (at least the first week).
    initial_weeks: int = Field(ge=1, le=52)
    target_mg: Decimal = Field(ge=0)
    target_week: int = Field(ge=1, le=104)
    # Doses are rounded down to a multiple of this (the tablet strength), so rounding can
    # never take a dose above its cap. Doses are recorded to 0.01 mg, so the step is too.
    step_mg: Decimal = Field(gt=0, max_digits=7, decimal_places=2)
    shape: Literal["geometric", "linear"] = "geometric"
    # true when the drug can be given in any dose (an oral solution, say): a dose the
    # investigator prescribes is stored exactly. false (the default): a prescription must be a
    # multiple of step_mg, and one that is not is refused with the two nearest offered.
    exact_doses: StrictBool = False


class MilestoneSection(_Strict):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    name_ja: JapaneseName | None = None
    kind: MilestoneKind
    anchor: AnchorRef
    offset_days: int = Field(default=0, ge=-3660, le=3660)
    participant_facing: bool = False
    taper: Taper | None = None


class CriterionCheck(_Strict):
    attribute: CheckedAttribute
    min: Decimal | None = None
    max: Decimal | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True


class CriterionSection(_Strict):
    code: Code
    kind: CriterionKind
    text: str = Field(min_length=3)
    check: CriterionCheck | None = None


class ReminderSection(_Strict):
    code: Code
    event: ReminderEvent
    days: int = Field(default=0, ge=0, le=90)
    # Local wall time: the participant's zone for participant reminders, the site's for
    # coordinators'.
    at: dt.time
    channels: tuple[Channel, ...] = Field(min_length=1)
    # Visits it applies to (codes); empty means every visit.
    visits: tuple[Code, ...] = ()
    # For evening_before_procedure: the procedures that need preparing (e.g. fasting).
    procedures: tuple[Code, ...] = ()

    @field_validator("at", mode="before")
    @classmethod
    def _quoted_time(cls, value: Any) -> Any:
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 19:00 as the sexagesimal number 1140.
            raise ValueError('expected a time in quotes, e.g. "19:00"')
        return value


class VersionSection(_Strict):
    label: str = Field(min_length=1, max_length=40)
    status: Literal["draft", "published"] = "published"
    date: dt.date | None = None


class ProtocolDocument(_Strict):
    format: Literal[1]
    trial: TrialSection
    version: VersionSection
    anchors: tuple[AnchorSection, ...] = Field(min_length=1)
    arms: tuple[ArmSection, ...] = ()
    epochs: tuple[EpochSection, ...] = Field(min_length=1)
    procedures: tuple[ProcedureSection, ...] = ()
    visits: tuple[VisitSection, ...] = Field(min_length=1)
    milestones: tuple[MilestoneSection, ...] = ()
    eligibility: tuple[CriterionSection, ...] = ()
    # None: the application's default reminder rules apply (see DEFAULT_REMINDERS).
    reminders: tuple[ReminderSection, ...] | None = None

    @field_validator("format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if value != FORMAT_VERSION:
            raise ValueError(f"this application reads protocol format {FORMAT_VERSION}")
        return value


# ----------------------------------------------------------------------------------------
# Errors


Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = format_path(self.path) or "(top level)"
        line = f" (line {self.line})" if self.line else ""
        return f"{source}: {where}{line}: {self.message}"


class ProtocolFileError(ValueError):
    """A protocol file is invalid; `problems` says where and why. Nothing was imported."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(problem.render(source) for problem in self.problems))


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# ----------------------------------------------------------------------------------------
# Parsing


def parse_protocol(text: str, *, source: str = "<protocol>") -> ProtocolDocument:
    """Parse and validate protocol YAML, or raise ProtocolFileError naming every problem."""
    try:
        data = yaml.safe_load(text)
        root_node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{what} ({context})" if context else what
        raise ProtocolFileError(source, [Problem((), f"not valid YAML: {detail}", line)]) from exc
    if not isinstance(data, dict):
        raise ProtocolFileError(source, [Problem((), "expected a mapping at the top level")])

    try:
        document = ProtocolDocument.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(
                path=_clean_loc(error["loc"]),
                message=_describe(error),
                line=_line_of(root_node, _clean_loc(error["loc"])),
            )
            for error in exc.errors()
        ]
        raise ProtocolFileError(source, _dedupe(_without_echoes(problems))) from exc

    problems = [
        Problem(path, message, _line_of(root_node, path))
        for path, message in check_consistency(document)
    ]
    if problems:
        raise ProtocolFileError(source, problems)
    return document


def _clean_loc(loc: Iterable[Any]) -> Path:
    # pydantic adds the union member it tried ("str", "VisitAnchor", "function-after[...]")
    # to the location; a person wants the place in the file.
    cleaned: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (
            part in {"str", "VisitAnchor", "Activity", "PlanStep", "constrained-str"}
            or "[" in part
            or part.startswith("function-")
        ):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        field = next((part for part in reversed(error["loc"]) if isinstance(part, str)), "")
        return "is required but missing" + (
            f": expected {_EXPECTED[field]}" if field in _EXPECTED else ""
        )
    if kind == "extra_forbidden":
        return "is not a known field here"
    if kind == "string_pattern_mismatch":
        return (
            f"expected a code (a letter, then letters, digits, '_' or '-', at most 40), "
            f"got {error['input']!r}"
        )
    if kind == "literal_error" or kind == "enum":
        return f"{error['msg'].lower()}, got {error['input']!r}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{message[0].lower()}{message[1:]} (got {error['input']!r})"


_EXPECTED = {
    "anchor": "an anchor code (e.g. day1) or {visit: CODE} for an earlier visit's actual date",
    "window": "{before: DAYS, after: DAYS}",
    "offset_days": "whole days from the anchor (weeks x 7), negative before it",
    "epoch": "the code of one of the epochs",
    "duration_minutes": "the expected duration in minutes",
}


def _without_echoes(problems: list[Problem]) -> list[Problem]:
    # A list whose only item is invalid also reports "at least 1 item after validation, not 0"
    # (pydantic drops the item): the item's own problem is the one to fix.
    return [
        problem
        for problem in problems
        if not (
            problem.message.startswith("tuple should have at least")
            and any(
                other.path[: len(problem.path)] == problem.path and other.path != problem.path
                for other in problems
            )
        )
    ]


def _dedupe(problems: list[Problem]) -> list[Problem]:
    # A union (code or {visit: …}) reports one failure per member at the same place; one
    # clear message per place is enough.
    seen: set[Path] = set()
    unique = []
    for problem in problems:
        if problem.path in seen:
            continue
        seen.add(problem.path)
        unique.append(problem)
    return unique


def _line_of(node: yaml.Node | None, path: Path) -> int | None:
    """1-based line of the YAML node at `path`, or of its nearest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next(
                (value for key, value in node.value if getattr(key, "value", None) == part),
                None,
            )
            if child is None:
                return line
            line = next(
                key.start_mark.line + 1
                for key, value in node.value
                if getattr(key, "value", None) == part
            )
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# ----------------------------------------------------------------------------------------
# Clinical consistency: references, anchor cycles, windows that overlap the next visit.


def check_consistency(doc: ProtocolDocument) -> list[tuple[Path, str]]:
    problems: list[tuple[Path, str]] = []
    for section in (
        "anchors",
        "arms",
        "epochs",
        "procedures",
        "visits",
        "milestones",
        "eligibility",
        "reminders",
    ):
        seen: dict[str, int] = {}
        for index, item in enumerate(getattr(doc, section) or ()):
            if item.code in seen:
                problems.append(
                    (
                        (section, index, "code"),
                        f"duplicate code {item.code!r} "
                        f"(first used at {section}[{seen[item.code]}])",
                    )
                )
            seen.setdefault(item.code, index)

    anchors = {a.code: a for a in doc.anchors}
    arms = {a.code for a in doc.arms}
    epochs = {e.code for e in doc.epochs}
    procedures = {p.code for p in doc.procedures}
    visits = {v.code: v for v in doc.visits}

    problems += _check_anchor_definitions(doc)

    for index, procedure in enumerate(doc.procedures):
        if procedure.preparation_ja is not None and not procedure.preparation:
            problems.append(
                (
                    ("procedures", index, "preparation_ja"),
                    "a Japanese preparation translates 'preparation', which this procedure "
                    "does not have",
                )
            )

    for index, visit in enumerate(doc.visits):
        path: Path = ("visits", index)
        if visit.epoch not in epochs:
            problems.append(
                (
                    path + ("epoch",),
                    f"unknown epoch {visit.epoch!r}; expected one of: {_listing(epochs)}",
                )
            )
        problems += _check_anchor_ref(visit.anchor, path + ("anchor",), anchors, visits)
        for arm_index, arm in enumerate(visit.arms):
            if arm not in arms:
                problems.append(
                    (
                        path + ("arms", arm_index),
                        f"unknown arm {arm!r}; expected one of: {_listing(arms)}",
                    )
                )
        if doc.trial.blinding != Blinding.OPEN and visit.arms and set(visit.arms) != arms:
            # A visit only one arm has would appear in that arm's calendars alone: every
            # invite, feed and coordinator list would unblind the participant.
            problems.append(
                (
                    path + ("arms",),
                    f"visit {visit.code} is limited to arm(s) {', '.join(visit.arms)} in a "
                    f"{doc.trial.blinding.value}-blind trial, which would show the arm in every "
                    "calendar; give it to every arm or make the trial open",
                )
            )
        for activity_index, activity in enumerate(visit.activities()):
            activity_path = path + ("procedures", activity_index)
            if activity.procedure not in procedures:
                problems.append(
                    (
                        activity_path,
                        f"unknown procedure {activity.procedure!r}; expected one of: "
                        f"{_listing(procedures)}",
                    )
                )
            for occurrence in activity.occurrences or ():
                if occurrence > visit.count:
                    problems.append(
                        (
                            activity_path + ("occurrences",),
                            f"occurrence {occurrence} does not exist: visit {visit.code!r} "
                            f"happens {visit.count} time(s)",
                        )
                    )
        problems += _check_plan(visit, path, {p.code: p for p in doc.procedures})
        if visit.repeat and visit.window.before + visit.window.after >= visit.repeat.every_days:
            problems.append(
                (
                    path + ("window",),
                    f"window of {visit.window.before}+{visit.window.after} days is not shorter "
                    f"than the {visit.repeat.every_days}-day gap between repeats, so the windows "
                    "of consecutive occurrences would overlap",
                )
            )

    for index, milestone in enumerate(doc.milestones):
        path = ("milestones", index)
        problems += _check_anchor_ref(milestone.anchor, path + ("anchor",), anchors, visits)
        if milestone.kind is MilestoneKind.TAPER and milestone.taper is None:
            problems.append((path + ("taper",), "a taper milestone needs a 'taper' section"))
        if milestone.kind is not MilestoneKind.TAPER and milestone.taper is not None:
            problems.append((path + ("taper",), "only a milestone of kind 'taper' has a taper"))
        if (
            milestone.taper is not None
            and milestone.taper.initial_weeks >= milestone.taper.target_week
        ):
            problems.append(
                (
                    path + ("taper", "target_week"),
                    f"expected a week after the {milestone.taper.initial_weeks} initial week(s), "
                    f"got {milestone.taper.target_week}",
                )
            )

    for index, criterion in enumerate(doc.eligibility):
        check = criterion.check
        if check is None:
            continue
        path = ("eligibility", index, "check")
        if check.min is None and check.max is None:
            problems.append((path, "a check needs 'min', 'max' or both"))
        elif check.min is not None and check.max is not None and check.min > check.max:
            problems.append((path, f"min {check.min} is greater than max {check.max}"))

    for index, reminder in enumerate(doc.reminders or ()):
        path = ("reminders", index)
        for visit_index, code in enumerate(reminder.visits):
            if code not in visits:
                problems.append(
                    (
                        path + ("visits", visit_index),
                        f"unknown visit {code!r}; expected one of: {_listing(visits)}",
                    )
                )
        for procedure_index, code in enumerate(reminder.procedures):
            if code not in procedures:
                problems.append(
                    (
                        path + ("procedures", procedure_index),
                        f"unknown procedure {code!r}; expected one of: {_listing(procedures)}",
                    )
                )
        if reminder.event is ReminderEvent.EVENING_BEFORE_PROCEDURE and not reminder.procedures:
            problems.append(
                (
                    path + ("procedures",),
                    "an evening_before_procedure reminder names its procedures",
                )
            )
        if reminder.event.audience == "coordinator" and Channel.SMS in reminder.channels:
            problems.append(
                (
                    path + ("channels",),
                    "coordinator reminders go by email or in_app; sms is for participants",
                )
            )

    problems += _check_visit_cycles(doc)
    if not problems:
        problems += _check_window_overlaps(doc)
    return problems


def plan_layout(steps: Sequence[PlanStep], minutes: dict[str, int]) -> tuple[tuple[int, int], ...]:
    """Each step's (start, end) in minutes from the visit's start.

    The same arithmetic as the slot finder's `scheduler.engine.slots.plan_layout` (this app
    imports nothing of the scheduler; tests/booking checks the two agree on every seed plan).
    """
    layout: list[tuple[int, int]] = []
    for index, step in enumerate(steps):
        if index == 0:
            start = 0
        else:
            before_start, before_end = layout[-1]
            if step.relation == "with":
                start = before_start
            elif step.relation == "overlap":
                start = max(before_start, before_end - step.overlap_minutes)
            else:
                start = before_end
        layout.append((start, start + minutes[step.procedure]))
    return tuple(layout)


def _check_plan(
    visit: VisitSection, path: Path, procedures: dict[str, ProcedureSection]
) -> list[tuple[Path, str]]:
    steps = visit.plan_steps()
    if steps is None:
        return []
    problems: list[tuple[Path, str]] = []
    where = f"visit {visit.code}"
    carried = [a.procedure for a in visit.activities()]
    if not steps:
        return [(path + ("plan",), f"{where}: a plan lists the visit's procedures in order")]
    seen: set[str] = set()
    for index, step in enumerate(steps):
        step_path = path + ("plan", index)
        at = f"{where}, step {index + 1} ({step.procedure})"
        if step.procedure not in carried:
            problems.append(
                (
                    step_path,
                    f"{at}: the visit does not carry procedure {step.procedure!r}; its "
                    f"procedures are {', '.join(carried) or 'none'}",
                )
            )
        elif step.procedure in seen:
            problems.append((step_path, f"{at}: the procedure is already in the plan"))
        seen.add(step.procedure)
        if index == 0 and step.relation != "after":
            problems.append(
                (step_path, f"{at}: the first step starts the visit; it cannot be {step.relation}")
            )
        if step.relation != "overlap" and step.overlap_minutes:
            problems.append(
                (step_path + ("overlap_minutes",), f"{at}: overlap_minutes needs relation overlap")
            )
        if step.relation == "overlap" and index > 0:
            previous = steps[index - 1]
            limit = (
                procedures[previous.procedure].duration_minutes
                if previous.procedure in (procedures)
                else 0
            )
            if limit and not 0 < step.overlap_minutes <= limit:
                problems.append(
                    (
                        step_path + ("overlap_minutes",),
                        f"{at}: overlaps {previous.procedure} by {step.overlap_minutes} minutes; "
                        f"it can overlap by 1 to {limit}",
                    )
                )
    missing = [code for code in carried if code not in seen]
    if missing:
        problems.append(
            (
                path + ("plan",),
                f"{where}: the plan leaves out {', '.join(missing)}; every procedure of the "
                "visit has its place in the day",
            )
        )
    if problems or any(step.procedure not in procedures for step in steps):
        return problems
    minutes = {code: p.duration_minutes for code, p in procedures.items()}
    layout = plan_layout(steps, minutes)
    total = max(end for _, end in layout)
    if total > visit.duration_minutes:
        parts = ", ".join(
            f"{step.procedure} {start}-{end}"
            for step, (start, end) in zip(steps, layout, strict=True)
        )
        problems.append(
            (
                path + ("plan",),
                f"{where}: the plan lasts {total} minutes ({parts}), "
                f"{total - visit.duration_minutes} more than the visit's "
                f"{visit.duration_minutes}; let procedures overlap (with, overlap) or lengthen "
                "duration_minutes",
            )
        )
    return problems


def _listing(codes: Iterable[str]) -> str:
    return ", ".join(sorted(codes)) or "(none defined)"


def _check_anchor_definitions(doc: ProtocolDocument) -> list[tuple[Path, str]]:
    problems: list[tuple[Path, str]] = []
    codes = {a.code for a in doc.anchors}
    for index, anchor in enumerate(doc.anchors):
        path: Path = ("anchors", index)
        constrained = (anchor.min_days, anchor.max_days, anchor.default_days)
        if anchor.relative_to is None:
            if any(value is not None for value in constrained):
                problems.append((path, "min_days, max_days and default_days need 'relative_to'"))
            continue
        if anchor.relative_to not in codes:
            problems.append(
                (
                    path + ("relative_to",),
                    f"unknown anchor {anchor.relative_to!r}; expected one of: {_listing(codes)}",
                )
            )
        elif anchor.relative_to == anchor.code:
            problems.append((path + ("relative_to",), "an anchor cannot be relative to itself"))
        low, high = anchor.min_days, anchor.max_days
        if low is not None and high is not None and low > high:
            problems.append((path, f"min_days {low} is greater than max_days {high}"))
        default = anchor.default_days
        if default is not None and (
            (low is not None and default < low) or (high is not None and default > high)
        ):
            problems.append(
                (path + ("default_days",), f"default_days {default} is outside [{low}, {high}]")
            )
    by_code = {a.code: a for a in doc.anchors}
    reported: set[frozenset[str]] = set()
    for index, anchor in enumerate(doc.anchors):
        seen = [anchor.code]
        current = anchor
        while current.relative_to is not None and current.relative_to in by_code:
            if current.relative_to in seen:
                if current.relative_to == anchor.code and frozenset(seen) not in reported:
                    reported.add(frozenset(seen))
                    problems.append(
                        (
                            ("anchors", index, "relative_to"),
                            "anchors form a cycle: " + " -> ".join([*seen, anchor.code]),
                        )
                    )
                break
            seen.append(current.relative_to)
            current = by_code[current.relative_to]
    return problems


def _check_anchor_ref(
    ref: AnchorRef,
    path: Path,
    anchors: dict[str, AnchorSection],
    visits: dict[str, VisitSection],
) -> list[tuple[Path, str]]:
    if isinstance(ref, str):
        if ref not in anchors:
            return [
                (
                    path,
                    f"unknown anchor {ref!r}; expected one of: {_listing(anchors)}, or "
                    "{visit: CODE} for the actual date of an earlier visit",
                )
            ]
        return []
    target = visits.get(ref.visit)
    if target is None:
        return [
            (path + ("visit",), f"unknown visit {ref.visit!r}; expected one of: {_listing(visits)}")
        ]
    if ref.occurrence is not None and ref.occurrence > target.count:
        return [
            (
                path + ("occurrence",),
                f"visit {ref.visit!r} happens {target.count} time(s); there is no occurrence "
                f"{ref.occurrence}",
            )
        ]
    return []


def _check_visit_cycles(doc: ProtocolDocument) -> list[tuple[Path, str]]:
    depends_on = {v.code: v.anchor.visit for v in doc.visits if isinstance(v.anchor, VisitAnchor)}
    index_of = {v.code: i for i, v in enumerate(doc.visits)}
    problems: list[tuple[Path, str]] = []
    reported: set[frozenset[str]] = set()
    for start in depends_on:
        chain = [start]
        current = depends_on.get(start)
        while current is not None and current in index_of:
            if current in chain:
                cycle = chain[chain.index(current) :]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    problems.append(
                        (
                            ("visits", index_of[cycle[0]], "anchor"),
                            "visit anchors form a cycle: " + " -> ".join([*cycle, current]),
                        )
                    )
                break
            chain.append(current)
            current = depends_on.get(current)
    return problems


@dataclass(frozen=True)
class _Occurrence:
    visit_index: int
    code: str
    occurrence: int
    day: int
    start: int
    end: int
    arms: frozenset[str]
    repeats: bool


def _check_window_overlaps(doc: ProtocolDocument) -> list[tuple[Path, str]]:
    """Consecutive visits (same root anchor, a common arm) must have disjoint windows.

    A window that reaches into the next visit's window makes "which visit is this?" ambiguous
    for the coordinator and the engine alike, so the file is refused.
    """
    visits = {v.code: v for v in doc.visits}
    nominal: dict[tuple[str, int], tuple[str, int]] = {}

    def resolve(code: str, occurrence: int) -> tuple[str, int]:
        key = (code, occurrence)
        if key not in nominal:
            visit = visits[code]
            repeat_shift = (occurrence - 1) * (visit.repeat.every_days if visit.repeat else 0)
            if isinstance(visit.anchor, str):
                root, base = visit.anchor, 0
            else:
                ref = visits[visit.anchor.visit]
                root, base = resolve(ref.code, visit.anchor.occurrence or ref.count)
            nominal[key] = (root, base + visit.offset_days + repeat_shift)
        return nominal[key]

    all_arms = frozenset(a.code for a in doc.arms)
    by_root: dict[str, list[_Occurrence]] = {}
    for index, visit in enumerate(doc.visits):
        for occurrence in range(1, visit.count + 1):
            root, day = resolve(visit.code, occurrence)
            by_root.setdefault(root, []).append(
                _Occurrence(
                    index,
                    visit.code,
                    occurrence,
                    day,
                    day - visit.window.before,
                    day + visit.window.after,
                    frozenset(visit.arms) or all_arms,
                    visit.repeat is not None,
                )
            )

    problems: list[tuple[Path, str]] = []
    reported: set[tuple[int, int]] = set()
    for occurrences in by_root.values():
        occurrences.sort(key=lambda o: (o.day, o.visit_index, o.occurrence))
        for position, later in enumerate(occurrences):
            # For each arm the later visit applies to, the nearest earlier occurrence that a
            # participant of that arm also has: an overlap in any one arm is an error.
            arms_to_check: list[str | None] = [*sorted(later.arms)] or [None]
            for arm in arms_to_check:
                earlier = next(
                    (
                        candidate
                        for candidate in reversed(occurrences[:position])
                        if arm is None or arm in candidate.arms
                    ),
                    None,
                )
                if earlier is None or earlier.end < later.start:
                    continue
                pair = (earlier.visit_index, later.visit_index)
                if pair not in reported:
                    reported.add(pair)
                    problems.append(
                        (
                            ("visits", later.visit_index, "window"),
                            f"window of {_label(later)} (days {later.start}..{later.end}) "
                            f"overlaps the window of {_label(earlier)} "
                            f"(days {earlier.start}..{earlier.end}); "
                            "a window must be shorter than the gap between visits",
                        )
                    )
    return problems


def _label(occurrence: _Occurrence) -> str:
    if occurrence.repeats:
        return f"{occurrence.code} occurrence {occurrence.occurrence}"
    return occurrence.code


# ----------------------------------------------------------------------------------------
# Writing


def dump_protocol(document: ProtocolDocument) -> str:
    """Serialise a document to the YAML format `parse_protocol` reads (without comments)."""
    data = _plain(document.model_dump(mode="python", exclude_defaults=True))
    data["format"] = FORMAT_VERSION
    if document.reminders is not None:
        data["reminders"] = _plain(
            [r.model_dump(mode="python", exclude_defaults=True) for r in document.reminders]
        )
    ordered = {key: data[key] for key in ProtocolDocument.model_fields if key in data}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)


def _plain(value: Any) -> Any:
    """Python values YAML writes the way an author would: 0.6 not '0.6', enums as text."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    return value


# Used when a protocol file has no `reminders` section: what a coordinator and a participant
# expect from any trial.
DEFAULT_REMINDERS: tuple[ReminderSection, ...] = (
    ReminderSection(
        code="P7D",
        event=ReminderEvent.BEFORE_VISIT,
        days=7,
        at=dt.time(9),
        channels=(Channel.EMAIL,),
    ),
    ReminderSection(
        code="P1D",
        event=ReminderEvent.BEFORE_VISIT,
        days=1,
        at=dt.time(9),
        channels=(Channel.EMAIL, Channel.SMS),
    ),
    ReminderSection(
        code="TAPER", event=ReminderEvent.TAPER_STEP, at=dt.time(8), channels=(Channel.EMAIL,)
    ),
    ReminderSection(
        code="C_OPEN",
        event=ReminderEvent.WINDOW_OPENS_UNBOOKED,
        at=dt.time(8),
        channels=(Channel.IN_APP,),
    ),
    ReminderSection(
        code="C_CLOSE",
        event=ReminderEvent.WINDOW_CLOSING_UNBOOKED,
        days=2,
        at=dt.time(8),
        channels=(Channel.IN_APP, Channel.EMAIL),
    ),
    ReminderSection(
        code="C_OVERDUE", event=ReminderEvent.OVERDUE, at=dt.time(8), channels=(Channel.IN_APP,)
    ),
)
