"""The protocol file format: parsing, schema, and the clinical consistency checks.

A protocol version is authored as YAML. This module turns the text into a validated
`ProtocolDocument` or raises `ProtocolFileError` listing every problem with the file, the path
inside it, the line, and what was expected. It imports no Django, so the schedule engine's tests
can load protocol files without a database.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
)

FORMAT_VERSION = 1

# What one protocol file may hold. A file is read whole into memory and checked before anything
# is stored, so each of these bounds the time and memory one upload can cost (every check below
# is linear, or n log n, in the number of visits). They are generous for any real protocol:
# the largest seed has 60 visits and a few kilobytes.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Nesting of YAML collections: a protocol needs 5 (visits[0].procedures[0].occurrences[0]).
MAX_NESTING = 16
# Keys of one mapping (the format's largest, a visit, has 14).
MAX_KEYS = 100
# YAML nodes (scalars, lists, mappings) in the whole file.
MAX_NODES = 500_000
MAX_VISITS = 10_000
# Items in any other list of the file (anchors, procedures, a visit's procedures, …).
MAX_ITEMS = 1_000
# Visit occurrences (each visit's repeat count, summed): what one participant's calendar holds.
MAX_OCCURRENCES = 20_000
# Visits anchored to visits anchored to visits…: the planner orders visits topologically once
# per plan (no recursion, linear in the visits), so a chain may be as long as the file's visits
# (a 10,000-visit chain is 9,999 deep). Kept as its own bound, so that raising MAX_VISITS does
# not silently raise it; a weekly visit anchored to the previous one for two years is 104 deep.
MAX_ANCHOR_CHAIN = MAX_VISITS
# Days between a visit and the participant anchor it is counted from, through any chain.
MAX_SPAN_DAYS = 36_600
# Characters of free text (an arm's description, a preparation, a criterion's text).
MAX_TEXT = 10_000
# Dates a file may give (its version date): the range every form and the API accept too.
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2200, 12, 31)
# Doses are stored to 0.01 mg in 7 digits (scheduler.ScheduledMilestone.dose_mg).
MAX_DOSE_MG = Decimal("99999.99")
# A problem list longer than this is cut in the message (the exception keeps them all).
MAX_SHOWN_PROBLEMS = 100

CODE_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
Code = Annotated[str, Field(pattern=CODE_PATTERN)]
# A whole number as the file writes it: YAML's yes/no/on/off/true/false, "28" and 28.0 are
# refused rather than read as 1, 0, or 28 (pydantic's lax int takes all of them).
Int = Annotated[int, Strict()]


def _readable(value: str) -> bool:
    """Whether `value` has something to read: not only spaces (the ideographic space too) or
    invisible format characters (zero-width spaces and joiners, bidi marks), which would name
    a visit with a blank label in every calendar, invite and list."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in value)


def _visible(value: str) -> str:
    if not _readable(value):
        raise ValueError("expected text to read, not only spaces or invisible characters")
    return value


def _visible_if_given(value: str) -> str:
    """An optional text's check: absent (or, where the file may write "", empty) is fine."""
    if value and not _readable(value):
        raise ValueError(
            "expected text to read, not only spaces or invisible characters; leave the field "
            "out when there is none"
        )
    return value


# Text a person reads (a name, a title, a label): at least one visible character.
_Visible = AfterValidator(_visible)


# The Japanese text of a protocol-defined name, beside the English one it translates
# (`name_ja:` next to `name:`), bounded like it. Optional: without it, people reading Japanese
# see the `name` the file gives. Shown to participants and coordinators whose language is ja.
_Japanese = AfterValidator(_visible_if_given)
JapaneseShortName = Annotated[str, Field(min_length=1, max_length=120), _Japanese]
JapaneseName = Annotated[str, Field(min_length=1, max_length=200), _Japanese]
JapaneseTitle = Annotated[str, Field(min_length=1, max_length=300), _Japanese]
JapaneseText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), _Japanese]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


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
    identifier: Annotated[str, Field(min_length=3, max_length=40), _Visible]


class TrialSection(_Strict):
    code: Code
    title: Annotated[str, Field(min_length=3, max_length=300), _Visible]
    title_ja: JapaneseTitle | None = None
    phase: Literal["1", "1/2", "2", "2/3", "3", "4"]
    sponsor: Annotated[str, Field(min_length=2, max_length=200), _Visible]
    blinding: Blinding
    registrations: tuple[Registration, ...] = Field(default=(), max_length=20)
    conditions: tuple[Annotated[str, Field(min_length=1, max_length=300), _Visible], ...] = Field(
        default=(), max_length=100
    )


