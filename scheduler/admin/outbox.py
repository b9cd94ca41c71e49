from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from scheduler import access
from scheduler.admin.base import ReadOnlyAdmin, participant_site, site_clock_column
from scheduler.admin.scoping import scoped_filter
from scheduler.models import (
    CoordinatorNotification,
    Reminder,
)
from scheduler.outbox.sweep import notifications_mark_read, reminders_retry


class ReminderAttentionFilter(admin.SimpleListFilter):
    """The rows a person has to look at: the ones `reminders_retry` can send again."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("failed_or_dead", "failed or dead")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "failed_or_dead":
            return queryset.filter(status__in=[Reminder.Status.FAILED, Reminder.Status.DEAD])
        return queryset


@admin.register(Reminder)
class ReminderAdmin(ReadOnlyAdmin):
    """The reminder outbox. Rows are planned by `reminders_sync` and sent by the workers, so
    here they are only read; a coordinator sees what failed and why, and sends failed or dead
    rows again with the "Retry" action once the cause is fixed (an address, a phone number)."""

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
    search_fields = ["participant__study_id", "rule_code", "last_error"]
    list_select_related = ["participant__trial", "participant__site"]
    ordering = ["-due_at", "-id"]
    actions = ["retry"]
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
    readonly_fields = ["due", "next_attempt", "enqueued", "claimed", "sent", "created"]
    due = site_clock_column("due_at", "due at", participant_site)
    next_attempt = site_clock_column("next_attempt_at", "next attempt at", participant_site)
    enqueued = site_clock_column("enqueued_at", "enqueued at", participant_site)
    claimed = site_clock_column("claimed_at", "claimed at", participant_site)
    sent = site_clock_column("sent_at", "sent at", participant_site)
    created = site_clock_column("created_at", "created at", participant_site)

    @admin.display(description="error", ordering="last_error")
    def error(self, reminder: Reminder) -> str:
        return Truncator(reminder.last_error).chars(200)

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Reminder]:
        return access.reminders_for(request.user, write=write)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self.may_write(request)

    @admin.action(description="Retry the selected failed or dead reminders", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> None:
        # Only what the user may change: a monitor's view of a site is read-only.
        queryset = queryset.filter(pk__in=self.writable(request).values("pk"))
        selected = queryset.count()
        requeued = reminders_retry(reminders=queryset)
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
