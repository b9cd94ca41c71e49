"""What the API shows, and the input fields the operations share.

Output serializers only present: what a role may see is decided before a row reaches them
(the queryset from `scheduler.access`, and the `show_contact` / `arm` context computed there).
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from django.core.exceptions import ObjectDoesNotExist
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models.manager import BaseManager
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField
from rest_framework.settings import api_settings

from participants.models import Participant
from scheduler.api.preconditions import participant_etag, visit_etag
from scheduler.models import ScheduledMilestone, ScheduledVisit
from trials import protocol_file
from trials.models import Site, Trial

# Every date the API accepts lies in this range (the one the admin's forms and protocol files
# accept too), so no arithmetic on it (windows, time zones, taper weeks) can overflow Python's
# date range into a server error.
EARLIEST_DATE = protocol_file.EARLIEST_DATE
LATEST_DATE = protocol_file.LATEST_DATE


# A time followed by a space and an offset's digits: "…09:00:00 09:00", a "+09:00" whose "+"
# a query string turned into a space.
_OFFSET_AFTER_SPACE = re.compile(r"\d \d{2}(:?\d{2})?$")


class InstantField(serializers.DateTimeField):
    """An ISO 8601 instant with its zone (Z or an offset), from 1900 to 2200, as UTC. A time
    without a zone is refused rather than read in some zone the client did not mean."""

    advice = "give one with its zone, e.g. 2026-02-03T13:00:00Z"
    zone_advice = ""

    def to_internal_value(self, value: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise serializers.ValidationError(f"expected an ISO 8601 instant; {self.advice}")
        try:
            instant = parse_datetime(value.strip())
        except ValueError:
            instant = None
        if instant is None:
            # "…T09:00:00+09:00" in a query string arrives as "…T09:00:00 09:00": a URL's "+"
            # is a space.
            plus = (
                "; a '+' in a URL reads as a space: send it as %2B"
                if _OFFSET_AFTER_SPACE.search(value)
                else ""
            )
            raise serializers.ValidationError(
                f"{value[:40]!r} is not an ISO 8601 instant; {self.advice}{plus}"
            )
        if instant.tzinfo is None:
            raise serializers.ValidationError(
                "give the instant's zone (Z for UTC, or an offset such as -05:00)"
                + self.zone_advice
            )
        if not EARLIEST_DATE <= instant.date() <= LATEST_DATE:
            raise serializers.ValidationError(f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
        return instant.astimezone(dt.UTC)


class BoundedDateField(serializers.DateField):
    """A date from 1900-01-01 to 2200-12-31, and whatever `validators` add to that range."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["validators"] = [
            MinValueValidator(EARLIEST_DATE, message=f"must be on or after {EARLIEST_DATE}"),
            MaxValueValidator(LATEST_DATE, message=f"must be on or before {LATEST_DATE}"),
            *kwargs.get("validators", ()),
        ]
        super().__init__(**kwargs)


class PlannedOut(serializers.Serializer[Any]):
    """An output serializer that reads its rows through a plan made once per class.

    DRF's `Serializer.to_representation` asks every field, for every row, to find its value
    (`get_attribute`: a try/except around a walk of the source, a callable check, a null
    check, a PKOnlyObject check) and then to convert it. For a calendar of sixty visits that
    was most of the response's time. Here each readable field gets, once, a getter for its
    source and a converter: `str`, `int` and ISO dates directly, everything else through the
    field's own `to_representation`, nested lists through the child's plan. A value the plan
    cannot read plainly (a missing relation, a callable, a mapping row) goes through DRF's
    own code for that field, so the output is DRF's output, byte for byte
    (tests/api/test_planned_output.py compares the two on every kind of row).

    The plan is made once per class, not per response: building a serializer's fields
    (deep copies of the declared ones, a model's fields introspected) cost a calendar about
    0.8 ms a response. What depends on the response is bound to each instance: method fields
    (which read `self.context`) and nested serializers (built with this one's context). Only
    fields whose conversion reads nothing but the value are shared (`_SHARED_FIELDS`); a class
    with any other field, or one that chooses its fields itself (`get_fields`, `__init__`),
    builds its plan per instance, as DRF would.
    """

    def _plan(self) -> list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]]:
        plan = self.__dict__.get("_planned")
        if plan is None:
            shared = _class_plan(type(self))
            if shared is None:
                plan = [
                    (field.field_name, _getter(field), _converter(self, field))
                    for field in self._readable_fields
                ]
            else:
                plan = [(name, get, bind(self)) for name, get, bind in shared]
            self.__dict__["_planned"] = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        if isinstance(instance, Mapping):
            return super().to_representation(instance)  # type: ignore[no-any-return]
        row: dict[str, Any] = {}
        for name, get, convert in self._plan():
            try:
                value = get(instance)
            except (AttributeError, KeyError, ObjectDoesNotExist):
                value = _slow  # DRF decides: a default, null, skipped, or its own error
            if value is _slow or callable(value):
                field = self.fields[name]
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
                if value is None:
                    row[name] = None
                else:
                    row[name] = field.to_representation(value)
            elif value is None:
                row[name] = None
            else:
                row[name] = convert(value)
        return row


