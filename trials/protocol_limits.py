"""What the database can hold, checked on a protocol document before anything is written.

`trials.protocol_file` knows the format and imports no Django; this module knows the models.
Each value the import stores comes from a place in the file (`STORED`), and is checked against
the model field it goes into, read from the field itself (max_length, the integer range the
databases we run on hold, decimal digits, choices), so a limit changed in a model is checked
here without anyone remembering to. Every unique and check constraint of the models the import
writes is named in `CONSTRAINTS` with where it is enforced; tests/trials/test_malformed_files.py
walks the models and fails when a field or constraint is missing here.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator
from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Q

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
from trials.protocol_file import MAX_TEXT, Path, ProtocolDocument

# Where each stored value is in the file: (the list of items, or the section, it is read from;
# the attribute path on each item). A missing attribute (an optional part not given) is skipped.
Where = tuple[tuple[str, ...], tuple[str, ...]]


def _part(section: str, **fields: tuple[str, ...]) -> dict[str, Where]:
    return {
        "code": ((section,), ("code",)),
        **{field: ((section,), path) for field, path in fields.items()},
    }


STORED: dict[type[models.Model], dict[str, Where]] = {
    Trial: {
        "code": (("trial",), ("code",)),
        "title": (("trial",), ("title",)),
        "title_ja": (("trial",), ("title_ja",)),
        "phase": (("trial",), ("phase",)),
        "sponsor": (("trial",), ("sponsor",)),
        "blinding": (("trial",), ("blinding",)),
        "conditions": (("trial",), ("conditions",)),
    },
    TrialRegistration: {
        "registry": (("trial", "registrations"), ("registry",)),
        "identifier": (("trial", "registrations"), ("identifier",)),
    },
    ProtocolVersion: {
        "label": (("version",), ("label",)),
        "status": (("version",), ("status",)),
        "version_date": (("version",), ("date",)),
    },
    Anchor: _part(
        "anchors",
        name=("name",),
        name_ja=("name_ja",),
        relative_to=("relative_to",),
        min_days=("min_days",),
        max_days=("max_days",),
        default_days=("default_days",),
    ),
    Arm: _part("arms", name=("name",), description=("description",)),
    Epoch: _part("epochs", name=("name",), name_ja=("name_ja",)),
    ProcedureDefinition: _part(
        "procedures",
        name=("name",),
        name_ja=("name_ja",),
        duration_minutes=("duration_minutes",),
        preparation=("preparation",),
        preparation_ja=("preparation_ja",),
        resource=("resource",),
        resource_count=("resource_count",),
        staff_kind=("staff", "kind"),
        staff_count=("staff", "count"),
    ),
    VisitDefinition: _part(
        "visits",
        name=("name",),
        name_ja=("name_ja",),
        anchor_code=("anchor",),
        anchor_occurrence=("anchor", "occurrence"),
        offset_days=("offset_days",),
        window_before_days=("window", "before"),
        window_after_days=("window", "after"),
        repeat_every_days=("repeat", "every_days"),
        repeat_count=("repeat", "count"),
        duration_minutes=("duration_minutes",),
        mode=("mode",),
        unscheduled_allowed=("unscheduled_allowed",),
        plan=("plan",),
    ),
    ScheduledActivity: {},
    MilestoneRule: _part(
        "milestones",
        name=("name",),
        name_ja=("name_ja",),
        kind=("kind",),
        anchor_code=("anchor",),
        anchor_occurrence=("anchor", "occurrence"),
        offset_days=("offset_days",),
        participant_facing=("participant_facing",),
        taper=("taper",),
    ),
    EligibilityCriterion: _part(
        "eligibility",
        kind=("kind",),
        text=("text",),
        check_attribute=("check", "attribute"),
        check_min=("check", "min"),
        check_max=("check", "max"),
        check_min_inclusive=("check", "min_inclusive"),
        check_max_inclusive=("check", "max_inclusive"),
    ),
    ReminderRule: _part(
        "reminders",
        event=("event",),
        days=("days",),
        at=("at",),
        channels=("channels",),
        visit_codes=("visits",),
        procedure_codes=("procedures",),
    ),
}

# Fields the import fills itself, not from a value of the file, and why each always fits.
SET_BY_IMPORT: dict[type[models.Model], dict[str, str]] = {
    model: {"order": "the item's index in its list, below MAX_VISITS"}
    for model in STORED
    if any(field.name == "order" for field in model._meta.get_fields())
}
SET_BY_IMPORT[Trial] = {}
SET_BY_IMPORT[TrialRegistration] = {}
SET_BY_IMPORT[ProtocolVersion] = {
    "published_at": "now, when the status is published",
    "source_name": "the file's name, its last 200 characters (protocol_import)",
    "source_sha256": "64 hex digits",
    "imported_at": "now",
    "default_reminders": "whether the file has a reminders section",
}
SET_BY_IMPORT[ScheduledActivity] = {
    "order": "the procedure's index in the visit's list, below MAX_ITEMS",
    "occurrences": "a list of at most 1,000 occurrences, each 1 to 1,000 (a JSON column)",
}

# Every unique and check constraint of the models the import writes: where it is enforced
# before the database would refuse.
CONSTRAINTS: dict[str, str] = {
    "unique_registration": "a registration once per file (check_consistency) and not another "
    "trial's (registrations_free, below)",
    "unique_protocol_label": "protocol_import: a published label is refused, a draft replaced",
    "published_has_timestamp": "protocol_import sets published_at with the status published",
    **{
        f"unique_{name}_code": "check_consistency: a code once per section"
        for name in ("anchor", "arm", "epoch", "procedure", "visit", "milestone", "criterion")
    },
    "unique_reminder_code": "check_consistency: a code once per section",
    "visit_exactly_one_anchor": "the format's anchor is a code or {visit: CODE}, never both",
    "milestone_exactly_one_anchor": "the format's anchor is a code or {visit: CODE}, never both",
    "visit_repeat_consistent": "repeat: count >= 2 and every_days >= 1; no repeat is count 1",
    "unique_activity": "check_consistency: a procedure once per visit",
}
# Fields declared unique=True (beyond `id`): how the import never writes a second one.
UNIQUE_FIELDS: dict[tuple[type[models.Model], str], str] = {
    (Trial, "code"): "protocol_import updates the trial of that code, never adds a second",
}


def _integer_range(field: models.Field[Any, Any]) -> tuple[int | None, int | None]:
    # The ranges Postgres holds (SQLite holds more): what a deployment must be able to store.
    return BaseDatabaseOperations.integer_field_ranges.get(field.get_internal_type(), (None, None))


def _values(doc: ProtocolDocument, where: Where) -> Iterator[tuple[Path, Any]]:
    container_path, attributes = where
    container: Any = doc
    for name in container_path:
        container = getattr(container, name)
    items: list[tuple[Path, Any]]
    if isinstance(container, tuple):
        items = [((*container_path, index), item) for index, item in enumerate(container)]
    else:
        items = [(container_path, container)]
    for path, item in items:
        value: Any = item
        for name in attributes:
            value = getattr(value, name, None)
            if value is None:
                break
        if value is not None:
            yield (*path, *attributes), value


def _problem(field: models.Field[Any, Any], value: Any) -> str | None:
    kind = field.get_internal_type()
    limit = field.max_length if kind in {"CharField", "SlugField"} else None
    if isinstance(value, str) and limit is not None and len(value) > limit:
        return f"at most {field.max_length} characters are stored here (got {len(value):,})"
    if isinstance(value, str) and kind == "TextField" and len(value) > MAX_TEXT:
        return f"at most {MAX_TEXT:,} characters are stored here (got {len(value):,})"
    if isinstance(value, str) and field.choices:
        allowed = [str(choice) for choice, _ in field.flatchoices]
        if value not in allowed:
            return f"expected one of: {', '.join(allowed)}"
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = _integer_range(field)
        if (low is not None and value < low) or (high is not None and value > high):
            return f"expected a whole number from {low:,} to {high:,} (got {value:,})"
    if isinstance(value, Decimal) and isinstance(field, models.DecimalField):
        try:
            DecimalValidator(field.max_digits, field.decimal_places)(value)
        except ValidationError as exc:
            return " ".join(str(message) for message in exc.messages).rstrip(".").lower()
    return None


def database_fit(doc: ProtocolDocument) -> list[tuple[Path, str]]:
    """Each value of the document against the model field it is stored in."""
    problems: list[tuple[Path, str]] = []
    for model, fields in STORED.items():
        for name, where in fields.items():
            field = model._meta.get_field(name)
            assert isinstance(field, models.Field)
            for path, value in _values(doc, where):
                if hasattr(value, "value") and isinstance(value.value, str):
                    value = value.value  # an enum member: its stored text
                message = _problem(field, value)
                if message is not None:
                    problems.append((path, message))
    return problems


def registrations_free(doc: ProtocolDocument) -> list[tuple[Path, str]]:
    """A registry number belongs to one trial: refuse one another trial already has."""
    registrations = doc.trial.registrations
    if not registrations:
        return []
    wanted = Q()
    for registration in registrations:
        wanted |= Q(registry=registration.registry.value, identifier=registration.identifier)
    taken = {
        (registry, identifier): code
        for registry, identifier, code in TrialRegistration.objects.filter(wanted)
        .exclude(trial__code=doc.trial.code)
        .values_list("registry", "identifier", "trial__code")
    }
    problems: list[tuple[Path, str]] = []
    for index, registration in enumerate(registrations):
        other = taken.get((registration.registry.value, registration.identifier))
        if other is not None:
            problems.append(
                (
                    ("trial", "registrations", index, "identifier"),
                    f"{registration.registry.value} {registration.identifier} is the registration "
                    f"of trial {other}; a registry number belongs to one trial",
                )
            )
    return problems


DATABASE_CHECKS = (database_fit, registrations_free)