class AnchorSection(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=120), _Visible]
    name_ja: JapaneseShortName | None = None
    # An anchor may be constrained relative to another one (Tsukuba: anifrolumab Day 1 within
    # 2 weeks after PSL start); until its real date is known it is estimated at default_days.
    relative_to: Code | None = None
    min_days: Int | None = Field(default=None, ge=-3660, le=3660)
    max_days: Int | None = Field(default=None, ge=-3660, le=3660)
    default_days: Int | None = Field(default=None, ge=-3660, le=3660)


class VisitAnchor(_Strict):
    """The actual date of an earlier visit (its target until it is done)."""

    visit: Code
    # Which occurrence of a repeating visit; omitted means its last one.
    occurrence: Int | None = Field(default=None, ge=1, le=1000)


AnchorRef = Code | VisitAnchor


class Window(_Strict):
    before: Int = Field(ge=0, le=365)
    after: Int = Field(ge=0, le=365)


class Repeat(_Strict):
    every_days: Int = Field(ge=1, le=366)
    count: Int = Field(ge=2, le=1000)


class Activity(_Strict):
    procedure: Code
    # Occurrences of a repeating visit at which it is done (1-based); omitted means all.
    occurrences: tuple[Annotated[Int, Field(ge=1, le=1000)], ...] | None = Field(
        default=None, max_length=1000
    )


class ArmSection(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=120), _Visible]
    description: Text = ""


class EpochSection(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=120), _Visible]
    name_ja: JapaneseShortName | None = None


class StaffNeed(_Strict):
    """`count` of a staff kind ("infusion nurse"), counted the way the site counts its shifts
    (one nurse who can watch two chairs is 2 on shift; an infusion then needs 1)."""

    kind: Annotated[str, Field(min_length=1, max_length=120), _Visible]
    count: Int = Field(default=1, ge=1, le=50)


class ProcedureSection(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200), _Visible]
    name_ja: JapaneseName | None = None
    duration_minutes: Int = Field(ge=1, le=24 * 60)
    # What the participant must do beforehand or during (fasting, lying still); it goes into
    # invites, so it must be written for the participant and carry no diagnosis.
    preparation: Text = ""
    preparation_ja: JapaneseText | None = None
    # The kind of site resource the procedure holds for its whole duration ("PET/CT scanner"),
    # matched to the kinds of a site's resources; `resource_count` units of it.
    resource: Annotated[str, Field(max_length=120), AfterValidator(_visible_if_given)] = ""
    resource_count: Int = Field(default=1, ge=1, le=50)
    # The kind of staff it needs while it runs, and how much of them (see StaffNeed).
    staff: StaffNeed | None = None


class PlanStep(_Strict):
    """One procedure of a visit's plan inside the day, placed relative to the step before it:
    `after` it ends, `with` it (same start), or `overlap` its last `overlap_minutes`."""

    procedure: Code
    relation: Literal["after", "with", "overlap"] = "after"
    overlap_minutes: Int = Field(default=0, ge=0, le=24 * 60)


class VisitSection(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200), _Visible]
    name_ja: JapaneseName | None = None
    epoch: Code
    anchor: AnchorRef
    offset_days: Int = Field(ge=-3660, le=3660)
    window: Window
    repeat: Repeat | None = None
    duration_minutes: Int = Field(ge=1, le=24 * 60)
    mode: VisitMode = VisitMode.IN_PERSON
    # Arms the visit applies to; empty means every arm.
    arms: tuple[Code, ...] = Field(default=(), max_length=MAX_ITEMS)
    unscheduled_allowed: bool = False
    procedures: tuple[Code | Activity, ...] = Field(default=(), max_length=MAX_ITEMS)
    # The order of the visit's procedures inside the day (see PlanStep): when given, every
    # procedure of the visit appears once, and the plan must fit `duration_minutes`.
    plan: tuple[Code | PlanStep, ...] | None = Field(default=None, max_length=MAX_ITEMS)

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

    drug: Annotated[str, Field(min_length=1, max_length=80), _Visible]
    # The drug's name for a Japanese reader (its Japanese standard name: プレドニゾロン), in
    # dose events and reminders; without it they name `drug` as written.
    drug_ja: Annotated[str, Field(min_length=1, max_length=80), _Japanese] | None = None
    initial_mg_per_kg: Decimal = Field(gt=0, le=10)
    # A hard ceiling on the first dose when the protocol states one; None means none.
    initial_max_mg: Decimal | None = Field(default=None, gt=0, le=MAX_DOSE_MG)
    # Weeks at the initial dose before the first reduction (at least the first week).
    initial_weeks: Int = Field(ge=1, le=52)
    target_mg: Decimal = Field(ge=0, le=MAX_DOSE_MG)
    target_week: Int = Field(ge=1, le=104)
    # Doses are rounded down to a multiple of this (the tablet strength), so rounding can
    # never take a dose above its cap. Doses are recorded to 0.01 mg, so the step is too.
    step_mg: Decimal = Field(gt=0, le=MAX_DOSE_MG, max_digits=7, decimal_places=2)
    shape: Literal["geometric", "linear"] = "geometric"
    # true when the drug can be given in any dose (an oral solution, say): a dose the
    # investigator prescribes is stored exactly. false (the default): a prescription must be a
    # multiple of step_mg, and one that is not is refused with the two nearest offered.
    exact_doses: StrictBool = False