_slow = object()

# Fields whose `to_representation` reads only the value and the field's own arguments (not
# its parent, context or request), so one instance may serve every response.
_SHARED_FIELDS = (
    serializers.BigIntegerField,  # type: ignore[attr-defined]  # DRF 3.16, not in the stubs
    serializers.BooleanField,
    serializers.ChoiceField,
    serializers.DateField,
    serializers.DateTimeField,
    serializers.DecimalField,
    serializers.FloatField,
)
_Binder = Callable[[serializers.Serializer[Any]], Callable[[Any], Any]]
_CLASS_PLANS: dict[type[Any], list[tuple[str, Callable[[Any], Any], _Binder]] | None] = {}


def _class_plan(cls: type[PlannedOut]) -> list[tuple[str, Callable[[Any], Any], _Binder]] | None:
    """Each readable field of `cls`: its name, its getter, and what gives an instance its
    converter; None if the class cannot share one (see `PlannedOut`)."""
    try:
        return _CLASS_PLANS[cls]
    except KeyError:
        pass
    plan: list[tuple[str, Callable[[Any], Any], _Binder]] | None = []
    own_choice = any(
        "get_fields" in vars(base) or "__init__" in vars(base)
        for base in cls.__mro__
        if issubclass(base, PlannedOut)
    )
    if own_choice:
        plan = None
    else:
        for field in cls()._readable_fields:
            binder = _binder(field)
            if binder is None:
                plan = None
                break
            assert plan is not None
            plan.append((cast(str, field.field_name), _getter(field), binder))
    _CLASS_PLANS[cls] = plan  # a race computes the same plan twice; either is kept
    return plan


def _binder(field: serializers.Field[Any, Any, Any, Any]) -> _Binder | None:
    kind = type(field)
    if kind is serializers.SerializerMethodField:
        method_name = cast(Any, field).method_name
        return lambda serializer: getattr(serializer, method_name)  # type: ignore[no-any-return]
    if isinstance(field, serializers.ListSerializer) and isinstance(field.child, PlannedOut):
        child_class = type(field.child)
        return lambda serializer: _many(child_class(context=serializer.context))
    if kind in (serializers.CharField, serializers.IntegerField, *_SHARED_FIELDS):
        convert = _converter(cast(Any, None), field)
        return lambda serializer: convert
    return None


def _getter(field: serializers.Field[Any, Any, Any, Any]) -> Callable[[Any], Any]:
    if not field.source_attrs:  # source="*": the row itself (method fields, for one)
        return lambda instance: instance
    return operator.attrgetter(".".join(field.source_attrs))


def _iso_date(value: Any) -> Any:
    return value if isinstance(value, str) else value.isoformat()


def _many(child: PlannedOut) -> Callable[[Any], list[dict[str, Any]]]:
    def many(value: Any) -> list[dict[str, Any]]:
        rows = value.all() if isinstance(value, BaseManager) else value
        return [child.to_representation(item) for item in rows]

    return many


