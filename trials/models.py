from __future__ import annotations

import functools
import zoneinfo
from types import SimpleNamespace

import holidays
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import translation
from simple_history.models import HistoricalRecords

from trials.protocol_file import (
    Blinding,
    CheckedAttribute,
    CriterionKind,
    MilestoneKind,
    Registry,
    VisitMode,
)


@functools.cache
def iana_zones() -> frozenset[str]:
    """Every IANA zone name the process's time zone database knows.

    Read once per process: `zoneinfo.available_timezones()` walks the ~600 files of the
    database on every call (4 ms), which every participant registered, and every form or API
    call that sets a zone, paid again. A new tzdata takes effect at the next restart, like a
    new release of the app.
    """
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(value: str) -> None:
    if value not in iana_zones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin).")


class Trial(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=300)
    # Japanese texts of protocol-defined names (the file's `*_ja` fields); empty: none given,
    # and people reading Japanese see the English one. See `localized`.
    title_ja = models.CharField(max_length=300, blank=True)
    phase = models.CharField(max_length=5)
    sponsor = models.CharField(max_length=200)
    blinding = models.CharField(max_length=10, choices=[(b.value, b.value) for b in Blinding])
    conditions = models.JSONField(default=list, blank=True)
    sites: models.ManyToManyField[Site, TrialSite] = models.ManyToManyField(
        "Site", through="TrialSite", related_name="trials"
    )
    # Trials and sites are audited like clinical records: who changed what, when and why.
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    @property
    def is_blinded(self) -> bool:
        return self.blinding != Blinding.OPEN


class TrialRegistration(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="registrations")
    registry = models.CharField(max_length=10, choices=[(r.value, r.value) for r in Registry])
    identifier = models.CharField(max_length=40)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registry", "identifier"], name="unique_registration")
        ]

    def __str__(self) -> str:
        return f"{self.registry} {self.identifier}"


class Site(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, validators=[validate_timezone])
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2, e.g. US, JP")
    address = models.TextField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    # The mailbox the site controls: ORGANIZER of its invites and where replies go.
    email = models.EmailField(blank=True)
    # The `holidays` package's subdivision for the public holidays the site closes on (a US
    # state "MD", a Japanese prefecture "08"); empty: the country's national holidays only.
    subdivision = models.CharField(max_length=10, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        known = holidays.list_supported_countries().get((self.country or "").upper())
        if known is None:
            raise ValidationError({"country": f"no public holidays are known for {self.country!r}"})
        if not self.subdivision:
            return
        if self.subdivision not in known:
            listing = ", ".join(known) if known else "none: leave it empty"
            raise ValidationError(
                {
                    "subdivision": f"{self.subdivision!r} is not a subdivision of "
                    f"{self.country.upper()} for public holidays; known: {listing}"
                }
            )


class TrialSite(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE)
    site = models.ForeignKey(Site, on_delete=models.PROTECT)
    activated_on = models.DateField(null=True, blank=True)
    # The protocol version the site's ethics approval covers, from approved_on; new
    # participants at the site start on it. Empty: the trial's newest published version.
    protocol_version = models.ForeignKey(
        "ProtocolVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_on = models.DateField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["trial", "site"], name="unique_trial_site")]

    def __str__(self) -> str:
        return f"{self.trial} @ {self.site}"


class ProtocolVersion(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="versions")
    label = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    version_date = models.DateField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    source_name = models.CharField(max_length=200, blank=True)
    source_sha256 = models.CharField(max_length=64, blank=True)
    imported_at = models.DateTimeField(auto_now_add=True)
    # The file had no `reminders` section, so the application's default rules apply.
    default_reminders = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["trial", "imported_at"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "label"], name="unique_protocol_label"),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(published_at__isnull=False),
                name="published_has_timestamp",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trial.code} v{self.label}"

    @property
    def is_published(self) -> bool:
        return self.status == self.Status.PUBLISHED


class _VersionPart(models.Model):
    version = models.ForeignKey(ProtocolVersion, on_delete=models.CASCADE)
    code = models.CharField(max_length=40)
    order = models.PositiveIntegerField()

    class Meta:
        abstract = True
        ordering = ["version", "order"]

    def __str__(self) -> str:
        return self.code


def _unique_code(name: str) -> list[models.BaseConstraint]:
    return [models.UniqueConstraint(fields=["version", "code"], name=f"unique_{name}_code")]


