"""The security audit in the admin: sign-ins, failures, lockouts, permission and membership
changes, and who read which participant's record or exported which list
(scheduler/audittrail.py writes it).

Auditors only (the "auditor" group, `scheduler.review_security_audit`), and read-only for
them too: the table is append-only (scheduler/appendonly). The rule is
`audittrail.security_events_for`; nobody else sees the door or a row, a superuser included.
Filter by user, participant, surface and date: the username and participant columns link to
the list filtered by them; `?username=…` and `?participant_id=…` do the same by hand.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from scheduler import audittrail
from scheduler.admin.scoping import ScopedAdmin
from scheduler.models import SecurityEvent
from trials.admin import READS

# Every column of the entry's page (all read-only).
SHOWN = ("when", "kind", "username", "ip_address", "surface", "participant_id", "what")


class UsernameFilter(admin.SimpleListFilter):
    """The people in the audit (their usernames), as links."""

    title = _("user")
    parameter_name = "username"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = (
            model_admin.get_queryset(request)
            .exclude(username="")
            .order_by("username")
            .values_list("username", flat=True)
            .distinct()
        )
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(username=value) if value else queryset


class ParticipantFilter(admin.SimpleListFilter):
    """Entries about one participant (by id): chosen by clicking an id in the list."""

    title = _("participant")
    parameter_name = "participant_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # Only the one chosen (a list of every participant ever read would be endless); a
        # filter without a choice would not be applied at all.
        value = self.value()
        return [(value, f"#{value}")] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses (a 500).
        if value.isascii() and value.isdigit():
            return queryset.filter(participant_id=int(value))
        return queryset.none()


@admin.register(SecurityEvent)
class SecurityEventAdmin(ScopedAdmin):
    records_views = False  # reading the audit is not reading a participant's record
    list_display = [
        "when",
        "kind",
        "who",
        "ip_address",
        "surface",
        "participant",
        "what",
    ]
    list_filter = ["kind", "surface", UsernameFilter, ParticipantFilter, "at"]
    date_hierarchy = "at"
    search_fields = ["username"]
    ordering = ["-at", "-id"]
    list_per_page = 100
    readonly_fields = SHOWN
    fields = SHOWN

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[SecurityEvent]:
        if write:
            return SecurityEvent.objects.none()
        return audittrail.security_events_for(request.user)

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action in READS and audittrail.reviews_security_audit(request.user)

    @admin.display(description=_("when (UTC)"), ordering="at")
    def when(self, event: SecurityEvent) -> str:
        return event.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @admin.display(description=_("user"), ordering="username")
    def who(self, event: SecurityEvent) -> str:
        if not event.username:
            return "—"
        return format_html(
            '<a href="?{}">{}</a>', urlencode({"username": event.username}), event.username
        )

    @admin.display(description=_("participant id"), ordering="participant_id")
    def participant(self, event: SecurityEvent) -> str:
        if event.participant_id is None:
            return "—"
        return format_html(
            '<a href="?{}">#{}</a>',
            urlencode({"participant_id": event.participant_id}),
            event.participant_id,
        )

    @admin.display(description=_("detail"))
    def what(self, event: SecurityEvent) -> str:
        return "; ".join(f"{key}: {_words(value)}" for key, value in sorted(event.detail.items()))


def _words(value: Any) -> str:
    return ", ".join(str(item) for item in value) if isinstance(value, list) else str(value)