def _converter(
    serializer: serializers.Serializer[Any], field: serializers.Field[Any, Any, Any, Any]
) -> Callable[[Any], Any]:
    kind = type(field)
    if isinstance(field, serializers.SerializerMethodField) and kind is type(field):
        return getattr(serializer, cast(Any, field).method_name)  # type: ignore[no-any-return]
    if kind is serializers.CharField:
        return str
    if kind is serializers.IntegerField:
        return int
    date_format = getattr(field, "format", api_settings.DATE_FORMAT)
    if kind is serializers.DateField and str(date_format).lower() == ISO_8601:
        return _iso_date
    if isinstance(field, serializers.ListSerializer) and isinstance(field.child, PlannedOut):
        return _many(field.child)
    return field.to_representation


# ----------------------------------------------------------------------------------------
# Trials, protocol versions, sites


class TrialOut(serializers.ModelSerializer[Trial]):
    class Meta:
        model = Trial
        fields = ["code", "title", "phase", "sponsor", "blinding", "conditions"]


class ProtocolVersionOut(serializers.Serializer[Any]):
    label = serializers.CharField()  # type: ignore[assignment]  # a field, not Field.label
    status = serializers.CharField()
    version_date = serializers.DateField(allow_null=True)
    published_at = serializers.DateTimeField()
    source_sha256 = serializers.CharField()


class AnchorRefOut(serializers.Serializer[Any]):
    anchor = serializers.CharField(allow_null=True, help_text="A participant anchor code.")
    visit = serializers.CharField(
        allow_null=True, help_text="Or the actual date of an earlier visit (its code)."
    )
    occurrence = serializers.IntegerField(
        allow_null=True, help_text="Which occurrence of a repeating visit; null: its last."
    )


class WindowDaysOut(serializers.Serializer[Any]):
    before = serializers.IntegerField()
    after = serializers.IntegerField()


class RepeatOut(serializers.Serializer[Any]):
    every_days = serializers.IntegerField()
    count = serializers.IntegerField()


class ActivityOut(serializers.Serializer[Any]):
    procedure = serializers.CharField()
    name = serializers.CharField()
    duration_minutes = serializers.IntegerField()
    occurrences = serializers.ListField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="Occurrences of the visit that carry it; null: every occurrence.",
    )


