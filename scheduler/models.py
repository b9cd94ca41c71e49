from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db import models
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from participants.models import Participant
from trials.models import (
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    VisitDefinition,
    localized_name,
)


def visit_code(definition: VisitDefinition | None, occurrence: int) -> str:
    """How people name a visit occurrence: V3, TRT#12 for a repeating visit, or UNSCHEDULED."""
    if definition is None:
        return "UNSCHEDULED"
    if definition.repeat_count > 1:
        return f"{definition.code}#{occurrence}"
    return definition.code


class ScheduledVisit(models.Model):
    """One occurrence of a protocol visit (or an unscheduled visit) in a participant's calendar.

    Target and window are dates (the visit day) computed by the engine; the booking and the
    actual start are instants, stored in UTC, with the site-local date kept beside them.
    """

    class Status(models.TextChoices):
        PLANNED = "planned"
        BOOKED = "booked"
        DONE = "done"
        MISSED = "missed"
        CANCELLED = "cancelled"

    OPEN = (Status.PLANNED, Status.BOOKED)
    HISTORY = (Status.DONE, Status.MISSED, Status.CANCELLED)

    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="visits")
    # Empty for an unscheduled visit (a flare, say), which carries its own reason.
    visit_definition = models.ForeignKey(
        VisitDefinition, on_delete=models.PROTECT, null=True, blank=True
    )
    occurrence = models.PositiveIntegerField(default=1)
    unscheduled_reason = models.TextField(blank=True)
    # The protocol version the visit was planned under; history keeps it across amendments.
    protocol_version = models.ForeignKey(ProtocolVersion, on_delete=models.PROTECT)
    target_date = models.DateField()
    window_start = models.DateField()
    window_end = models.DateField()
    estimated = models.BooleanField(
        default=False, help_text="Counts from an anchor whose date is not known yet."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    booked_start = models.DateTimeField(null=True, blank=True)
    booked_date = models.DateField(null=True, blank=True, help_text="Site-local date booked.")
    actual_start = models.DateTimeField(null=True, blank=True)
    actual_date = models.DateField(null=True, blank=True)
    # Days outside the window of the booked or actual date: negative early, positive late.
    deviation_days = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Reason given for the last change.")
    # Optimistic concurrency: every change increments it; an edit made from a stale copy
    # is refused instead of silently overwriting the other one.
    version = models.PositiveIntegerField(default=1)
    # iCalendar identity: a UID that never changes, and a SEQUENCE raised on every change
    # participants' calendars must follow (date, time, window, cancellation).
    ical_uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    ical_sequence = models.PositiveIntegerField(default=0)
    # The audit rows are found by visit (`id`), by participant (migration 0014's
    # `history_visit_participant_newest`), by date and by user; never by UID, protocol
    # version or visit definition. An index on those would cost every calendar write its
    # upkeep (a cohort writes tens of thousands of audit rows) for no read.
    history = HistoricalRecords(
        no_db_index=["ical_uid", "protocol_version", "visit_definition", "participant"]
    )

    class Meta:
        ordering = ["participant", "target_date", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "visit_definition", "occurrence"],
                condition=Q(visit_definition__isnull=False),
                name="unique_visit_occurrence",
            ),
            models.CheckConstraint(
                condition=Q(visit_definition__isnull=False) | ~Q(unscheduled_reason=""),
                name="unscheduled_visit_has_reason",
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
            models.CheckConstraint(
                condition=~Q(status="booked") | Q(booked_start__isnull=False),
                name="booked_has_start",
            ),
        ]
        indexes = [
            models.Index(fields=["target_date", "status"]),
            # What the start page and the attention filters read: the few visits near today
            # of each kind, not a trial's whole history (scheduler/workspace.py).
            models.Index(
                fields=["booked_date"], condition=Q(status="booked"), name="visit_booked_day"
            ),
            models.Index(
                fields=["window_start"], condition=Q(status="planned"), name="visit_planned_window"
            ),
            models.Index(
                fields=["window_end"], condition=Q(status="missed"), name="visit_missed_window"
            ),
            models.Index(
                fields=["participant"],
                condition=Q(status="done", reason="", deviation_days__isnull=False)
                & ~Q(deviation_days=0),
                name="visit_deviation_no_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.target_date.isoformat()}"

    @property
    def code(self) -> str:
        return visit_code(self.visit_definition, self.occurrence)

    # Where a read prefetched the procedures in order (scheduler.api.views._visits): a list
    # on the visit, which is much cheaper for Django to fill than a prefetched manager.
    PROCEDURES_IN_ORDER = "_procedures_in_order"

    @property
    def procedures_in_order(self) -> list[ScheduledProcedure]:
        """The visit's procedures in the protocol's order, each with its procedure."""
        prefetched = self.__dict__.get(self.PROCEDURES_IN_ORDER)
        if prefetched is not None:
            return prefetched  # type: ignore[no-any-return]
        if "procedures" in getattr(self, "_prefetched_objects_cache", {}):
            # Prefetched through the manager (the feeds): in the model's order, which is the
            # protocol's.
            return list(self.procedures.all())
        return list(self.procedures.select_related("procedure").order_by("procedure__order", "id"))

    @property
    def name(self) -> str:
        """In the active language: the protocol's Japanese name for a Japanese reader when
        the file gives one (trials.models.localized_name)."""
        if self.visit_definition is None:
            return gettext("Unscheduled visit")
        return localized_name(self.visit_definition)

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN


class ScheduledProcedure(models.Model):
    class Status(models.TextChoices):
        PLANNED = "planned"
        DONE = "done"
        NOT_DONE = "not_done", "not done"

    visit = models.ForeignKey(ScheduledVisit, on_delete=models.CASCADE, related_name="procedures")
    procedure = models.ForeignKey(ProcedureDefinition, on_delete=models.PROTECT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    not_done_reason = models.TextField(blank=True)
    # Audit rows are read by procedure row (`id`) and visit, never by protocol procedure.
    history = HistoricalRecords(no_db_index=["procedure"])

    class Meta:
        ordering = ["visit", "procedure__order"]
        constraints = [
            models.UniqueConstraint(fields=["visit", "procedure"], name="unique_visit_procedure"),
            models.CheckConstraint(
                condition=~Q(status="not_done") | ~Q(not_done_reason=""),
                name="not_done_has_reason",
            ),
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
    flag = models.CharField(max_length=300, blank=True, help_text="For the investigator.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    ical_uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    ical_sequence = models.PositiveIntegerField(default=0)
    history = HistoricalRecords()

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


class TaperAdjustment(models.Model):
    """An investigator's taper decision for one week: hold the dose or prescribe one."""

    class Kind(models.TextChoices):
        HOLD = "hold"
        SET = "set", "set dose"

    participant = models.ForeignKey(
        Participant, on_delete=models.PROTECT, related_name="taper_adjustments"
    )
    # By code, not rule id: the decision stands when the participant moves to an amendment.
    milestone_code = models.CharField(max_length=40)
    week = models.PositiveIntegerField()
    kind = models.CharField(max_length=4, choices=Kind.choices)
    dose_mg = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    reason = models.TextField()
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    decided_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["participant", "milestone_code", "week"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "milestone_code", "week"], name="unique_taper_decision"
            ),
            models.CheckConstraint(
                condition=(Q(kind="hold") & Q(dose_mg__isnull=True))
                | (Q(kind="set") & Q(dose_mg__gte=0)),
                name="taper_decision_dose_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.milestone_code} week {self.week}: {self.kind}"


class CalendarFeed(models.Model):
    """A subscribable iCalendar feed of one participant's or one site's visits.

    Its URL carries a random capability token; only the token's SHA-256 is stored, so the
    database alone cannot be used to read feeds. A revoked feed answers 404 and no data.
    """

    participant = models.ForeignKey(
        Participant, on_delete=models.CASCADE, null=True, blank=True, related_name="feeds"
    )
    site = models.ForeignKey(
        "trials.Site", on_delete=models.CASCADE, null=True, blank=True, related_name="feeds"
    )
    token_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A site feed shows these trials' visits at the site: the trials its issuer changes
    # calendars of there (a member of one trial never hands out another's participants).
    trials = models.ManyToManyField("trials.Trial", blank=True, related_name="+")
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(participant__isnull=True) ^ Q(site__isnull=True),
                name="feed_is_for_a_participant_or_a_site",
            )
        ]

    def __str__(self) -> str:
        owner = self.participant or self.site
        state = "revoked" if self.revoked_at else "active"
        return f"feed of {owner} ({state})"


class Reminder(models.Model):
    """The outbox: one row per reminder to send (target, rule, channel, moment).

    Postgres is the source of truth and Redis only carries "send row N" messages: a lost
    message is re-sent by the sweep, a duplicate finds the row already claimed or sent.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed", "failed (will retry)"
        DEAD = "dead", "dead (gave up)"
        CANCELLED = "cancelled"
        # Its worker stopped between claiming and recording, on a channel whose receiver does
        # not de-duplicate (SMS): it may or may not have gone, so a person decides
        # (`scheduler.outbox.sweep.reminders_decide_unknown`) instead of a blind re-send.
        UNKNOWN = "unknown", "unknown (a person decides)"

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="reminders")
    visit = models.ForeignKey(
        ScheduledVisit, on_delete=models.CASCADE, null=True, blank=True, related_name="reminders"
    )
    milestone = models.ForeignKey(
        ScheduledMilestone,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="reminders",
    )
    # "visit:<id>" or "milestone:<id>": one non-null key for the unique constraint.
    target_key = models.CharField(max_length=40)
    rule_code = models.CharField(max_length=40)
    event = models.CharField(max_length=30, help_text="The rule's event, e.g. before_visit.")
    channel = models.CharField(max_length=10)
    audience = models.CharField(max_length=12)
    due_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    # Invites (event "invite"): the visit's SEQUENCE this row announces; a row whose visit has
    # moved on to a newer SEQUENCE by the time it is claimed is superseded, not sent.
    ical_sequence = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Saved (rather than bulk-updated) only when a person acts on a row, today only
    # `scheduler.outbox.sweep.reminders_retry` and `reminders_decide_unknown`, which give the
    # user and a reason.
    history = HistoricalRecords()

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["target_key", "rule_code", "channel", "due_at"],
                name="one_reminder_per_target_rule_channel_moment",
            ),
        ]
        indexes = [
            # The sweep: due rows by status; partial, so a million sent rows cost nothing.
            models.Index(
                fields=["next_attempt_at"],
                name="reminder_due_idx",
                condition=Q(status__in=["pending", "failed"]),
            ),
            models.Index(
                fields=["claimed_at"], name="reminder_sending_idx", condition=Q(status="sending")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule_code} {self.channel} {self.target_key} at {self.due_at.isoformat()}"


class CoordinatorNotification(models.Model):
    """An in-app reminder for a site's coordinators (the in_app channel)."""

    site = models.ForeignKey("trials.Site", on_delete=models.CASCADE, related_name="notifications")
    reminder = models.OneToOneField(Reminder, on_delete=models.CASCADE, related_name="notification")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text[:80]


class WorkerHeartbeat(models.Model):
    """Last time beat's periodic heartbeat reached a worker; /healthz reports its age."""

    name = models.CharField(max_length=40, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} {self.beat_at.isoformat()}"


class Membership(models.Model):
    """A user acting for a trial at one site (or, for trial-wide roles, at all its sites).

    The roles are the trial's own: what each may see and do is decided in scheduler/access.py,
    the one place that scopes. A superuser without a membership sees no clinical data.
    """

    class Role(models.TextChoices):
        COORDINATOR = "coordinator", _("Coordinator")
        INVESTIGATOR = "investigator", _("Investigator")
        UNBLINDED_PHARMACIST = "unblinded_pharmacist", _("unblinded pharmacist")
        SPONSOR_MONITOR = "sponsor_monitor", _("sponsor monitor")
        DATA_MANAGER = "data_manager", _("data manager")
        SITE_SYSTEM = "site_system", _("site system")

    # Roles that act across every site of their trial; every other role is bound to one site.
    TRIAL_WIDE = (Role.SPONSOR_MONITOR, Role.DATA_MANAGER)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    trial = models.ForeignKey("trials.Trial", on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey(
        "trials.Site", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    role = models.CharField(max_length=24, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["trial", "site", "role", "user"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "trial", "site", "role"],
                condition=Q(site__isnull=False),
                name="unique_site_membership",
            ),
            models.UniqueConstraint(
                fields=["user", "trial", "role"],
                condition=Q(site__isnull=True),
                name="unique_trial_wide_membership",
            ),
            models.CheckConstraint(
                condition=(Q(role__in=["sponsor_monitor", "data_manager"]) & Q(site__isnull=True))
                | (~Q(role__in=["sponsor_monitor", "data_manager"]) & Q(site__isnull=False)),
                name="membership_site_matches_role",
                violation_error_message=(
                    "A sponsor monitor or a data manager acts at every site of the trial: leave "
                    "the site empty. Every other role needs its site."
                ),
            ),
        ]

    def __str__(self) -> str:
        where = self.site.code if self.site_id else "all sites"  # type: ignore[union-attr]
        return f"{self.role} · {self.trial} @ {where}"


class WebhookSubscription(models.Model):
    """A site system's subscription to calendar events of one trial at some of its sites.

    The signing secret is kept encrypted (Fernet, with keys from settings, never from the
    database): signing needs the secret itself, so it cannot be hashed like a feed token, and a
    database dump or backup alone must not let anyone forge our signatures. It is shown once,
    when created, and is left out of the audit trail, the admin and every log.
    """

    class Event(models.TextChoices):
        VISIT_BOOKED = "visit.booked"
        VISIT_MOVED = "visit.moved"
        VISIT_DONE = "visit.done"
        VISIT_MISSED = "visit.missed"
        VISIT_CANCELLED = "visit.cancelled"
        PARTICIPANT_ENROLLED = "participant.enrolled"
        PARTICIPANT_WITHDRAWN = "participant.withdrawn"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="webhook_subscriptions",
        help_text="The site system (its machine user) the events are for.",
    )
    trial = models.ForeignKey("trials.Trial", on_delete=models.PROTECT, related_name="+")
    sites = models.ManyToManyField("trials.Site", related_name="+")
    url = models.URLField(max_length=500, help_text="Where events are POSTed.")
    events = models.JSONField(default=list, help_text="The event types subscribed to.")
    description = models.CharField(max_length=200, blank=True)
    secret_encrypted = models.TextField(editable=False)
    is_active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["secret_encrypted"], m2m_fields=[sites])

    class Meta:
        ordering = ["trial", "id"]

    def __str__(self) -> str:
        state = "active" if self.is_active else "disabled"
        return f"webhook {self.pk} of {self.owner} ({state})"


class WebhookDelivery(models.Model):
    """What one outbox row (channel "webhook") sends: one event to one subscription.

    The body is frozen when the change commits, so an event says what happened then, never a
    later state; every attempt sends the same bytes under the same `message_id` (the
    webhook-id header), so receivers de-duplicate retries.
    """

    reminder = models.OneToOneField(Reminder, on_delete=models.CASCADE, related_name="webhook")
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.PROTECT, related_name="deliveries"
    )
    message_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=30)
    body = models.TextField()
    occurred_at = models.DateTimeField()

    class Meta:
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.message_id}"


