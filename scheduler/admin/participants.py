"""The participant admin: their calendar, actions, reminders and feeds.

It lives in the scheduler app because everything it does is a scheduler service; Django
registers it when scheduler/admin.py imports this module.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from scheduler import access
from scheduler.access import site_today
from scheduler.admin import lists
from scheduler.admin.actions import Done, LifecycleAction, Outcome, Preview, Summary
from scheduler.admin.base import (
    CalendarActionsAdmin,
    SiteClockHistory,
    VisitStatusColumns,
    calendar_summary,
    glance_label,
    iso,
    site_clock_column,
    step_label,
)
from scheduler.admin.enroll import (
    enroll_url,
    enroll_view,
    participant_page_warnings,
    register_view,
)
from scheduler.admin.feeds import feeds_url
from scheduler.admin.scoping import ScopedAdmin, ScopedInline, scoped_filter
from scheduler.admin.screening import ScreeningLogMixin, participant_status_text
from scheduler.admin.timeline import TimelineMixin
from scheduler.admin.unblinding import EmergencyUnblindingActions
from scheduler.display import site_time
from scheduler.forms import (
    AnchorChangeForm,
    LifecycleForm,
    MoveToVersionForm,
    ParticipantCompleteForm,
    ParticipantWithdrawForm,
    ScreenFailForm,
    TaperDecisionForm,
    UnscheduledVisitForm,
)
from scheduler.models import Reminder, ScheduledMilestone, ScheduledVisit
from scheduler.selectors import (
    TAPER_STEP_LABELS,
    VISIT_GLANCE_LABELS,
    milestone_step_status,
    milestones_with_next_step,
    participants_with_visit_status,
    visit_glance_status,
    withdrawal_cancellations,
)
from scheduler.services import (
    CalendarError,
    participant_anchor_change,
    participant_anchor_change_preview,
    participant_complete,
    participant_details_save,
    participant_move_to_version,
    participant_move_to_version_preview,
    participant_screen_fail,
    participant_withdraw,
    participation_end_check,
    taper_adjust,
    taper_adjust_preview,
    visit_add_unscheduled,
    visit_add_unscheduled_preview,
)
from trials.admin import AuditTrailAdmin
from trials.models import (
    Anchor,
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    Site,
    localized_name,
)
from trials.protocol_file import Channel, MilestoneKind


class AnchorInline(ScopedInline):
    """A participant's anchor dates: entered with a new participant, then read-only here.

    Moving an anchor re-plans the calendar, so it goes through "Change anchor date", which
    previews the change, asks for a reason and audits it; editing the row here would not.
    """

    model = ParticipantAnchor
    extra = 0

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        # Typed once, with a new participant (the add form); read-only afterwards.
        if action == "add":
            return obj is None and access.holds_role(request.user, access.WRITE_ROLES)
        return super().permits(request, action, obj)


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

    def get_queryset(self, request: HttpRequest) -> Any:
        return (
            super()
            .get_queryset(request)
            # The participant's site gives each row's today (`glance_status`): joined, not read
            # again for every visit.
            .select_related("visit_definition", "protocol_version__trial", "participant__site")
        )

    @admin.display(description=gettext_lazy("status"))
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

    def get_queryset(self, request: HttpRequest) -> Any:
        return milestones_with_next_step(
            super().get_queryset(request).select_related("rule", "participant__site")
        )

    @admin.display(description=gettext_lazy("status"))
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
    readonly_fields = (*fields, "last_error_hidden")
    ordering = ["-due_at", "-id"]
    due = site_clock_column("due_at", "due at", lambda row: row.participant.site)
    sent = site_clock_column("sent_at", "sent at", lambda row: row.participant.site)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The delivery error only for the roles that see the participant's contact details
        # (the reminder list's rule, scheduler/admin/outbox.py); the others read that it
        # failed. `obj` is the participant whose page this is.
        readable = obj is not None and access.can_see_contact_details(
            request.user, trial_id=obj.trial_id, site_id=obj.site_id
        )
        shown = "last_error" if readable else "last_error_hidden"
        return [shown if name == "last_error" else name for name in self.fields]

    @admin.display(description="last error")
    def last_error_hidden(self, reminder: Reminder) -> str:
        from scheduler.admin.outbox import error_hidden  # the reminder list's own words

        return error_hidden(reminder)

    def get_queryset(self, request: HttpRequest) -> Any:
        # Upcoming rows are the plan, not what happened; the reminder list shows them. The site
        # gives each row's clock (`due`, `sent`).
        return (
            super()
            .get_queryset(request)
            .filter(due_at__lte=timezone.now())
            .select_related("participant__site")
        )


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


ACTIVE = (Participant.Status.SCREENING, Participant.Status.ENROLLED)


class ActiveParticipantAction(LifecycleAction[Participant]):
    def available(self, record: Participant) -> bool:
        return record.status in ACTIVE


class Withdraw(ActiveParticipantAction):
    name = "withdraw"
    title = "Withdraw"
    form_class = ParticipantWithdrawForm
    confirm_label = "Confirm withdrawal"

    def initial(self, record: Participant) -> dict[str, Any]:
        return {"on": site_today(record.site)}

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        participation_end_check(record, data["on"])  # what the service refuses, said first
        visits, milestones = withdrawal_cancellations(participant=record, on=data["on"])
        today = site_today(record.site)
        return Preview(
            [("Withdrawn on", iso(data["on"]), False), ("Reason", data["reason"], False)],
            note=(
                "Everything before the withdrawal date, and every visit already done, "
                "missed or cancelled, stays as it is."
            ),
            # Each with its status at a glance from the site's today (a "planned" visit whose
            # window closed is overdue).
            context={
                "cancelled_visits": [
                    (visit, VISIT_GLANCE_LABELS[visit_glance_status(visit, today=today)])
                    for visit in visits
                ],
                "cancelled_milestones": milestones,
            },
        )

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        closure = participant_withdraw(
            participant=record, on=data["on"], by=by, reason=data["reason"]
        )
        return Done(
            _(
                "%(participant)s withdrawn on %(day)s; %(visits)d visit(s) and %(milestones)d "
                "milestone(s) cancelled."
            )
            % {
                "participant": record,
                "day": iso(data["on"]),
                "visits": len(closure.cancelled_visits),
                "milestones": len(closure.cancelled_milestones),
            },
            record,
        )


class ChangeAnchor(ActiveParticipantAction):
    name = "anchor"
    title = "Change anchor date"
    form_class = AnchorChangeForm
    confirm_label = "Confirm the new date"

    def form_kwargs(self, record: Participant) -> dict[str, Any]:
        return {"anchors": list(Anchor.objects.filter(version=record.protocol_version_id))}

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        code, new_date = data["code"], data["new_date"]
        diff = participant_anchor_change_preview(participant=record, code=code, new_date=new_date)
        current = {anchor.code: anchor.date for anchor in record.anchors.all()}
        return Preview(
            [
                ("Anchor", code, False),
                ("Now", iso(current.get(code)), False),
                ("New date", iso(new_date), True),
                ("Reason", data["reason"], False),
            ],
            diff=diff,
        )

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        diff = participant_anchor_change(
            participant=record,
            code=data["code"],
            new_date=data["new_date"],
            by=by,
            reason=data["reason"],
        )
        return Done(
            _("%(anchor)s of %(participant)s set to %(day)s; %(calendar)s.")
            % {
                "anchor": data["code"],
                "participant": record,
                "day": iso(data["new_date"]),
                "calendar": calendar_summary(diff),
            },
            record,
        )


class TaperDecision(ActiveParticipantAction):
    name = "taper"
    title = "Taper decision"
    form_class = TaperDecisionForm
    confirm_label = "Confirm the decision"

    def available(self, record: Participant) -> bool:
        return super().available(record) and _tapers(record).exists()

    def form_kwargs(self, record: Participant) -> dict[str, Any]:
        return {"tapers": _tapers(record)}

    def page_context(self, record: Participant) -> dict[str, Any]:
        # The schedule the decision changes, beside the form: each week's day and dose, and
        # which week is the one taken now.
        today = site_today(record.site)
        steps = milestones_with_next_step(
            ScheduledMilestone.objects.filter(
                participant=record, rule__kind=MilestoneKind.TAPER
            ).select_related("rule", "participant__site")
        ).order_by("rule__order", "sequence")
        return {
            "taper_schedule": [
                (
                    step.rule.code,
                    step.sequence,
                    step.due_date,
                    step.dose_mg,
                    _(TAPER_STEP_LABELS.get(status, status)),
                    status == "current",
                )
                for step in steps
                for status in [milestone_step_status(step, today=today)]
            ]
        }

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        diff = taper_adjust_preview(
            participant=record,
            milestone_code=data["milestone_code"],
            week=data["week"],
            dose_mg=data["dose_mg"],
            allow_increase=data["allow_increase"],
        )
        return Preview(_taper_outcome(data), diff=diff)

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        diff = taper_adjust(
            participant=record,
            milestone_code=data["milestone_code"],
            week=data["week"],
            dose_mg=data["dose_mg"],
            allow_increase=data["allow_increase"],
            by=by,
            reason=data["reason"],
        )
        return Done(
            _("%(taper)s week %(week)s %(decision)s; %(calendar)s.")
            % {
                "taper": data["milestone_code"],
                "week": data["week"],
                "decision": _decision_text(data),
                "calendar": calendar_summary(diff),
            },
            record,
        )


class AddUnscheduledVisit(ActiveParticipantAction):
    name = "unscheduled_visit"
    title = "Add unscheduled visit"
    form_class = UnscheduledVisitForm
    confirm_label = "Confirm: add the visit"

    def form_kwargs(self, record: Participant) -> dict[str, Any]:
        return {
            "procedures": ProcedureDefinition.objects.filter(
                version=record.protocol_version_id
            ).order_by("order")
        }

    def _wanted(self, record: Participant, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "participant": record,
            "local_date": data["local_date"],
            "local_time": data["local_time"],
            "reason": data["reason"],
            "procedure_codes": data["procedure_codes"],
        }

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        plan = visit_add_unscheduled_preview(**self._wanted(record, data))
        return Preview(
            [
                ("When", _unscheduled_when(plan.start, plan.local_date, record), True),
                (
                    "Procedures",
                    ", ".join(f"{p.code} – {localized_name(p)}" for p in plan.procedures) or "—",
                    False,
                ),
                ("Reason", data["reason"], False),
            ],
            note="An unscheduled visit moves nothing else in the calendar.",
        )

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        visit = visit_add_unscheduled(**self._wanted(record, data), by=by)
        when = _unscheduled_when(visit.booked_start, visit.target_date, record)
        return Done(
            _("Unscheduled visit of %(participant)s added for %(when)s.")
            % {"participant": record, "when": when},
            visit,
        )


class Complete(LifecycleAction[Participant]):
    name = "complete"
    title = "Complete the study"
    form_class = ParticipantCompleteForm
    confirm_label = "Confirm completion"

    def available(self, record: Participant) -> bool:
        return record.status == Participant.Status.ENROLLED

    def initial(self, record: Participant) -> dict[str, Any]:
        return {"on": site_today(record.site)}

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        participation_end_check(record, data["on"])  # what the service refuses, said first
        open_visits = [
            f"{visit.code} ({glance_label(visit)})"
            for visit in record.visits.filter(status__in=ScheduledVisit.OPEN)
            .select_related("visit_definition", "participant__site")
            .order_by("target_date", "id")
        ]
        if open_visits:
            # The service refuses the same: said at the preview, before anyone confirms.
            raise CalendarError(
                _(
                    "%(participant)s still has open visits: %(visits)s; record, miss or "
                    "cancel them first"
                )
                % {"participant": record, "visits": ", ".join(open_visits)}
            )
        return Preview(
            [
                ("Completed on", iso(data["on"]), False),
                # Stored in English when left empty (the audit trail's words); said here in
                # the reader's language, as the form's help says it.
                ("Reason", data["reason"] or _("completed the study"), False),
            ],
            note="Every visit is closed; pending reminders are cancelled.",
        )

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        participant_complete(
            participant=record,
            on=data["on"],
            by=by,
            reason=data["reason"] or "completed the study",
        )
        return Done(
            _("%(participant)s completed the study on %(day)s.")
            % {"participant": record, "day": iso(data["on"])},
            record,
        )


class ScreenFail(LifecycleAction[Participant]):
    name = "screen_fail"
    title = "Screen failed"
    form_class = ScreenFailForm
    confirm_label = "Confirm: screen failed"

    def available(self, record: Participant) -> bool:
        return record.status == Participant.Status.SCREENING

    def initial(self, record: Participant) -> dict[str, Any]:
        return {"on": site_today(record.site)}

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        today = site_today(record.site)
        if data["on"] > today:
            raise CalendarError(
                _(
                    "a screen failure is recorded on or before the site's today (%(today)s), "
                    "not on %(day)s"
                )
                % {"today": iso(today), "day": iso(data["on"])},
                field="on",
            )
        visits, milestones = withdrawal_cancellations(participant=record, on=dt.date.min)
        return Preview(
            [
                ("Screen failed on", iso(data["on"]), False),
                ("Reason", data["reason"], False),
            ],
            note="Visits already done stay as they are; the screening log lists the reason.",
            context={
                "cancelled_visits": [
                    (visit, VISIT_GLANCE_LABELS[visit_glance_status(visit, today=today)])
                    for visit in visits
                ],
                "cancelled_milestones": milestones,
            },
        )

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        participant_screen_fail(participant=record, on=data["on"], by=by, reason=data["reason"])
        return Done(
            _("%(participant)s screen failed on %(day)s: %(reason)s.")
            % {"participant": record, "day": iso(data["on"]), "reason": data["reason"]},
            record,
        )


class MoveToVersion(ActiveParticipantAction):
    name = "move_version"
    title = "Move to another protocol version"
    form_class = MoveToVersionForm
    confirm_label = "Confirm the move"

    def available(self, record: Participant) -> bool:
        return super().available(record) and self._versions(record).exists()

    def _versions(self, record: Participant) -> QuerySet[ProtocolVersion]:
        return (
            ProtocolVersion.objects.filter(trial=record.trial_id, published_at__isnull=False)
            .exclude(pk=record.protocol_version_id)
            .select_related("trial")
            .order_by("-published_at")
        )

    def initial(self, record: Participant) -> dict[str, Any]:
        return {"on": site_today(record.site)}

    def form_kwargs(self, record: Participant) -> dict[str, Any]:
        return {"versions": list(self._versions(record))}

    def _version(self, record: Participant, data: dict[str, Any]) -> ProtocolVersion:
        return self._versions(record).get(pk=data["version_id"])

    def preview(self, record: Participant, data: dict[str, Any], form: LifecycleForm) -> Preview:
        version = self._version(record, data)
        diff = participant_move_to_version_preview(
            participant=record, version=version, on=data["on"]
        )
        return Preview(
            [
                ("Now on", str(record.protocol_version), False),
                ("Moves to", str(version), True),
                ("From", iso(data["on"]), False),
                ("Reason", data["reason"], False),
            ],
            diff=diff,
            note="What lies before that date, and every visit already done, keeps its version.",
        )

    def confirm(
        self, record: Participant, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        version = self._version(record, data)
        diff = participant_move_to_version(
            participant=record, version=version, on=data["on"], by=by, reason=data["reason"]
        )
        return Done(
            _("%(participant)s moved to %(version)s from %(day)s; %(calendar)s.")
            % {
                "participant": record,
                "version": version,
                "day": iso(data["on"]),
                "calendar": calendar_summary(diff),
            },
            record,
        )


PARTICIPANT_ACTIONS: list[LifecycleAction[Participant]] = [
    ScreenFail(),
    Withdraw(),
    ChangeAnchor(),
    TaperDecision(),
    AddUnscheduledVisit(),
    MoveToVersion(),
    Complete(),
]


def _unscheduled_when(start: dt.datetime | None, day: dt.date, participant: Participant) -> str:
    if start is not None:
        return site_time(start, participant.site)
    return _("%(day)s (not booked yet)") % {"day": iso(day)}


@admin.register(Participant)
class ParticipantAdmin(
    EmergencyUnblindingActions,
    ScreeningLogMixin,
    TimelineMixin,
    VisitStatusColumns,
    CalendarActionsAdmin,
):
    lifecycle = PARTICIPANT_ACTIONS
    action_select_related = ("trial", "site", "protocol_version__trial")
    # What a coordinator reads at 1366 px: the counts needing action first (visits done are
    # on the participant's page and in the visit list); columns in admin/lists.py.
    list_display = [
        "study_id",
        lists.participant_where_column,
        "status",
        lists.enrolled_column,
        "visits_due",
        "visits_overdue",
        "visits_booked",
        "visits_out_of_window",
        "visits_missed",
    ]
    list_filter = [scoped_filter("site"), scoped_filter("trial"), "status"]
    search_fields = ["study_id", "trial__code"]
    list_per_page = 50
    list_select_related = ["trial", "site", "protocol_version__trial"]
    readonly_fields = ["status", "enrolled_at", "enrolled_on", "enrolled", "protocol_version"]
    inlines = [AnchorInline, VisitInline, MilestoneInline, ReminderInline]
    form = ParticipantAdminForm
    # Says at the top, while it is true, when invites and reminders reach nobody.
    change_form_template = "admin/notices/change_form.html"
    # Changed only by the services (enrol, withdraw, complete, move to a version), which
    # re-plan the calendar and record why; never by editing the form.
    locked_fields = [
        "trial",
        "site",
        "status",
        "protocol_version",
        "enrolled_at",
        "enrolled_on",
        "ended_on",
    ]
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
                    "enrolled_on",
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
                "fields": ["email", "phone", "guardian_name", "guardian_email", "guardian_phone"],
                "description": "For a minor, invites and reminders go to the guardian (SMS to "
                "the guardian's phone when there is one, else to the phone above).",
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

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        # Registered (the add form) and their details edited by the roles that change
        # calendars at their site; never deleted.
        if action == "add":
            return self.may_write(request)
        if action == "change":
            return self.may_write(request, obj)
        return super().permits(request, action, obj)

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

    def summary(self, record: Participant) -> Summary:
        return _participant_summary(record)

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
            *self.lifecycle_urls(),
            *super().get_urls(),
        ]

    def lifecycle_buttons(self, request: HttpRequest, record: Any) -> list[tuple[str, str]]:
        buttons = super().lifecycle_buttons(request, record)
        if buttons and record.status == Participant.Status.SCREENING:
            # Enrolling is its own page (eligibility, the investigator's sign-off, the arm).
            buttons.insert(0, ("Check eligibility and enroll", enroll_url(record)))
        return buttons

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None:
            context["related_links"] = _related_links(obj)
            context["page_warnings"] = participant_page_warnings(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)


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
        ("Status", participant_status_text(participant)),
        ("Protocol version", str(participant.protocol_version)),
        ("Anchors", anchors or "—"),
        (
            "Site",
            _("%(site)s; times are site-local, %(zone)s")
            % {"site": participant.site.name, "zone": participant.site.timezone},
        ),
    ]


def _decision_text(decision: dict[str, Any]) -> str:
    if decision["dose_mg"] is None:
        return _("held at last week's dose")
    return _("set to %(dose)s mg/day") % {"dose": f"{decision['dose_mg'].normalize():f}"}


def _taper_outcome(decision: dict[str, Any]) -> Outcome:
    return [
        ("Taper", decision["milestone_code"], False),
        ("Week", str(decision["week"]), False),
        ("Decision", _decision_text(decision), False),
        ("Increase confirmed", _("yes") if decision["allow_increase"] else _("no"), False),
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