class VisitDefinitionOut(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()
    epoch = serializers.CharField()
    anchor = AnchorRefOut()
    offset_days = serializers.IntegerField()
    window = WindowDaysOut()
    repeat = RepeatOut(allow_null=True)
    duration_minutes = serializers.IntegerField()
    mode = serializers.CharField()
    arms = serializers.ListField(child=serializers.CharField(), help_text="Empty: every arm.")
    unscheduled_allowed = serializers.BooleanField()
    procedures = ActivityOut(many=True)


class ProcedureOut(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()
    duration_minutes = serializers.IntegerField()
    preparation = serializers.CharField()
    resource = serializers.CharField()


class CodeNameOut(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()


class AnchorOut(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()
    relative_to = serializers.CharField(allow_null=True)
    min_days = serializers.IntegerField(allow_null=True)
    max_days = serializers.IntegerField(allow_null=True)
    default_days = serializers.IntegerField(allow_null=True)


class MilestoneRuleOut(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    anchor = AnchorRefOut()
    offset_days = serializers.IntegerField()
    participant_facing = serializers.BooleanField()
    taper = serializers.DictField(allow_null=True, help_text="The taper's parameters, as filed.")


class CriterionOut(serializers.Serializer[Any]):
    code = serializers.CharField()
    kind = serializers.CharField()
    text = serializers.CharField()
    check = serializers.DictField(allow_null=True)


class ScheduleOut(serializers.Serializer[Any]):
    """A published protocol version's schedule of activities, as data."""

    trial = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field, not Field.label
    version_date = serializers.DateField(allow_null=True)
    anchors = AnchorOut(many=True)
    arms = CodeNameOut(many=True)
    epochs = CodeNameOut(many=True)
    procedures = ProcedureOut(many=True)
    visits = VisitDefinitionOut(many=True)
    milestones = MilestoneRuleOut(many=True)
    eligibility = CriterionOut(many=True)


class SiteOut(serializers.ModelSerializer[Site]):
    today = serializers.SerializerMethodField(help_text="The calendar date at the site now.")

    class Meta:
        model = Site
        fields = ["code", "name", "timezone", "country", "address", "phone", "email", "today"]

    def get_today(self, site: Site) -> dt.date:
        return self.context["today"](site)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------
# Participants


class ContactOut(serializers.Serializer[Any]):
    email = serializers.CharField()
    phone = serializers.CharField()
    guardian_name = serializers.CharField()
    guardian_email = serializers.CharField()
    guardian_phone = serializers.CharField()


class ParticipantOut(serializers.ModelSerializer[Participant]):
    trial = serializers.CharField(source="trial.code")
    site = serializers.CharField(source="site.code")
    protocol_version = serializers.CharField(source="protocol_version.label")
    anchors = serializers.SerializerMethodField()
    contact = serializers.SerializerMethodField(
        help_text="Only for the site's coordinators and investigators; null for other roles."
    )
    arm = serializers.SerializerMethodField(
        help_text="The treatment arm's code: only for roles that may see it (never a blinded "
        "role in a blinded trial); null otherwise or when no arm is assigned."
    )
    etag = serializers.SerializerMethodField()

    class Meta:
        model = Participant
        fields = [
            "id",
            "trial",
            "site",
            "study_id",
            "status",
            "protocol_version",
            "birth_date",
            "weight_kg",
            "timezone",
            "language",
            "enrolled_at",
            "enrolled_on",
            "ended_on",
            "anchors",
            "contact",
            "arm",
            "etag",
        ]

    @extend_schema_field(serializers.DictField(child=serializers.DateField()))
    def get_anchors(self, participant: Participant) -> dict[str, str]:
        return {a.code: a.date.isoformat() for a in participant.anchors.all()}

    @extend_schema_field(ContactOut(allow_null=True))
    def get_contact(self, participant: Participant) -> dict[str, str] | None:
        if not self.context["show_contact"](participant):
            return None
        return {
            "email": participant.email,
            "phone": participant.phone,
            "guardian_name": participant.guardian_name,
            "guardian_email": participant.guardian_email,
            "guardian_phone": participant.guardian_phone,
        }

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_arm(self, participant: Participant) -> str | None:
        return self.context["arms"].get(participant.pk)  # type: ignore[no-any-return]

    def get_etag(self, participant: Participant) -> str:
        return participant_etag(participant)


# ----------------------------------------------------------------------------------------
# Visits, milestones, calendars


class DateWindowOut(PlannedOut):
    start = serializers.DateField()
    end = serializers.DateField()


class ScheduledProcedureOut(PlannedOut):
    code = serializers.CharField(source="procedure.code")
    name = serializers.CharField(source="procedure.name")
    duration_minutes = serializers.IntegerField(source="procedure.duration_minutes")
    status = serializers.CharField()
    not_done_reason = serializers.CharField()


class VisitOut(PlannedOut, serializers.ModelSerializer[ScheduledVisit]):
    participant = serializers.IntegerField(source="participant_id")
    study_id = serializers.CharField(source="participant.study_id")
    trial = serializers.CharField(source="participant.trial.code")
    site = serializers.CharField(source="participant.site.code")
    code = serializers.CharField()
    name = serializers.CharField()
    protocol_version = serializers.CharField(source="protocol_version.label")
    window = serializers.SerializerMethodField()
    glance_status = serializers.SerializerMethodField(
        help_text="upcoming, due, booked, overdue, done, out_of_window, missed or cancelled: "
        "computed from the record and the site's today."
    )
    procedures = ScheduledProcedureOut(many=True, source="procedures_in_order")
    etag = serializers.SerializerMethodField()

    class Meta:
        model = ScheduledVisit
        fields = [
            "id",
            "participant",
            "study_id",
            "trial",
            "site",
            "code",
            "name",
            "occurrence",
            "unscheduled_reason",
            "protocol_version",
            "target_date",
            "window",
            "estimated",
            "status",
            "glance_status",
            "booked_start",
            "booked_date",
            "actual_start",
            "actual_date",
            "deviation_days",
            "reason",
            "procedures",
            "version",
            "etag",
        ]

    @extend_schema_field(DateWindowOut())
    def get_window(self, visit: ScheduledVisit) -> dict[str, str]:
        return {"start": visit.window_start.isoformat(), "end": visit.window_end.isoformat()}

    def get_glance_status(self, visit: ScheduledVisit) -> str:
        return self.context["glance"](visit)  # type: ignore[no-any-return]

    def get_etag(self, visit: ScheduledVisit) -> str:
        return visit_etag(visit)


class MilestoneOut(PlannedOut, serializers.ModelSerializer[ScheduledMilestone]):
    code = serializers.CharField(source="rule.code")
    name = serializers.CharField(source="rule.name")
    kind = serializers.CharField(source="rule.kind")

    class Meta:
        model = ScheduledMilestone
        fields = [
            "id",
            "code",
            "name",
            "kind",
            "sequence",
            "due_date",
            "dose_mg",
            "estimated",
            "flag",
            "status",
        ]


class CalendarOut(PlannedOut):
    participant = serializers.IntegerField()
    study_id = serializers.CharField()
    site = serializers.CharField()
    site_today = serializers.DateField()
    visits = VisitOut(many=True)
    milestones = MilestoneOut(many=True)
    taper_doses = MilestoneOut(many=True, help_text="The milestones that carry a daily dose.")


# ----------------------------------------------------------------------------------------
# What a change does to a calendar (the previews and the confirmed results)


class VisitChangeOut(serializers.Serializer[Any]):
    visit_code = serializers.CharField()
    occurrence = serializers.IntegerField()
    kind = serializers.CharField(help_text="added, moved, changed or cancelled")
    old_target = serializers.DateField(allow_null=True)
    new_target = serializers.DateField(allow_null=True)
    old_window = DateWindowOut(allow_null=True)
    new_window = DateWindowOut(allow_null=True)
    booked_date = serializers.DateField(allow_null=True)
    out_of_window = serializers.BooleanField()


class MilestoneChangeOut(serializers.Serializer[Any]):
    milestone_code = serializers.CharField()
    sequence = serializers.IntegerField()
    kind = serializers.CharField()
    old_due = serializers.DateField(allow_null=True)
    new_due = serializers.DateField(allow_null=True)
    old_dose_mg = serializers.DecimalField(max_digits=7, decimal_places=2, allow_null=True)
    new_dose_mg = serializers.DecimalField(max_digits=7, decimal_places=2, allow_null=True)
    flag = serializers.CharField()


class CalendarDiffOut(serializers.Serializer[Any]):
    visits = VisitChangeOut(many=True)
    milestones = MilestoneChangeOut(many=True)


def window_dict(window: tuple[dt.date, dt.date] | None) -> dict[str, dt.date] | None:
    return None if window is None else {"start": window[0], "end": window[1]}


def calendar_diff_data(diff: Any) -> dict[str, Any]:
    """A CalendarDiff (scheduler.calendar) as plain JSON data."""
    return CalendarDiffOut(
        {
            "visits": [
                {
                    "visit_code": c.visit_code,
                    "occurrence": c.occurrence,
                    "kind": c.kind,
                    "old_target": c.old_target,
                    "new_target": c.new_target,
                    "old_window": window_dict(c.old_window),
                    "new_window": window_dict(c.new_window),
                    "booked_date": c.booked_date,
                    "out_of_window": c.out_of_window,
                }
                for c in diff.visits
            ],
            "milestones": [
                {
                    "milestone_code": c.milestone_code,
                    "sequence": c.sequence,
                    "kind": c.kind,
                    "old_due": c.old_due,
                    "new_due": c.new_due,
                    "old_dose_mg": c.old_dose_mg,
                    "new_dose_mg": c.new_dose_mg,
                    "flag": c.flag,
                }
                for c in diff.milestones
            ],
        }
    ).data