class MilestoneSection(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200), _Visible]
    name_ja: JapaneseName | None = None
    kind: MilestoneKind
    anchor: AnchorRef
    offset_days: Int = Field(default=0, ge=-3660, le=3660)
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
    text: Annotated[str, Field(min_length=3, max_length=MAX_TEXT), _Visible]
    check: CriterionCheck | None = None


class ReminderSection(_Strict):
    code: Code
    event: ReminderEvent
    days: Int = Field(default=0, ge=0, le=90)
    # Local wall time: the participant's zone for participant reminders, the site's for
    # coordinators'.
    at: dt.time
    channels: tuple[Channel, ...] = Field(min_length=1, max_length=3)
    # Visits it applies to (codes); empty means every visit.
    visits: tuple[Code, ...] = Field(default=(), max_length=MAX_VISITS)
    # For evening_before_procedure: the procedures that need preparing (e.g. fasting).
    procedures: tuple[Code, ...] = Field(default=(), max_length=MAX_ITEMS)

    @field_validator("at", mode="before")
    @classmethod
    def _quoted_time(cls, value: Any) -> Any:
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 19:00 as the sexagesimal number 1140.
            raise ValueError('expected a time in quotes, e.g. "19:00"')
        return value


class VersionSection(_Strict):
    label: Annotated[str, Field(min_length=1, max_length=40), _Visible]
    status: Literal["draft", "published"] = "published"
    date: dt.date | None = Field(default=None, ge=EARLIEST_DATE, le=LATEST_DATE)


class ProtocolDocument(_Strict):
    format: Literal[1]
    trial: TrialSection
    version: VersionSection
    anchors: tuple[AnchorSection, ...] = Field(min_length=1, max_length=MAX_ITEMS)
    arms: tuple[ArmSection, ...] = Field(default=(), max_length=MAX_ITEMS)
    epochs: tuple[EpochSection, ...] = Field(min_length=1, max_length=MAX_ITEMS)
    procedures: tuple[ProcedureSection, ...] = Field(default=(), max_length=MAX_ITEMS)
    visits: tuple[VisitSection, ...] = Field(min_length=1, max_length=MAX_VISITS)
    milestones: tuple[MilestoneSection, ...] = Field(default=(), max_length=MAX_ITEMS)
    eligibility: tuple[CriterionSection, ...] = Field(default=(), max_length=MAX_ITEMS)
    # None: the application's default reminder rules apply (see DEFAULT_REMINDERS).
    reminders: tuple[ReminderSection, ...] | None = Field(default=None, max_length=MAX_ITEMS)

    @field_validator("format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if value != FORMAT_VERSION:
            raise ValueError(f"this application reads protocol format {FORMAT_VERSION}")
        return value


# ----------------------------------------------------------------------------------------
# Errors


Path = tuple[str | int, ...]
# A check the caller adds to the file's own (what the database can hold, say): the problems it
# finds in a valid document, located like the file's own.
DocumentCheck = Callable[["ProtocolDocument"], list[tuple[Path, str]]]


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
        shown = [problem.render(source) for problem in self.problems[:MAX_SHOWN_PROBLEMS]]
        if len(self.problems) > MAX_SHOWN_PROBLEMS:
            shown.append(
                f"{source}: … and {len(self.problems) - MAX_SHOWN_PROBLEMS} more problem(s)"
            )
        super().__init__("\n".join(shown))


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, str):
            part = _shortened(part)
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _shortened(text: str, limit: int = 60) -> str:
    # A message echoes what the file said, never megabytes of it.
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


