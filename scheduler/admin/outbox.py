from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import URLPattern
from django.utils.text import Truncator, smart_split, unescape_string_literal
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scheduler import access
from scheduler.admin.actions import Done, LifecycleAction, LifecycleActions, Preview, Summary
from scheduler.admin.base import ReadOnlyAdmin, participant_site, site_clock_column
from scheduler.admin.scoping import scoped_filter
from scheduler.display import site_time
from scheduler.forms import REASON_WIDGET, LifecycleForm
from scheduler.models import (
    CoordinatorNotification,
    Reminder,
)
from scheduler.outbox.sweep import (
    DECISION_REASON_MAX,
    MARK_SENT,
    SEND_AGAIN,
    notifications_mark_read,
    reminders_decide_unknown,
    reminders_retry,
)

HIDDEN_ERROR = "details hidden for your role"
HIDDEN_FAILURE = f"failed ({HIDDEN_ERROR})"


def may_read_error(user: Any, reminder: Reminder | None) -> bool:
    """May the user read this reminder's delivery error: the rule of contact details
    (access.can_see_contact_details) at the participant's trial and site."""
    if reminder is None:
        return False
    participant = reminder.participant
    return access.can_see_contact_details(
        user, trial_id=participant.trial_id, site_id=participant.site_id
    )


def error_hidden(reminder: Reminder) -> str:
    """What a role without the right to contact details reads instead of the error."""
    if not reminder.last_error:
        return ""
    failed = reminder.status in (Reminder.Status.FAILED, Reminder.Status.DEAD)
    return HIDDEN_FAILURE if failed else HIDDEN_ERROR


def error_for(user: Any, reminder: Reminder) -> str:
    return reminder.last_error if may_read_error(user, reminder) else error_hidden(reminder)


