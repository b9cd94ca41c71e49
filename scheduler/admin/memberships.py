"""Who may see what in the admin.

Memberships (who works on which trial at which site, in which role) are managed here by
whoever manages users (`auth.change_user`). Every change is in the membership's audit trail
(who, when, old and new values), as for clinical records; a membership is deleted rather than
edited into another role, so the trail reads as "granted … revoked".

`ScopedAdmin` is the base of every admin of clinical data: its rows come from
scheduler/access.py and nothing else (see its docstring for the rule).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from scheduler import access
from scheduler.admin.scoping import UserManagersAdmin
from scheduler.models import Membership
from trials.admin import AuditTrailAdmin

MANAGE_USERS = access.MANAGE_USERS


@admin.register(Membership)
class MembershipAdmin(UserManagersAdmin, AuditTrailAdmin):
    """Memberships: every row for user managers, nothing (not even the door) for anyone
    else, who would learn from them who works at which site."""

    list_display = ["user", "role", "trial", "site", "created_at"]
    list_filter = ["role", "trial", "site"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "trial", "site"]
    fields = ["user", "trial", "site", "role"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        # Granted once; to change anything, revoke it and grant another.
        return readonly if obj is None else [*readonly, "user", "trial", "site", "role"]

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        # Granted and revoked by every user manager (Django's model permissions play no part).
        return access.manages_users(request.user)
