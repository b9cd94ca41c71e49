from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from participants.models import Participant
from trials.models import MilestoneRule, ProcedureDefinition, ProtocolVersion, VisitDefinition


class ScheduledVisit(models.Model):
    """One occurrence of a protocol visit in one participant's calendar.

    Target and window are dates (the visit day), not instants; a booking's time comes later.
    """

    class Status(models.TextChoices):
        PLANNED = "planned"
        BOOKED = "booked"
        DONE = "done"
        MISSED = "missed"
        CANCELLED = "cancelled"

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="visits")
    visit_definition = models.ForeignKey(VisitDefinition, on_delete=models.PROTECT)
    occurrence = models.PositiveIntegerField(default=1)
    # The protocol version the visit was planned under; history keeps it across amendments.
    protocol_version = models.ForeignKey(ProtocolVersion, on_delete=models.PROTECT)
    target_date = models.DateField()
    window_start = models.DateField()
    window_end = models.DateField()
    estimated = models.BooleanField(
        default=False, help_text="Counts from an anchor whose date is not known yet."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    actual_date = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "target_date", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "visit_definition", "occurrence"],
                name="unique_visit_occurrence",
            ),
            models.CheckConstraint(
                condition=Q(window_start__lte=F("target_date"))
                & Q(target_date__lte=F("window_end")),
                name="window_contains_target",
            ),
            models.CheckConstraint(
                condition=~Q(status="done") | Q(actual_date__isnull=False),
                name="done_has_actual_date",
            ),
        ]
        indexes = [models.Index(fields=["target_date", "status"])]

    def __str__(self) -> str:
        suffix = f" #{self.occurrence}" if self.visit_definition.repeat_count > 1 else ""
        return f"{self.visit_definition.code}{suffix} {self.target_date.isoformat()}"


class ScheduledProcedure(models.Model):
    class Status(models.TextChoices):
        PLANNED = "planned"
        DONE = "done"
        NOT_DONE = "not_done", "not done"

    visit = models.ForeignKey(ScheduledVisit, on_delete=models.CASCADE, related_name="procedures")
    procedure = models.ForeignKey(ProcedureDefinition, on_delete=models.PROTECT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)

    class Meta:
        ordering = ["visit", "procedure__order"]
        constraints = [
            models.UniqueConstraint(fields=["visit", "procedure"], name="unique_visit_procedure")
        ]

    def __str__(self) -> str:
        return self.procedure.code


class ScheduledMilestone(models.Model):
    """A dated milestone: a taper step (with its dose), end of contraception, an endpoint."""

    class Status(models.TextChoices):
        PLANNED = "planned"
        DONE = "done"
        CANCELLED = "cancelled"

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="milestones"
    )
    rule = models.ForeignKey(MilestoneRule, on_delete=models.PROTECT)
    sequence = models.PositiveIntegerField(default=0, help_text="Taper week; 0 otherwise.")
    protocol_version = models.ForeignKey(ProtocolVersion, on_delete=models.PROTECT)
    due_date = models.DateField()
    dose_mg = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    estimated = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)

    class Meta:
        ordering = ["participant", "due_date", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "rule", "sequence"], name="unique_milestone_step"
            )
        ]

    def __str__(self) -> str:
        dose = f" {self.dose_mg.normalize():f} mg/day" if self.dose_mg is not None else ""
        return f"{self.rule.code}{dose} {self.due_date.isoformat()}"


class WorkerHeartbeat(models.Model):
    """Last time beat's periodic heartbeat reached a worker; /healthz reports its age."""

    name = models.CharField(max_length=40, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} {self.beat_at.isoformat()}"