class EmergencyUnblinding(models.Model):
    """One emergency unblinding: who broke the code of which participant, when and why.

    Append-only: written once by governance.participant_emergency_unblind, never changed or
    deleted (its participant and user are protected too), so it needs no history of its own.
    It never holds the arm: the trial's monitors read these entries, blinded.
    """

    participant = models.ForeignKey(
        Participant,
        on_delete=models.PROTECT,
        related_name="emergency_unblindings",
        verbose_name=_("participant"),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("unblinded by"),
    )
    reason = models.TextField(_("reason"))
    at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        verbose_name = _("emergency unblinding")
        verbose_name_plural = _("emergency unblindings")
        ordering = ["-at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(reason=""), name="emergency_unblinding_has_reason")
        ]

    def __str__(self) -> str:
        return _("emergency unblinding #%(pk)s") % {"pk": self.pk}

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise ValueError("an emergency unblinding is append-only: it is never changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValueError("an emergency unblinding is append-only: it is never deleted")


class UnblindingNotice(models.Model):
    """The one notice an unblinded contact of the trial gets about an emergency unblinding:
    who unblinded which study id and why, never the arm. Addressed to one person (a
    CoordinatorNotification goes to a site's coordinators, who are blinded), shown in the
    admin to its recipient and emailed to them. Append-only like the unblinding."""

    unblinding = models.ForeignKey(
        EmergencyUnblinding,
        on_delete=models.PROTECT,
        related_name="notices",
        verbose_name=_("emergency unblinding"),
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("recipient"),
    )
    text = models.TextField(_("text"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("unblinding notice")
        verbose_name_plural = _("unblinding notices")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["unblinding", "recipient"], name="one_unblinding_notice_per_recipient"
            )
        ]

    def __str__(self) -> str:
        return _("notice of emergency unblinding #%(pk)s") % {"pk": self.unblinding_id}

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise ValueError("an unblinding notice is append-only: it is never changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ValueError("an unblinding notice is append-only: it is never deleted")


# The session key under which a signed-in user's language preference travels, so applying it
# on each request (scheduler.middleware.UserLanguageMiddleware) reads no table.
USER_LANGUAGE_SESSION_KEY = "_user_language"


class UserPreference(models.Model):
    """A person's own settings for the admin: the language its pages are shown in.

    Not clinical data and not access: it is not audited. Written by
    `scheduler.i18n.user_language_set` (the language switch in the admin header); copied into
    the session at sign-in (below), where the middleware reads it.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference"
    )
    language = models.CharField(max_length=10, choices=settings.LANGUAGES)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.language}"


@receiver(user_logged_in)
def _language_into_session(sender: object, request: Any, user: Any, **kwargs: object) -> None:
    """At sign-in, the user's stored language becomes the session's (one read per sign-in,
    none per request). Without a stored preference the session keeps what it had (a choice
    made before signing in), else the browser's Accept-Language applies."""
    if request is None or not hasattr(request, "session"):
        return
    language = UserPreference.objects.filter(user=user).values_list("language", flat=True).first()
    if language:
        request.session[USER_LANGUAGE_SESSION_KEY] = language


class BookingHold(models.Model):
    """What a booked visit holds of its site, and when (instants in UTC): `count` of a
    resource, or for staff (resource empty) `count` of a staff kind.

    Written only by scheduler.services (visit_book replaces a visit's holds; cancelling,
    marking missed, withdrawal and screen failure delete them; a done visit keeps them, as
    what happened). Not audited row by row: the visit's own history says when and why it was
    booked; the holds follow from its start and its protocol plan.
    """

    visit = models.ForeignKey(ScheduledVisit, on_delete=models.CASCADE, related_name="holds")
    resource = models.ForeignKey(
        "trials.SiteResource", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    staff_kind = models.CharField(max_length=120, blank=True)
    procedure = models.CharField(max_length=40, blank=True)
    start = models.DateTimeField()
    end = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["start", "id"]
        indexes = [models.Index(fields=["resource", "start"], name="hold_resource_start")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(end__gt=models.F("start")), name="hold_end_after_start"
            ),
            models.CheckConstraint(condition=models.Q(count__gte=1), name="hold_count_min_1"),
            models.CheckConstraint(
                condition=(models.Q(resource__isnull=False) & models.Q(staff_kind=""))
                | (models.Q(resource__isnull=True) & ~models.Q(staff_kind="")),
                name="hold_resource_or_staff",
            ),
        ]

    def __str__(self) -> str:
        what = self.staff_kind if self.resource_id is None else f"resource #{self.resource_id}"
        return f"{what} x{self.count} {self.start:%Y-%m-%d %H:%M}-{self.end:%H:%M} UTC"


# ----------------------------------------------------------------------------------------
# The security audit (scheduler/audittrail.py writes it; scheduler/admin/securityaudit.py
# shows it to auditors).


class SecurityEvent(models.Model):
    """One entry of the security audit: a sign-in, a failed one, a sign-out, a lockout, a
    change of someone's permissions or memberships, a person reading a participant's record,
    or an export of a list.

    Written once by `scheduler.audittrail` and never changed: on Postgres a trigger refuses
    UPDATE, DELETE and TRUNCATE (scheduler/appendonly). It names people by username only and
    places by IP address only; a participant by id (never a name), and never a password, a
    contact detail or a treatment arm. `at` is UTC.
    """

    class Kind(models.TextChoices):
        LOGIN = "login", _("sign-in")
        LOGIN_FAILED = "login_failed", _("failed sign-in")
        LOGOUT = "logout", _("sign-out")
        LOCKOUT = "lockout", _("account locked")
        LOCKED_OUT_ATTEMPT = "locked_out_attempt", _("sign-in refused while locked")
        SECOND_FACTOR_ENROLLED = "second_factor_enrolled", _("second factor enrolled")
        SECOND_FACTOR_FAILED = "second_factor_failed", _("wrong second-factor code")
        PERMISSION_CHANGE = "permission_change", _("permission change")
        MEMBERSHIP_CHANGE = "membership_change", _("membership change")
        VIEW = "view", _("record viewed")
        EXPORT = "export", _("list exported")

    class Surface(models.TextChoices):
        ADMIN = "admin", _("admin")
        API = "api", _("API")
        EXPORT = "export", _("export")

    at = models.DateTimeField(_("when (UTC)"), db_index=True)
    kind = models.CharField(_("event"), max_length=32, choices=Kind.choices)
    # Who acted: the person signing in (or the username tried, when an account has it), the
    # user manager who changed a permission, the reader of a record.
    username = models.CharField(_("username"), max_length=150, blank=True)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    # A plain id, not a foreign key: deleting a participant must not touch the trail.
    participant_id = models.BigIntegerField(_("participant id"), null=True, blank=True)
    surface = models.CharField(_("surface"), max_length=8, choices=Surface.choices, blank=True)
    # What, in a few plain words: the page, the filter and the row count of an export, the
    # account whose groups changed and how.
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("security event")
        verbose_name_plural = _("security events")
        indexes = [
            models.Index(fields=["participant_id", "at"], name="securityevent_participant"),
            models.Index(fields=["username", "at"], name="securityevent_username"),
        ]
        permissions = [("review_security_audit", "Can review the security audit")]

    def __str__(self) -> str:
        return f"{self.kind} {self.username or '-'} {self.at:%Y-%m-%d %H:%M:%S} UTC"