class Anchor(_VersionPart):
    name = models.CharField(max_length=120)
    name_ja = models.CharField(max_length=120, blank=True)
    relative_to = models.CharField(max_length=40, blank=True)
    min_days = models.IntegerField(null=True, blank=True)
    max_days = models.IntegerField(null=True, blank=True)
    default_days = models.IntegerField(null=True, blank=True)

    class Meta(_VersionPart.Meta):
        constraints = _unique_code("anchor")


class Arm(_VersionPart):
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)

    class Meta(_VersionPart.Meta):
        constraints = _unique_code("arm")


class Epoch(_VersionPart):
    name = models.CharField(max_length=120)
    name_ja = models.CharField(max_length=120, blank=True)

    class Meta(_VersionPart.Meta):
        constraints = _unique_code("epoch")


class ProcedureDefinition(_VersionPart):
    name = models.CharField(max_length=200)
    name_ja = models.CharField(max_length=200, blank=True)
    duration_minutes = models.PositiveIntegerField()
    preparation = models.TextField(blank=True)
    preparation_ja = models.TextField(blank=True)
    resource = models.CharField(max_length=120, blank=True)
    resource_count = models.PositiveIntegerField(default=1)
    staff_kind = models.CharField(max_length=120, blank=True)
    staff_count = models.PositiveIntegerField(default=1)

    class Meta(_VersionPart.Meta):
        constraints = _unique_code("procedure")

    def __str__(self) -> str:
        return f"{self.code} ({self.duration_minutes} min)"


class _Anchored(models.Model):
    """Anchored to a participant anchor (anchor_code) or an earlier visit's actual date."""

    anchor_code = models.CharField(max_length=40, blank=True)
    anchor_visit = models.ForeignKey(
        "VisitDefinition", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    anchor_occurrence = models.PositiveIntegerField(null=True, blank=True)
    offset_days = models.IntegerField(default=0)

    class Meta:
        abstract = True

    @staticmethod
    def one_anchor(name: str) -> models.CheckConstraint:
        return models.CheckConstraint(
            condition=(Q(anchor_code="") & Q(anchor_visit__isnull=False))
            | (~Q(anchor_code="") & Q(anchor_visit__isnull=True)),
            name=f"{name}_exactly_one_anchor",
        )


class VisitDefinition(_VersionPart, _Anchored):
    name = models.CharField(max_length=200)
    name_ja = models.CharField(max_length=200, blank=True)
    epoch = models.ForeignKey(Epoch, on_delete=models.PROTECT, related_name="visits")
    window_before_days = models.PositiveIntegerField()
    window_after_days = models.PositiveIntegerField()
    repeat_every_days = models.PositiveIntegerField(null=True, blank=True)
    repeat_count = models.PositiveIntegerField(default=1)
    duration_minutes = models.PositiveIntegerField()
    mode = models.CharField(max_length=10, choices=[(m.value, m.value) for m in VisitMode])
    unscheduled_allowed = models.BooleanField(default=False)
    # The plan inside the day, as the file gives it: [{procedure, relation, overlap_minutes}]
    # in order; null: none (the visit holds nothing when booked).
    plan = models.JSONField(null=True, blank=True)
    arms = models.ManyToManyField(Arm, blank=True, help_text="Empty: every arm.")
    procedures: models.ManyToManyField[ProcedureDefinition, ScheduledActivity] = (
        models.ManyToManyField(ProcedureDefinition, through="ScheduledActivity")
    )

    class Meta(_VersionPart.Meta):
        constraints = [
            *_unique_code("visit"),
            _Anchored.one_anchor("visit"),
            models.CheckConstraint(
                condition=Q(repeat_count=1, repeat_every_days__isnull=True)
                | Q(repeat_count__gte=2, repeat_every_days__gte=1),
                name="visit_repeat_consistent",
            ),
        ]

    def __str__(self) -> str:
        # In the reader's language: admin lists and pages show the Japanese name to a
        # coordinator who reads Japanese, when the protocol file gives one.
        return f"{self.code} {localized_name(self)}"


class ScheduledActivity(models.Model):
    """The schedule of activities: a procedure done at a visit (some occurrences or all)."""

    visit = models.ForeignKey(VisitDefinition, on_delete=models.CASCADE, related_name="activities")
    procedure = models.ForeignKey(ProcedureDefinition, on_delete=models.PROTECT)
    occurrences = models.JSONField(null=True, blank=True, help_text="Null: every occurrence.")
    order = models.PositiveIntegerField()

    class Meta:
        ordering = ["visit", "order"]
        verbose_name_plural = "schedule of activities"
        constraints = [
            models.UniqueConstraint(fields=["visit", "procedure"], name="unique_activity")
        ]

    def __str__(self) -> str:
        return f"{self.procedure.code} at {self.visit.code}"


class MilestoneRule(_VersionPart, _Anchored):
    name = models.CharField(max_length=200)
    name_ja = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=10, choices=[(k.value, k.value) for k in MilestoneKind])
    participant_facing = models.BooleanField(default=False)
    # The taper's parameters exactly as the protocol file states them (validated on import).
    taper = models.JSONField(null=True, blank=True)

    class Meta(_VersionPart.Meta):
        constraints = [*_unique_code("milestone"), _Anchored.one_anchor("milestone")]


