from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from trials.models import Arm, ProtocolVersion, Site, Trial, validate_timezone


class Participant(models.Model):
    class Status(models.TextChoices):
        SCREENING = "screening"
        SCREEN_FAILED = "screen_failed", "screen failed"
        ENROLLED = "enrolled"
        COMPLETED = "completed"
        WITHDRAWN = "withdrawn"

    class Language(models.TextChoices):
        ENGLISH = "en", "English"
        JAPANESE = "ja", "日本語"

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="participants")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="participants")
    study_id = models.CharField(max_length=40)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCREENING)
    protocol_version = models.ForeignKey(
        ProtocolVersion, on_delete=models.PROTECT, related_name="participants"
    )
    birth_date = models.DateField()
    weight_kg = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
    )
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    # For minors, invites and reminders go to the guardian (SMS to the guardian's phone when
    # there is one, else to `phone`: participants.contact.sms_number).
    guardian_name = models.CharField(max_length=200, blank=True)
    guardian_email = models.EmailField(blank=True)
    guardian_phone = models.CharField(max_length=40, blank=True, db_default="")
    timezone = models.CharField(max_length=64, validators=[validate_timezone])
    language = models.CharField(max_length=2, choices=Language.choices, default=Language.ENGLISH)
    # Reminder preferences: how the participant wants to be reminded, and when not to be.
    reminder_channels = models.JSONField(
        default=list, blank=True, help_text='Of "email" and "sms"; empty means email only.'
    )
    reminders_opt_out = models.BooleanField(default=False)
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    # When the enrollment was recorded (an instant), and the day it took place at the site (the
    # day eligibility was checked on, which may be earlier: a coordinator catching up). A
    # participation cannot end before `enrolled_on`. Participants enrolled before the day was
    # stored (participants 0005) have none.
    enrolled_at = models.DateTimeField(null=True, blank=True)
    enrolled_on = models.DateField(
        null=True, blank=True, help_text="The enrollment's date at the site."
    )
    ended_on = models.DateField(
        null=True, blank=True, help_text="Date of withdrawal, completion or screen failure."
    )
    # Why the participant's study ended (the screening log's screen-failure reason, the
    # withdrawal's reason), as the service that ended it was told.
    ended_reason = models.CharField(max_length=2000, blank=True)
    # The screening log's sign-off: the site's investigator confirmed eligibility (after the
    # machine checks passed); cleared when a detail the checks read changes.
    eligibility_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    eligibility_confirmed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Contact details are not copied into the audit trail; clinical fields are.
    history = HistoricalRecords(
        excluded_fields=["email", "phone", "guardian_name", "guardian_email", "guardian_phone"]
    )

    class Meta:
        ordering = ["trial", "study_id"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "study_id"], name="unique_study_id_per_trial"),
            models.CheckConstraint(
                condition=~Q(status="enrolled") | Q(enrolled_at__isnull=False),
                name="enrolled_has_timestamp",
            ),
        ]

    def __str__(self) -> str:
        # Study id only: names and contact details never go into logs or labels.
        return f"{self.trial.code}/{self.study_id}"


class ParticipantAnchor(models.Model):
    """A participant's date for one of the protocol's anchors (Day 1, consent, PSL start)."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="anchors")
    code = models.CharField(max_length=40)
    date = models.DateField()
    history = HistoricalRecords()

    class Meta:
        ordering = ["participant", "date"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "code"], name="unique_participant_anchor"
            )
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.date.isoformat()}"


class TreatmentAssignment(models.Model):
    """Kept apart from Participant: in a blinded trial only unblinded roles may read it."""

    participant = models.OneToOneField(
        Participant, on_delete=models.PROTECT, related_name="treatment_assignment"
    )
    arm = models.ForeignKey(Arm, on_delete=models.PROTECT)
    assigned_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        permissions = [("view_unblinded_arm", "Can see the treatment arm of blinded trials")]

    def __str__(self) -> str:
        return f"assignment of {self.participant}"