ECHO_LIMIT = 320


def _echo(value: Any) -> str:
    # Up to the longest text a name may be (a title, 300), echoed whole; longer, its start.
    if isinstance(value, str | bytes) and len(value) > ECHO_LIMIT:
        return f"{value[:60]!r}… ({len(value):,} characters)"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value):,} item(s)"
    return _shortened(repr(value), ECHO_LIMIT)


# ----------------------------------------------------------------------------------------
# Reading: bytes to text, text to YAML nodes (no aliases, no duplicate keys, bounded), nodes to
# Python values. Each step refuses what it cannot read with the place in the file.

_UNICODE_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)
_UTF8_BOM = b"\xef\xbb\xbf"


def decode_protocol(data: bytes, *, source: str = "<protocol>") -> str:
    """The text of a protocol file's bytes: UTF-8 only (a UTF-8 byte-order mark is dropped)."""
    if len(data) > MAX_FILE_BYTES:
        raise ProtocolFileError(source, [_too_big(len(data))])
    for bom, encoding in _UNICODE_BOMS:
        if data.startswith(bom):
            raise ProtocolFileError(
                source,
                [
                    Problem(
                        (),
                        f"the file is {encoding} (it starts with a {encoding} byte-order mark); "
                        "protocol files are UTF-8: save it as UTF-8",
                        1,
                    )
                ],
            )
    data = data.removeprefix(_UTF8_BOM)
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ProtocolFileError(
            source,
            [
                Problem(
                    (),
                    "the file contains NUL bytes: it is UTF-16 or UTF-32 without a byte-order "
                    "mark, or not a text file; protocol files are UTF-8: save it as UTF-8",
                    line,
                )
            ],
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProtocolFileError(
            source,
            [
                Problem(
                    (),
                    f"not UTF-8: byte 0x{data[exc.start]:02X} at column {column} is not UTF-8 "
                    "text (a Latin-1 or Windows-1252 file?); protocol files are UTF-8: save it "
                    "as UTF-8",
                    line,
                )
            ],
        ) from None


def _too_big(size: int) -> Problem:
    return Problem(
        (),
        f"the file is {size:,} bytes; a protocol file is at most {MAX_FILE_BYTES:,} bytes",
    )


class _NodeError(Exception):
    def __init__(self, node: yaml.Node, message: str):
        super().__init__(message)
        self.node = node
        self.message = message


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


class _Loader(_SafeLoader):  # type: ignore[valid-type, misc]
    """The safe loader, with dates that exist and numbers of sane length, or a located error."""


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        raise _NodeError(
            node, f"{_shortened(node.value)!r} is not a date that exists (expected YYYY-MM-DD)"
        ) from None


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    if len(node.value) > 30:
        raise _NodeError(node, f"a number of {len(node.value):,} characters is out of range")
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    if len(node.value) > 40:
        raise _NodeError(node, f"a number of {len(node.value):,} characters is out of range")
    return yaml.SafeLoader.construct_yaml_float(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


@dataclass
class Lines:
    """Where each part of the file starts, for the line of a problem: a mapping's keys (each
    with the line of the key and what is under it), a list's items; a scalar is its line."""

    line: int
    keys: dict[Any, tuple[int, Lines | int]] | None = None
    items: list[Lines | int] | None = None


_STR = "tag:yaml.org,2002:str"
# The tags a protocol needs (the plain YAML types); any other (!!binary, !!set, a custom !tag)
# is refused rather than turned into an object the format does not know.
_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_KNOWN_TAGS = _SCALAR_TAGS | {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}
_MERGE = "tag:yaml.org,2002:merge"


class _Open:
    """A collection being read: its value, its lines, where it is, and its pending key."""

    __slots__ = ("index", "key", "key_line", "lines", "path", "value")

    def __init__(self, value: list[Any] | dict[Any, Any], lines: Lines, path: Path):
        self.value = value
        self.lines = lines
        self.path = path
        self.index = 0
        # A mapping's key read, whose value comes next (_NO_KEY: none pending).
        self.key: Any = _NO_KEY
        self.key_line = 0


_NO_KEY = object()


def _compose(loader: Any, source: str) -> tuple[Any, Lines | int | None]:
    """The file's Python value and where its parts are, built in one streaming pass over the
    parser's events that refuses, before anything is built from it, what could cost more than
    the file's size: aliases and anchors (an alias bomb grows exponentially however small the
    file), nesting deeper than MAX_NESTING, more than MAX_NODES values, lists longer than
    MAX_VISITS, several documents, tags the format does not use; and duplicate keys (YAML keeps
    the last one silently, so `window:` twice would plan with the second). Iterative, so no
    nesting can exhaust the stack; linear in the file's size."""
    stack: list[_Open] = []
    problems: list[Problem] = []
    nodes = 0
    documents = 0
    root: Any = None
    root_lines: Lines | int | None = None
    # Plain scalars repeat (keys, codes, small numbers): their tag is resolved once.
    plain_tags: dict[str, str] = {}
    constructors = loader.yaml_constructors
    scalar_event, start_events = yaml.ScalarEvent, yaml.CollectionStartEvent
    end_events, node_events = yaml.CollectionEndEvent, yaml.NodeEvent

    def here() -> Path:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, dict):
            return top.path if top.key is _NO_KEY else (*top.path, _key_name(top.key))
        return (*top.path, top.index)

    def refuse(message: str, line: int | None) -> NoReturn:
        problems.append(Problem(here(), message, line))
        raise ProtocolFileError(source, problems)

    while loader.check_event():
        event: Any = loader.get_event()
        if isinstance(event, end_events):
            done = stack.pop()
            value: Any = done.value
            lines: Lines | int = done.lines
        elif isinstance(event, node_events):
            line = getattr(event.start_mark, "line", 0) + 1
            nodes += 1
            if nodes > MAX_NODES:
                refuse(
                    f"the file has more than {MAX_NODES:,} values; a protocol has far fewer", line
                )
            if isinstance(event, yaml.AliasEvent):
                refuse(
                    f"YAML aliases (*{_shortened(event.anchor or '', 30)}) are not allowed in a "
                    "protocol file; write the value out where it is needed",
                    line,
                )
            if event.anchor is not None:
                refuse(
                    f"YAML anchors (&{_shortened(event.anchor, 30)}) are not allowed in a "
                    "protocol file; write the value out where it is needed",
                    line,
                )
            tag = getattr(event, "tag", None)
            if tag is not None and tag != "!" and tag not in _KNOWN_TAGS:
                refuse(
                    f"YAML tags ({_shortened(tag, 40)}) are not used in protocol files; write "
                    "the plain value",
                    line,
                )
            if isinstance(event, scalar_event):
                text = event.value
                if "\x00" in text:
                    # A "\0" escape in a quoted string: no database column stores it.
                    refuse(
                        "a NUL character (\\0) is not allowed in a protocol file; remove it",
                        line,
                    )
                if tag is None or tag == "!":
                    if event.implicit[0]:
                        tag = plain_tags.get(text)
                        if tag is None:
                            tag = loader.resolve(yaml.ScalarNode, text, event.implicit)
                            if len(text) <= 40:
                                plain_tags[text] = tag
                    else:
                        tag = _STR
                if tag == _STR:
                    value = text
                elif tag == _MERGE:
                    if stack and isinstance(stack[-1].value, dict):
                        stack[-1].key = text
                    refuse(
                        "YAML merge keys (<<) are not allowed in a protocol file; write the "
                        "keys out",
                        line,
                    )
                elif tag not in constructors:
                    # A tag PyYAML's resolver gives but nothing constructs (a plain "=", its
                    # YAML 1.1 `value` tag): the text as written, checked as any text is.
                    value = text
                else:
                    try:
                        value = constructors[tag](loader, yaml.ScalarNode(tag, text))
                    except _NodeError as exc:
                        if stack and isinstance(stack[-1].value, dict):
                            top = stack[-1]
                            if top.key is _NO_KEY:
                                top.key = text
                        refuse(exc.message, line)
                lines = line
            elif isinstance(event, start_events):
                if len(stack) >= MAX_NESTING:
                    refuse(
                        f"nested more than {MAX_NESTING} levels deep; a protocol needs at most 6",
                        line,
                    )
                if isinstance(event, yaml.SequenceStartEvent):
                    stack.append(_Open([], Lines(line, items=[]), here()))
                else:
                    stack.append(_Open({}, Lines(line, keys={}), here()))
                continue
            else:
                continue
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                refuse(
                    "a protocol file is one YAML document; found a second one",
                    getattr(event.start_mark, "line", 0) + 1,
                )
            continue
        else:
            continue

        # A complete value: the root, a list's next item, a mapping's key or its value.
        if not stack:
            root, root_lines = value, lines
            continue
        top = stack[-1]
        container = top.value
        if isinstance(container, list):
            if top.index >= MAX_VISITS:
                refuse(f"a list here has more than {MAX_VISITS:,} items", _first_line(lines))
            container.append(value)
            assert top.lines.items is not None
            top.lines.items.append(lines)
            top.index += 1
        elif top.key is _NO_KEY:
            if not isinstance(lines, int):
                refuse("a key is a single value (a name), not a list or mapping", lines.line)
            assert top.lines.keys is not None
            if len(top.lines.keys) >= MAX_KEYS:
                top.key = value
                refuse(
                    f"a mapping here has more than {MAX_KEYS} keys; the format's largest "
                    "(a visit) has 14",
                    lines,
                )
            top.key, top.key_line = value, lines
        else:
            key = top.key
            assert top.lines.keys is not None
            try:
                first = top.lines.keys.get(key)
            except TypeError:  # an unhashable key cannot be built from scalars; be sure
                first = None
            if first is not None:
                problems.append(
                    Problem(
                        here(),
                        f"duplicate key {_shortened(str(key))!r} (first at line {first[0]}); "
                        "a key appears once in a mapping",
                        top.key_line,
                    )
                )
            else:
                container[key] = value
                top.lines.keys[key] = (top.key_line, lines)
            top.key = _NO_KEY
    if problems:
        raise ProtocolFileError(source, problems)
    return root, root_lines


def _key_name(key: Any) -> str | int:
    return key if isinstance(key, str) else str(key)


def _first_line(lines: Lines | int) -> int:
    return lines if isinstance(lines, int) else lines.line


def _read_yaml(text: str, source: str) -> tuple[Any, Lines | int | None]:
    """The file's Python value and where its parts are (for the line of a problem)."""
    try:
        loader = _Loader(text)
        try:
            data, lines = _compose(loader, source)
        finally:
            loader.dispose()
    except ProtocolFileError:
        raise
    except (ValueError, OverflowError):
        # Without libyaml: PyYAML's scanner fails outside its error types on an escape that
        # names no character ("\U99999999").
        line = getattr(loader, "line", None)
        raise ProtocolFileError(
            source,
            [
                Problem(
                    (),
                    "not valid YAML: an escape sequence in a quoted string names no character",
                    line + 1 if isinstance(line, int) else None,
                )
            ],
        ) from None
    except yaml.YAMLError as error:
        # libyaml words its errors tersely ("did not find expected ','"); PyYAML's own parser
        # says what it expected and what it found. Read again with it, only to say so.
        exc = _python_parser_error(text) or error
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, yaml.reader.ReaderError):
            # A character YAML does not allow in its text (a control character).
            line = text.count("\n", 0, exc.position) + 1
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            what = f"the character U+{code:04X} is not allowed in YAML text (a control character)"
        context = getattr(exc, "context", None)
        detail = f"{what} ({context})" if context else what
        raise ProtocolFileError(
            source, [Problem((), f"not valid YAML: {_shortened(detail, 300)}", line)]
        ) from None
    return data, lines