class EligibilityCriterion(_VersionPart):
    kind = models.CharField(max_length=10, choices=[(k.value, k.value) for k in CriterionKind])
    text = models.TextField()
    check_attribute = models.CharField(
        max_length=20, blank=True, choices=[(a.value, a.value) for a in CheckedAttribute]
    )
    check_min = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    check_max = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    check_min_inclusive = models.BooleanField(default=True)
    check_max_inclusive = models.BooleanField(default=True)

    class Meta(_VersionPart.Meta):
        verbose_name_plural = "eligibility criteria"
        constraints = _unique_code("criterion")


class ReminderRule(_VersionPart):
    """When to remind whom of what, by which channels (see protocol_file.ReminderEvent)."""

    event = models.CharField(max_length=30)
    days = models.PositiveIntegerField(default=0)
    at = models.TimeField(help_text="Local wall time (participant's or site's zone).")
    channels = models.JSONField()
    visit_codes = models.JSONField(default=list, blank=True, help_text="Empty: every visit.")
    procedure_codes = models.JSONField(default=list, blank=True)

    class Meta(_VersionPart.Meta):
        constraints = _unique_code("reminder")


# ----------------------------------------------------------------------------------------
# Site calendars: when a site is open and what it can hold at once (scheduler/booking.py turns
# them into the slot finder's SiteCalendar, adding the public holidays of its country).

WEEKDAYS = [(0, "Monday"), (1, "Tuesday"), (2, "Wednesday"), (3, "Thursday"), (4, "Friday")]
WEEKDAYS += [(5, "Saturday"), (6, "Sunday")]


def _ends_after_start(instance: models.Model, start: str = "start", end: str = "end") -> None:
    first, last = getattr(instance, start), getattr(instance, end)
    if first is not None and last is not None and last <= first:
        raise ValidationError({end: f"must end after it starts ({first} to {last})"})


def _end_after_start(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(end__gt=models.F("start")), name=name)


class _WeeklyHours(models.Model):
    weekday = models.PositiveSmallIntegerField(choices=WEEKDAYS)
    start = models.TimeField(help_text="Site wall clock.")
    end = models.TimeField(help_text="Site wall clock; after the start.")

    class Meta:
        abstract = True
        ordering = ["weekday", "start"]

    def __str__(self) -> str:
        return f"{dict(WEEKDAYS)[self.weekday]} {self.start:%H:%M}-{self.end:%H:%M}"

    def clean(self) -> None:
        _ends_after_start(self)


class SiteHours(_WeeklyHours):
    """The clinic is open from start to end on a weekday (several intervals: a lunch break)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="opening_hours")
    history = HistoricalRecords()

    class Meta(_WeeklyHours.Meta):
        verbose_name = "opening hours"
        verbose_name_plural = "opening hours"
        constraints = [_end_after_start("site_hours_end_after_start")]


class SiteClosure(models.Model):
    """A day the site is closed besides its public holidays (a staff day, a move)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="closures")
    date = models.DateField()
    reason = models.CharField(max_length=200)
    history = HistoricalRecords()

    class Meta:
        ordering = ["site", "date"]
        constraints = [
            models.UniqueConstraint(fields=["site", "date"], name="one_closure_per_site_day")
        ]

    def __str__(self) -> str:
        return f"{self.date.isoformat()} ({self.reason})"

    def clean(self) -> None:
        if not (self.reason or "").strip():
            raise ValidationError({"reason": "say why the site is closed that day"})


