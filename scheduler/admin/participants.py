"""The participant admin: their calendar, actions, reminders and feeds.

It lives in the scheduler app because everything it does is a scheduler service; Django
registers it when scheduler/admin.py imports this module.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, reverse
from django.utils import timezone

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from scheduler import access
from scheduler.access import site_today
from scheduler.admin.base import (
    CalendarActionsAdmin,
    Outcome,
    SiteClockHistory,
    Summary,
    VisitStatusColumns,
    calendar_summary,
    confirmed,
    glance_label,
    iso,
    posted,
    site_clock_column,
    step_label,
    submitted,
)
from scheduler.admin.enroll import (
    enroll_url,
    enroll_view,
    participant_page_warnings,
    register_view,
)
from scheduler.admin.feeds import feeds_url
from scheduler.admin.scoping import ScopedAdmin, ScopedInline, scoped_filter
from scheduler.display import site_time
from scheduler.forms import (
    AnchorChangeForm,
    LifecycleForm,
    ParticipantWithdrawForm,
    TaperDecisionForm,
    UnscheduledVisitForm,
)
from scheduler.models import Reminder, ScheduledMilestone, ScheduledVisit
from scheduler.selectors import (
    VISIT_GLANCE_LABELS,
    milestones_with_next_step,
    participants_with_visit_status,
    visit_glance_status,
    withdrawal_cancellations,
)
from scheduler.services import (
    CalendarError,
    participant_anchor_change,
    participant_anchor_change_preview,
    participant_details_save,
    participant_withdraw,
    taper_adjust,
    taper_adjust_preview,
    visit_add_unscheduled,
)
from trials.admin import AuditTrailAdmin
from trials.models import Anchor, MilestoneRule, ProcedureDefinition, Site
from trials.protocol_file import Channel, MilestoneKind


class AnchorInline(ScopedInline):
    """A participant's anchor dates: entered with a new participant, then read-only here.

    Moving an anchor re-plans the calendar, so it goes through "Change anchor date", which
    previews the change, asks for a reason and audits it; editing the row here would not.
    """

    model = ParticipantAnchor
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and access.holds_role(request.user, access.WRITE_ROLES)


class VisitInline(ScopedInline):
    model = ScheduledVisit
    extra = 0
    can_delete = False
    # The link opens the visit's page, where it is booked, recorded or cancelled.
    show_change_link = True
    fields = (
        "visit_definition",
        "occurrence",
        "target_date",
        "window_start",
        "window_end",
        "glance_status",
        "booked_date",
        "actual_date",
        "deviation_days",
        "protocol_version",
    )
    readonly_fields = fields
    ordering = ["target_date", "id"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        return (
            super()
            .get_queryset(request)
            .select_related("visit_definition", "protocol_version__trial")
        )

    @admin.display(description="status")
    def glance_status(self, visit: ScheduledVisit) -> str:
        # Computed from the site's today: a planned visit whose window closed is overdue.
        return glance_label(visit)


class MilestoneInline(ScopedInline):
    model = ScheduledMilestone
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("rule", "sequence", "due_date", "dose_mg", "step_status", "flag")
    readonly_fields = fields
    ordering = ["due_date", "id"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        return milestones_with_next_step(super().get_queryset(request).select_related("rule"))

    @admin.display(description="status")
    def step_status(self, milestone: ScheduledMilestone) -> str:
        # Taper weeks: past, current (the dose taken now, highlighted) or planned.
        return step_label(milestone)


RECENT_REMINDERS = 25


class RecentRemindersFormSet(BaseInlineFormSet):
    """Only the latest reminders: a participant has dozens over a trial; the list has all."""

    def get_queryset(self) -> Any:
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[:RECENT_REMINDERS]
        return self._recent


class ReminderInline(ScopedInline):
    """What the outbox did for this participant: reminders due so far, the latest first."""

    model = Reminder
    formset = RecentRemindersFormSet
    verbose_name_plural = f"reminders due so far (the latest {RECENT_REMINDERS})"
    extra = 0
    can_delete = False
    fields = (
        "rule_code",
        "event",
        "channel",
        "due",
        "status",
        "attempts",
        "last_error",
        "sent",
    )
    readonly_fields = fields
    ordering = ["-due_at", "-id"]
    due = site_clock_column("due_at", "due at", lambda row: row.participant.site)
    sent = site_clock_column("sent_at", "sent at", lambda row: row.participant.site)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        # Upcoming rows are the plan, not what happened; the reminder list shows them.
        return super().get_queryset(request).filter(due_at__lte=timezone.now())


class ParticipantAdminForm(forms.ModelForm):
    reminder_channels = forms.MultipleChoiceField(
        choices=[(Channel.EMAIL.value, "email"), (Channel.SMS.value, "SMS")],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: email only. SMS needs a phone number.",
    )

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        start = self.cleaned_data.get("quiet_hours_start")
        end = self.cleaned_data.get("quiet_hours_end")
        if (start is None) != (end is None):
            # One end alone would be silently ignored when reminders are planned.
            raise ValidationError("Give both ends of the quiet hours, or neither.")
        return cleaned


PARTICIPANT_ACTIONS = [
    ("withdraw", "Withdraw"),
    ("anchor", "Change anchor date"),
    ("taper", "Taper decision"),
    ("unscheduled_visit", "Add unscheduled visit"),
]
ACTIVE = (Participant.Status.SCREENING, Participant.Status.ENROLLED)


@admin.register(Participant)
class ParticipantAdmin(VisitStatusColumns, CalendarActionsAdmin):
    list_display = [
        "study_id",
        "trial",
        "site",
        "status",
        "protocol_version",
        "enrolled",
        "visits_due",
        "visits_booked",
        "visits_done",
        "visits_missed",
        "visits_out_of_window",
        "visits_overdue",
    ]
    list_filter = [scoped_filter("trial"), scoped_filter("site"), "status"]
    search_fields = ["study_id", "trial__code"]
    list_select_related = ["trial", "site", "protocol_version__trial"]
    readonly_fields = ["status", "enrolled_at", "enrolled", "protocol_version"]
    inlines = [AnchorInline, VisitInline, MilestoneInline, ReminderInline]
    form = ParticipantAdminForm
    # Says at the top, while it is true, when invites and reminders reach nobody.
    change_form_template = "admin/notices/change_form.html"
    # Changed only by the services (enrol, withdraw, complete, move to a version), which
    # re-plan the calendar and record why; never by editing the form.
    locked_fields = ["trial", "site", "status", "protocol_version", "enrolled_at", "ended_on"]
    change_fieldsets = [
        (
            None,
            {
                "fields": [
                    "trial",
                    "site",
                    "study_id",
                    "status",
                    "protocol_version",
                    "enrolled",
                    "ended_on",
                    "birth_date",
                    "weight_kg",
                    "timezone",
                    "language",
                ]
            },
        ),
        (
            "Contact",
            {
                "fields": ["email", "phone", "guardian_name", "guardian_email"],
                "description": "For a minor, invites and reminders go to the guardian.",
            },
        ),
        (
            "Reminder preferences",
            {
                "fields": [
                    "reminder_channels",
                    "reminders_opt_out",
                    ("quiet_hours_start", "quiet_hours_end"),
                ],
                "description": (
                    "Times are the participant's own. A reminder due in the quiet hours is "
                    "sent just before they begin."
                ),
            },
        ),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is None:
            return readonly
        return readonly + [name for name in self.locked_fields if name not in readonly]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return super().get_fieldsets(request, obj)
        if access.can_see_contact_details(request.user, trial_id=obj.trial_id, site_id=obj.site_id):
            return self.change_fieldsets
        # Pharmacists, monitors and site systems never see how to reach a participant.
        return [fieldset for fieldset in self.change_fieldsets if fieldset[0] != "Contact"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Participant]:
        return access.participants_for(request.user, write=write)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.may_write(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.may_write(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            # Channels, opt-out, quiet hours and addresses decide which reminders are
            # planned: the service saves the edit and the outbox follows it.
            saved = participant_details_save(
                participant=obj, changed_fields=list(form.changed_data), by=request.user
            )
            for warning in saved.warnings:
                self.message_user(request, warning, messages.WARNING)
        else:
            super().save_model(request, obj, form, change)

    # The moment of enrollment on the site's clock (Django alone would show it in UTC).
    enrolled = site_clock_column("enrolled_at", "enrolled at", lambda row: row.site)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Participant]:
        # Each participant's counts from their site's today (see visit_status_filters_per_site).
        return participants_with_visit_status(queryset=super().get_queryset(request))

    def history_site(self, obj: Any) -> Site:
        return obj.site

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        # A participant is registered and enrolled by the services, never saved as a bare row.
        return register_view(self, request)

    def enroll_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return enroll_view(self, request, object_id)

    def get_urls(self) -> list[URLPattern]:
        return [
            self.action_path("enroll", "enroll", self.enroll_view),
            self.action_path("withdraw", "withdraw", self.withdraw_view),
            self.action_path("anchor", "anchor", self.anchor_view),
            self.action_path("taper", "taper", self.taper_view),
            self.action_path("unscheduled-visit", "unscheduled_visit", self.unscheduled_view),
            *super().get_urls(),
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and obj.status in ACTIVE and self.may_write(request, obj):
            has_taper = _tapers(obj).exists()
            context["lifecycle_actions"] = [
                (label, self.action_url(name, obj))
                for name, label in PARTICIPANT_ACTIONS
                if name != "taper" or has_taper
            ]
            if obj.status == Participant.Status.SCREENING:
                context["lifecycle_actions"].insert(
                    0, ("Check eligibility and enroll", enroll_url(obj))
                )
        if obj is not None:
            context["related_links"] = _related_links(obj)
            context["page_warnings"] = participant_page_warnings(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- the actions

    def withdraw_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        participant = self._participant(request, object_id)
        form: LifecycleForm = ParticipantWithdrawForm(
            posted(request), initial={"on": site_today(participant.site)}
        )
        if submitted(request) and form.is_valid():
            on, reason = form.cleaned_data["on"], form.cleaned_data["reason"]
            if confirmed(request):
                try:
                    closure = participant_withdraw(
                        participant=participant, on=on, by=request.user, reason=reason
                    )
                except CalendarError as refusal:
                    form.add_error(None, str(refusal))
                else:
                    return self.action_done(
                        request,
                        f"{participant} withdrawn on {iso(on)}; "
                        f"{len(closure.cancelled_visits)} visit(s) and "
                        f"{len(closure.cancelled_milestones)} milestone(s) cancelled.",
                        participant,
                    )
            else:
                visits, milestones = withdrawal_cancellations(participant=participant, on=on)
                today = site_today(participant.site)
                return self._participant_page(
                    request,
                    participant,
                    "preview",
                    form,
                    "Withdraw",
                    outcome=[
                        ("Withdrawn on", iso(on), False),
                        ("Reason", reason, False),
                    ],
                    note=(
                        "Everything before the withdrawal date, and every visit already done, "
                        "missed or cancelled, stays as it is."
                    ),
                    # Each with its status at a glance from the site's today (a "planned"
                    # visit whose window closed is overdue).
                    cancelled_visits=[
                        (visit, VISIT_GLANCE_LABELS[visit_glance_status(visit, today=today)])
                        for visit in visits
                    ],
                    cancelled_milestones=milestones,
                    confirm_label="Confirm withdrawal",
                )
        return self._participant_page(request, participant, "form", form, "Withdraw")

    def anchor_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        participant = self._participant(request, object_id)
        anchors = list(Anchor.objects.filter(version=participant.protocol_version_id))
        form: LifecycleForm = AnchorChangeForm(posted(request), anchors=anchors)
        if submitted(request) and form.is_valid():
            code, new_date = form.cleaned_data["code"], form.cleaned_data["new_date"]
            reason = form.cleaned_data["reason"]
            try:
                if confirmed(request):
                    diff = participant_anchor_change(
                        participant=participant,
                        code=code,
                        new_date=new_date,
                        by=request.user,
                        reason=reason,
                    )
                    return self.action_done(
                        request,
                        f"{code} of {participant} set to {iso(new_date)}; "
                        f"{calendar_summary(diff)}.",
                        participant,
                    )
                diff = participant_anchor_change_preview(
                    participant=participant, code=code, new_date=new_date
                )
            except CalendarError as refusal:
                form.add_error(None, str(refusal))
            else:
                current = {a.code: a.date for a in participant.anchors.all()}
                return self._participant_page(
                    request,
                    participant,
                    "preview",
                    form,
                    "Change anchor date",
                    outcome=[
                        ("Anchor", code, False),
                        ("Now", iso(current.get(code)), False),
                        ("New date", iso(new_date), True),
                        ("Reason", reason, False),
                    ],
                    diff=diff,
                    confirm_label="Confirm the new date",
                )
        return self._participant_page(request, participant, "form", form, "Change anchor date")

    def taper_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        participant = self._participant(request, object_id)
        form: LifecycleForm = TaperDecisionForm(posted(request), tapers=_tapers(participant))
        if submitted(request) and form.is_valid():
            decision = form.cleaned_data
            try:
                if confirmed(request):
                    diff = taper_adjust(
                        participant=participant,
                        milestone_code=decision["milestone_code"],
                        week=decision["week"],
                        dose_mg=decision["dose_mg"],
                        allow_increase=decision["allow_increase"],
                        by=request.user,
                        reason=decision["reason"],
                    )
                    return self.action_done(
                        request,
                        f"{decision['milestone_code']} week {decision['week']} "
                        f"{_decision_text(decision)}; {calendar_summary(diff)}.",
                        participant,
                    )
                diff = taper_adjust_preview(
                    participant=participant,
                    milestone_code=decision["milestone_code"],
                    week=decision["week"],
                    dose_mg=decision["dose_mg"],
                    allow_increase=decision["allow_increase"],
                )
            except CalendarError as refusal:
                form.add_error(None, str(refusal))
            else:
                return self._participant_page(
                    request,
                    participant,
                    "preview",
                    form,
                    "Taper decision",
                    outcome=_taper_outcome(decision),
                    diff=diff,
                    confirm_label="Confirm the decision",
                )
        return self._participant_page(request, participant, "form", form, "Taper decision")

    def unscheduled_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        participant = self._participant(request, object_id)
        form: LifecycleForm = UnscheduledVisitForm(
            posted(request),
            procedures=ProcedureDefinition.objects.filter(
                version=participant.protocol_version_id
            ).order_by("order"),
        )
        if submitted(request) and form.is_valid():
            wanted = form.cleaned_data
            try:
                visit = visit_add_unscheduled(
                    participant=participant,
                    local_date=wanted["local_date"],
                    local_time=wanted["local_time"],
                    reason=wanted["reason"],
                    procedure_codes=wanted["procedure_codes"],
                    by=request.user,
                )
            except CalendarError as refusal:
                form.add_error(None, str(refusal))
            else:
                when = (
                    site_time(visit.booked_start, participant.site)
                    if visit.booked_start
                    else f"{iso(visit.target_date)} (not booked yet)"
                )
                return self.action_done(
                    request, f"Unscheduled visit of {participant} added for {when}.", visit
                )
        return self._participant_page(
            request, participant, "form", form, "Add unscheduled visit", submit_label="Add visit"
        )

    # --- helpers of the actions

    def _participant(self, request: HttpRequest, object_id: int) -> Participant:
        # No write role anywhere: refused whatever the id; else another site's participant
        # (or one only read here) is a 404.
        if not self.may_write(request):
            raise PermissionDenied
        return self.visible_object(
            request,
            object_id,
            self.writable(request).select_related("trial", "site", "protocol_version__trial"),
        )

    def _participant_page(
        self,
        request: HttpRequest,
        participant: Participant,
        template: str,
        form: LifecycleForm,
        title: str,
        **context: Any,
    ) -> HttpResponse:
        return self.action_page(
            request,
            participant,
            template=template,
            title=title,
            form=form,
            summary=_participant_summary(participant),
            **context,
        )


def _related_links(participant: Participant) -> list[tuple[str, str]]:
    # Whoever reads the participant reads their reminders and feeds (the same scope).
    reminders = reverse("admin:scheduler_reminder_changelist")
    return [
        ("Reminders", f"{reminders}?{urlencode({'participant__id__exact': participant.pk})}"),
        ("Calendar feed", feeds_url(participant)),
    ]


def _tapers(participant: Participant) -> QuerySet[MilestoneRule]:
    return MilestoneRule.objects.filter(
        version=participant.protocol_version_id, kind=MilestoneKind.TAPER
    ).order_by("order")


def _participant_summary(participant: Participant) -> Summary:
    anchors = ", ".join(f"{a.code} {iso(a.date)}" for a in participant.anchors.all())
    return [
        ("Participant", str(participant)),
        ("Status", participant.get_status_display()),
        ("Protocol version", str(participant.protocol_version)),
        ("Anchors", anchors or "—"),
        ("Site", f"{participant.site.name}; times are site-local, {participant.site.timezone}"),
    ]


def _decision_text(decision: dict[str, Any]) -> str:
    if decision["dose_mg"] is None:
        return "held at last week's dose"
    return f"set to {decision['dose_mg'].normalize():f} mg/day"


def _taper_outcome(decision: dict[str, Any]) -> Outcome:
    return [
        ("Taper", decision["milestone_code"], False),
        ("Week", str(decision["week"]), False),
        ("Decision", _decision_text(decision), False),
        ("Increase confirmed", "yes" if decision["allow_increase"] else "no", False),
        ("Reason", decision["reason"], False),
    ]


@admin.register(TreatmentAssignment)
class TreatmentAssignmentAdmin(ScopedAdmin, SiteClockHistory, AuditTrailAdmin):
    """The arm: an open trial's to whoever reads its participants, a blinded trial's only to
    an unblinded role at the participant's site (access.assignments_for). Its history carries
    the arm too, so its History pages answer 404 for every other assignment, exactly like a
    missing one; its audit entries are not browsable on their own anywhere."""

    list_display = ["participant", "arm", "assigned_at"]
    list_select_related = ["participant__trial", "participant__site", "arm"]

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[TreatmentAssignment]:
        if write:
            return TreatmentAssignment.objects.none()
        return access.assignments_for(request.user)