def _python_parser_error(text: str) -> yaml.YAMLError | None:
    try:
        for _event in yaml.parse(text, Loader=yaml.SafeLoader):
            pass
    except yaml.YAMLError as exc:
        return exc
    except (ValueError, OverflowError):
        # PyYAML's own scanner turns "\U99999999" into chr() of no character and fails
        # outside its error types; libyaml's message for the same place is kept instead.
        return None
    return None


# ----------------------------------------------------------------------------------------
# Parsing


def parse_protocol(
    text: str | bytes,
    *,
    source: str = "<protocol>",
    checks: Sequence[DocumentCheck] = (),
) -> ProtocolDocument:
    """Parse and validate a protocol file, or raise ProtocolFileError naming every problem.

    `text` is the file's text, or its bytes (UTF-8 only). `checks` are further checks of the
    valid document (what the database can hold: trials.protocol_limits), whose problems are
    reported with their lines like the file's own. Everything is bounded (see MAX_* above) and
    linear or n log n in the size of the file, whatever the file says.
    """
    if isinstance(text, bytes):
        text = decode_protocol(text, source=source)
    elif len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ProtocolFileError(source, [_too_big(len(text.encode("utf-8", "surrogatepass")))])
    data, root_lines = _read_yaml(text, source)
    if not isinstance(data, dict):
        raise ProtocolFileError(source, [Problem((), "expected a mapping at the top level", 1)])

    try:
        document = ProtocolDocument.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(
                path=_clean_loc(error["loc"]),
                message=_describe(error),
                line=_line_of(root_lines, _clean_loc(error["loc"])),
            )
            for error in exc.errors()
        ]
        raise ProtocolFileError(source, _dedupe(_without_echoes(problems))) from None

    found = check_consistency(document)
    if not found:
        for check in checks:
            found += check(document)
    problems = [Problem(path, message, _line_of(root_lines, path)) for path, message in found]
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
            f"got {_echo(error['input'])}"
        )
    if kind == "literal_error" or kind == "enum":
        return f"{error['msg'].lower()}, got {_echo(error['input'])}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{message[0].lower()}{message[1:]} (got {_echo(error['input'])})"


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