class SiteResource(models.Model):
    """A unit of a kind ("Chair 3" of "infusion chair") holding up to `capacity` at once. Its
    kind is what protocol procedures name in `resource:`."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="resources")
    kind = models.CharField(max_length=120)
    name = models.CharField(max_length=120)
    capacity = models.PositiveIntegerField(default=1)
    history = HistoricalRecords()

    class Meta:
        ordering = ["site", "kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "name"], name="unique_resource_name"),
            models.CheckConstraint(condition=Q(capacity__gte=1), name="resource_capacity_min_1"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        if self.capacity is not None and self.capacity < 1:
            raise ValidationError({"capacity": "a resource holds at least 1 at once"})


class ResourceHours(_WeeklyHours):
    """A resource's own hours, which only narrow the clinic's; none: the clinic's hours."""

    resource = models.ForeignKey(SiteResource, on_delete=models.CASCADE, related_name="hours")
    history = HistoricalRecords()

    class Meta(_WeeklyHours.Meta):
        verbose_name = "resource hours"
        verbose_name_plural = "resource hours"
        constraints = [_end_after_start("resource_hours_end_after_start")]


class ResourceOutOfService(models.Model):
    """A period (instants, UTC) the resource cannot be used, and why."""

    resource = models.ForeignKey(
        SiteResource, on_delete=models.CASCADE, related_name="out_of_service"
    )
    start = models.DateTimeField()
    end = models.DateTimeField()
    reason = models.CharField(max_length=200)
    history = HistoricalRecords()

    class Meta:
        ordering = ["resource", "start"]
        verbose_name = "out-of-service period"
        constraints = [_end_after_start("out_of_service_end_after_start")]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}-{self.end:%Y-%m-%d %H:%M} UTC ({self.reason})"

    def clean(self) -> None:
        _ends_after_start(self)
        if not (self.reason or "").strip():
            raise ValidationError({"reason": "say why the resource is out of service"})


class StaffShift(_WeeklyHours):
    """`count` of a staff kind on duty (one nurse who watches two chairs counts 2)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="staff_shifts")
    kind = models.CharField(max_length=120)
    count = models.PositiveIntegerField(default=1)
    history = HistoricalRecords()

    class Meta(_WeeklyHours.Meta):
        ordering = ["site", "kind", "weekday", "start"]
        constraints = [
            _end_after_start("staff_shift_end_after_start"),
            models.CheckConstraint(condition=Q(count__gte=1), name="staff_shift_count_min_1"),
        ]

    def __str__(self) -> str:
        return f"{self.count} {self.kind}, {super().__str__()}"

    def clean(self) -> None:
        super().clean()
        if self.count is not None and self.count < 1:
            raise ValidationError({"count": "at least 1 on duty"})


# ----------------------------------------------------------------------------------------
# Protocol-defined names in the reader's language


def localized(obj: object, field: str, language: str | None = None) -> str:
    """`obj.<field>` as a person reading `language` sees it (default: the active language).

    Japanese readers get `<field>_ja` when the protocol file gave one, everyone else (and
    Japanese readers of a file without it) the text as the file wrote it. The one place that
    chooses between the two: participant texts, calendars and the admin all ask here.
    """
    language = (language or translation.get_language() or "en").split("-")[0]
    if language == "ja":
        japanese = getattr(obj, f"{field}_ja", "")
        if japanese:
            return str(japanese)
    return str(getattr(obj, field))


def taper_drug(rule: object, language: str | None = None) -> str:
    """The drug a milestone rule's taper doses, as a person reading `language` names it: the
    file's `drug_ja` for a Japanese reader when it gives one, else `drug`; the rule's own name
    when it has no taper (see `localized`)."""
    taper = getattr(rule, "taper", None) or {}
    if not taper.get("drug"):
        return localized_name(rule, language)
    return localized(SimpleNamespace(**taper), "drug", language)


def localized_name(obj: object, language: str | None = None) -> str:
    """The name of a protocol part (a visit, procedure, epoch, anchor or milestone; a trial's
    title) in `language`, default the active one: see `localized`."""
    return localized(obj, "title" if isinstance(obj, Trial) else "name", language)