class ReminderAttentionFilter(admin.SimpleListFilter):
    """The rows a person has to look at: the ones `reminders_retry` can send again, and the
    ones whose outcome is unknown (a person decides: mark as sent, or send again)."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("failed_or_dead", "failed or dead"), ("unknown", "outcome unknown")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "failed_or_dead":
            return queryset.filter(status__in=[Reminder.Status.FAILED, Reminder.Status.DEAD])
        if self.value() == "unknown":
            return queryset.filter(status=Reminder.Status.UNKNOWN)
        return queryset


# ----------------------------------------------------------------------------------------
# A reminder whose outcome is unknown: a person decides, with a reason (audited)


class UnknownDecisionForm(LifecycleForm):
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        max_length=DECISION_REASON_MAX,
        widget=REASON_WIDGET,
        help_text=gettext_lazy(
            "Required, kept in the reminder's history with your name: how you know "
            "(e.g. the participant confirmed by phone that the message arrived)."
        ),
    )

    def clean_reason(self) -> str:
        reason = " ".join(self.cleaned_data["reason"].split())
        if not reason:
            raise forms.ValidationError(_("Give a reason for the decision."))
        return reason


class UnknownDecision(LifecycleAction[Reminder]):
    """One of the two decisions on a reminder whose worker stopped mid-send on a channel
    that does not de-duplicate: the provider may or may not have taken it."""

    decision: str
    form_class = UnknownDecisionForm
    what_happens: str

    def available(self, record: Reminder) -> bool:
        return record.status == Reminder.Status.UNKNOWN

    def preview(self, record: Reminder, data: dict[str, Any], form: LifecycleForm) -> Preview:
        site = record.participant.site
        return Preview(
            [
                ("Reminder", f"{record.event} · {record.channel}", False),
                (
                    "Attempted at",
                    site_time(record.claimed_at, site) if record.claimed_at else "—",
                    False,
                ),
                ("What happens", _(self.what_happens), True),
                ("Reason", data["reason"], False),
            ],
        )

    def confirm(
        self, record: Reminder, data: dict[str, Any], form: LifecycleForm, by: User
    ) -> Done:
        decided = reminders_decide_unknown(
            reminders=[record], decision=self.decision, by=by, reason=data["reason"]
        )
        if not decided:
            return Done(_("This reminder's outcome is no longer unknown: left as it is."), record)
        if self.decision == MARK_SENT:
            return Done(_("Marked as sent; nothing more goes out."), record)
        return Done(_("Queued again: it goes out with the next sweep."), record)


class MarkSent(UnknownDecision):
    name = "mark_sent"
    title = "Mark as sent"
    confirm_label = "Confirm: mark as sent"
    decision = MARK_SENT
    what_happens = "recorded as sent; nothing goes out"


class SendAgain(UnknownDecision):
    name = "send_again"
    title = "Send again"
    confirm_label = "Confirm: send again"
    decision = SEND_AGAIN
    what_happens = "sent again with the next sweep: the participant may get it twice"


@admin.register(Reminder)
class ReminderAdmin(LifecycleActions, ReadOnlyAdmin):
    """The reminder outbox. Rows are planned by `reminders_sync` and sent by the workers, so
    here they are only read; a coordinator sees what failed and why, and sends failed or dead
    rows again with the "Retry" action once the cause is fixed (an address, a phone number).
    A row whose outcome is unknown gets a person's decision, "Mark as sent" or "Send again",
    each with a reason, on its page (or from the list's actions, one row at a time)."""

    lifecycle = [MarkSent(), SendAgain()]
    action_select_related = ("participant__site",)
    change_form_template = "admin/lifecycle/change_form.html"

    list_display = [
        "due",
        "participant",
        "rule_code",
        "event",
        "channel",
        "audience",
        "status",
        "attempts",
        "error",
        "sent",
    ]
    list_filter = [
        ReminderAttentionFilter,
        "status",
        "channel",
        "audience",
        scoped_filter("participant__site"),
        scoped_filter("participant__trial"),
    ]
    # And the error, where the user may read it (get_search_results).
    search_fields = ["participant__study_id", "rule_code"]
    list_select_related = ["participant__trial", "participant__site"]
    ordering = ["-due_at", "-id"]
    actions = ["retry", "mark_sent", "send_again"]
    # Every instant on the clock of the participant's site.
    fields = [
        "participant",
        "visit",
        "milestone",
        "target_key",
        "rule_code",
        "event",
        "channel",
        "audience",
        "due",
        "status",
        "next_attempt",
        "attempts",
        "enqueued",
        "claimed",
        "sent",
        "last_error",
        "provider_message_id",
        "ical_sequence",
        "created",
    ]
    readonly_fields = [
        "due",
        "next_attempt",
        "enqueued",
        "claimed",
        "sent",
        "created",
        "last_error",
        "last_error_hidden",
    ]
    due = site_clock_column("due_at", "due at", participant_site)
    next_attempt = site_clock_column("next_attempt_at", "next attempt at", participant_site)
    enqueued = site_clock_column("enqueued_at", "enqueued at", participant_site)
    claimed = site_clock_column("claimed_at", "claimed at", participant_site)
    sent = site_clock_column("sent_at", "sent at", participant_site)
    created = site_clock_column("created_at", "created at", participant_site)

    # Why a delivery failed, only for the roles that see the participant's contact details
    # (a provider's text may have named the number or the address before it was scrubbed,
    # and a mail server's reason is about the address); the others read that it failed.

    @admin.display(description="error")
    def error(self, reminder: Reminder) -> str:
        return ""  # replaced per request by error_column (it needs the user)

    def error_column(self, request: HttpRequest) -> Callable[[Reminder], str]:
        """The error column for this request's user (one per request: the changelist asks
        for the list's columns more than once and compares them)."""
        column: Callable[[Reminder], str] | None = getattr(request, "_reminder_error_column", None)
        if column is not None:
            return column
        user = request.user
        # Sorting by a text tells its order: only for users who may read every row's.
        ordering = "last_error" if access.sees_contact_details_wherever_it_reads(user) else None

        @admin.display(description="error", ordering=ordering)
        def error(reminder: Reminder) -> str:
            return Truncator(error_for(user, reminder)).chars(200)

        request._reminder_error_column = error  # type: ignore[attr-defined]
        return error

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)
        return [self.error_column(request) if name == "error" else name for name in shown]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        shown = "last_error" if may_read_error(request.user, obj) else "last_error_hidden"
        return [shown if name == "last_error" else name for name in self.fields]

    @admin.display(description="last error")
    def last_error_hidden(self, reminder: Reminder) -> str:
        return error_hidden(reminder)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Reminder], search_term: str
    ) -> tuple[QuerySet[Reminder], bool]:
        """Django's search over study id and rule code, and over the error only among the
        rows whose error the user may read (else a search would tell what an error says)."""
        readable = Q(pk__in=access.reminders_with_contact_details_for(request.user).values("pk"))
        for bit in smart_split(search_term):
            if bit[:1] in ('"', "'") and bit[-1:] == bit[:1]:
                with contextlib.suppress(ValueError):
                    bit = unescape_string_literal(bit)
            queryset = queryset.filter(
                Q(participant__study_id__icontains=bit)
                | Q(rule_code__icontains=bit)
                | (readable & Q(last_error__icontains=bit))
            )
        return queryset, False

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Reminder]:
        return access.reminders_for(request.user, write=write)

    def get_urls(self) -> list[URLPattern]:
        return [*self.lifecycle_urls(), *super().get_urls()]

    def summary(self, record: Reminder) -> Summary:
        participant = record.participant
        return [
            ("Participant", participant.study_id),
            ("Reminder", f"{record.event} · {record.channel}"),
            ("Due", site_time(record.due_at, participant.site)),
            ("Status", record.get_status_display()),
        ]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self.may_write(request)

    has_mark_sent_permission = has_retry_permission
    has_send_again_permission = has_retry_permission

    def _decide(self, request: HttpRequest, queryset: QuerySet[Reminder], name: str) -> Any:
        """A decision needs a reason, so the list action opens the decision's page for one
        selected unknown row (the page asks the reason, previews and confirms)."""
        unknown = queryset.filter(
            pk__in=self.writable(request).values("pk"), status=Reminder.Status.UNKNOWN
        ).order_by("pk")
        if unknown.count() != 1:
            self.message_user(
                request,
                _(
                    "Select exactly one reminder whose outcome is unknown: each decision "
                    "has its own reason."
                ),
                messages.WARNING,
            )
            return None
        return HttpResponseRedirect(self.action_url(name, unknown.get()))

    @admin.action(
        description=gettext_lazy("Mark as sent (outcome unknown)"), permissions=["mark_sent"]
    )
    def mark_sent(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> Any:
        return self._decide(request, queryset, "mark_sent")

    @admin.action(
        description=gettext_lazy("Send again (outcome unknown)"), permissions=["send_again"]
    )
    def send_again(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> Any:
        return self._decide(request, queryset, "send_again")

    @admin.action(description="Retry the selected failed or dead reminders", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> None:
        # Only what the user may change: a monitor's view of a site is read-only.
        queryset = queryset.filter(pk__in=self.writable(request).values("pk"))
        selected = queryset.count()
        requeued = reminders_retry(
            reminders=queryset, by=request.user, reason="retried from the admin"
        )
        self.message_user(
            request,
            f"{requeued} reminder(s) re-queued: they go out with the next sweep.",
            messages.SUCCESS,
        )
        if requeued < selected:
            self.message_user(
                request,
                f"{selected - requeued} selected reminder(s) were neither failed nor dead "
                "and were left as they were.",
                messages.WARNING,
            )


class NotificationReadFilter(admin.SimpleListFilter):
    title = "read"
    parameter_name = "read"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "unread"), ("yes", "read")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("no", "yes"):
            return queryset.filter(read_at__isnull=self.value() == "no")
        return queryset


@admin.register(CoordinatorNotification)
class CoordinatorNotificationAdmin(ReadOnlyAdmin):
    """In-app reminders of each site's coordinators, newest first."""

    list_display = ["created", "site", "text", "read"]
    list_filter = [NotificationReadFilter, scoped_filter("site")]
    search_fields = ["text"]
    list_select_related = ["site"]
    ordering = ["-created_at", "-id"]
    actions = ["mark_read"]
    fields = ["site", "reminder", "text", "created", "read"]
    readonly_fields = ["created", "read"]
    created = site_clock_column("created_at", "created at", lambda row: row.site)
    read = site_clock_column("read_at", "read at", lambda row: row.site)
    # Notices go to the sites where the user works on calendars (see notifications_for).
    read_roles = access.WRITE_ROLES

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[CoordinatorNotification]:
        return access.notifications_for(request.user)

    @admin.action(description="Mark as read")
    def mark_read(self, request: HttpRequest, queryset: QuerySet[CoordinatorNotification]) -> None:
        marked = notifications_mark_read(notifications=queryset)
        self.message_user(request, f"{marked} notification(s) marked as read.")


# ----------------------------------------------------------------------------------------
# Calendar feeds