def _line_of(lines: Lines | int | None, path: Path) -> int | None:
    """1-based line of the part of the file at `path`, or of its nearest existing parent."""
    if lines is None:
        return None
    line = _first_line(lines)
    for part in path:
        if isinstance(lines, int):
            return line
        if lines.keys is not None:
            found = lines.keys.get(part)
            if found is None:
                return line
            line, lines = found
        elif lines.items is not None and isinstance(part, int) and 0 <= part < len(lines.items):
            lines = lines.items[part]
            line = _first_line(lines)
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

    registered: dict[tuple[str, str], int] = {}
    for index, registration in enumerate(doc.trial.registrations):
        key = (registration.registry.value, registration.identifier)
        if key in registered:
            problems.append(
                (
                    ("trial", "registrations", index),
                    f"{registration.registry.value} {registration.identifier} is already "
                    f"listed (at trial.registrations[{registered[key]}])",
                )
            )
        registered.setdefault(key, index)

    occurrences = sum(visit.count for visit in doc.visits)
    if occurrences > MAX_OCCURRENCES:
        problems.append(
            (
                ("visits",),
                f"the visits happen {occurrences:,} times in all (repeats counted); a protocol "
                f"has at most {MAX_OCCURRENCES:,} visit occurrences",
            )
        )

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
        carried: dict[str, int] = {}
        for activity_index, activity in enumerate(visit.activities()):
            activity_path = path + ("procedures", activity_index)
            if activity.procedure in carried:
                # One row per (visit, procedure) in the schedule of activities: a procedure
                # done at some occurrences lists them in its `occurrences`.
                problems.append(
                    (
                        activity_path,
                        f"procedure {activity.procedure!r} is already listed for visit "
                        f"{visit.code} (at procedures[{carried[activity.procedure]}]); list it "
                        "once, with the occurrences it is done at",
                    )
                )
            carried.setdefault(activity.procedure, activity_index)
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
    index_of = {a.code: i for i, a in enumerate(doc.anchors)}
    relative_to = {
        a.code: a.relative_to
        for a in doc.anchors
        if a.relative_to is not None and a.relative_to in index_of
    }
    for cycle in _cycles(relative_to):
        # Said from the anchor the file lists first, as a person reading it down would.
        first = min(range(len(cycle)), key=lambda at: index_of[cycle[at]])
        cycle = cycle[first:] + cycle[:first]
        problems.append(
            (
                ("anchors", index_of[cycle[0]], "relative_to"),
                "anchors form a cycle: " + " -> ".join([*cycle, cycle[0]]),
            )
        )
    return problems


def _cycles(points_to: dict[str, str]) -> list[list[str]]:
    """The cycles of a graph where each code points to at most one other (a visit to the visit
    it is anchored to), each found once, in linear time and without recursion. A cycle is
    listed from where the walk from the earliest code (in `points_to`'s order) entered it."""
    done: set[str] = set()
    cycles: list[list[str]] = []
    for start in points_to:
        if start in done:
            continue
        position: dict[str, int] = {}
        walk: list[str] = []
        current: str | None = start
        while current is not None and current not in done and current not in position:
            position[current] = len(walk)
            walk.append(current)
            current = points_to.get(current)
        if current is not None and current in position:
            cycles.append(walk[position[current] :])
        done.update(walk)
    return cycles


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
    index_of = {v.code: i for i, v in enumerate(doc.visits)}
    depends_on = {
        v.code: v.anchor.visit
        for v in doc.visits
        if isinstance(v.anchor, VisitAnchor) and v.anchor.visit in index_of
    }
    problems: list[tuple[Path, str]] = [
        (
            ("visits", index_of[cycle[0]], "anchor"),
            "visit anchors form a cycle: " + " -> ".join([*cycle, cycle[0]]),
        )
        for cycle in _cycles(depends_on)
    ]
    if problems:
        return problems
    depth = anchor_chain_depths(doc)
    deepest = max(depth.values(), default=0)
    if deepest > MAX_ANCHOR_CHAIN:
        first = next(v for v in doc.visits if depth[v.code] > MAX_ANCHOR_CHAIN)
        problems.append(
            (
                ("visits", index_of[first.code], "anchor"),
                f"visit {first.code} is anchored through a chain of {depth[first.code]:,} "
                f"visits (the longest chain has {deepest:,}); a chain of visits anchored to "
                f"earlier visits is at most {MAX_ANCHOR_CHAIN:,} long: anchor later visits to a "
                "participant anchor, or use repeat",
            )
        )
    return problems


def anchor_chain_depths(doc: ProtocolDocument) -> dict[str, int]:
    """For each visit, how many visits its date is chained through: 0 when anchored to a
    participant anchor, 1 + its anchor visit's otherwise. Iterative, each visit visited once;
    the document has no cycle (check_consistency refuses one first)."""
    visits = {v.code: v for v in doc.visits}
    depth: dict[str, int] = {}
    for visit in doc.visits:
        walk: list[str] = []
        walked: set[str] = set()
        current: VisitSection | None = visit
        while current is not None and current.code not in depth:
            walk.append(current.code)
            walked.add(current.code)
            anchor = current.anchor
            current = visits.get(anchor.visit) if isinstance(anchor, VisitAnchor) else None
            if current is not None and current.code in walked:
                break  # a cycle: reported by _check_visit_cycles, never planned
        base = depth[current.code] + 1 if current is not None and current.code in depth else 0
        for offset, code in enumerate(reversed(walk)):
            depth[code] = base + offset
    return depth


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
        # (root anchor, nominal day) of an occurrence, following its chain of visit anchors
        # with a stack rather than recursion (chains are long; check_visit_cycles ran first).
        pending = [(code, occurrence)]
        while pending:
            key = pending[-1]
            if key in nominal:
                pending.pop()
                continue
            visit = visits[key[0]]
            shift = visit.offset_days + (key[1] - 1) * (
                visit.repeat.every_days if visit.repeat else 0
            )
            if isinstance(visit.anchor, str):
                nominal[key] = (visit.anchor, shift)
                pending.pop()
                continue
            ref = visits[visit.anchor.visit]
            source = (ref.code, visit.anchor.occurrence or ref.count)
            if source in nominal:
                root, base = nominal[source]
                nominal[key] = (root, base + shift)
                pending.pop()
            else:
                pending.append(source)
        return nominal[(code, occurrence)]

    all_arms = frozenset(a.code for a in doc.arms)
    by_root: dict[str, list[_Occurrence]] = {}
    too_far: list[tuple[Path, str]] = []
    for index, visit in enumerate(doc.visits):
        for occurrence in range(1, visit.count + 1):
            root, day = resolve(visit.code, occurrence)
            if abs(day) > MAX_SPAN_DAYS:
                too_far.append(
                    (
                        ("visits", index, "offset_days"),
                        f"{visit.code} occurrence {occurrence} falls {day:,} days from "
                        f"{root}; a protocol's visits lie within {MAX_SPAN_DAYS:,} days "
                        "(100 years) of their anchor",
                    )
                )
                break
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

    if too_far:
        return too_far
    problems: list[tuple[Path, str]] = []
    reported: set[tuple[int, int]] = set()
    for occurrences in by_root.values():
        occurrences.sort(key=lambda o: (o.day, o.visit_index, o.occurrence))
        # The nearest earlier occurrence a participant of each arm has (None: of any arm, for
        # a trial without arms): one pass, n log n with the sort.
        latest: dict[str | None, _Occurrence] = {}
        for later in occurrences:
            # For each arm the later visit applies to, the nearest earlier occurrence that a
            # participant of that arm also has: an overlap in any one arm is an error.
            arms_to_check: list[str | None] = [*sorted(later.arms)] or [None]
            for arm in arms_to_check:
                earlier = latest.get(arm)
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
            latest[None] = later
            for arm in later.arms:
                latest[arm] = later
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
