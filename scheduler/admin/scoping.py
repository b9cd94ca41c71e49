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
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from scheduler import access

# ----------------------------------------------------------------------------------------
# Clinical admins: every row from scheduler/access.py, deny by default.


class ScopedAdmin(admin.ModelAdmin):
    """The base of every admin of clinical data (participants, their calendars, reminders,
    notices, feeds, arms and the audit trail of all of them).

    The rule: a staff user's access to clinical data comes from memberships alone. Which rows
    an admin shows is `scoped(request, write=False)`, which each subclass names from
    scheduler/access.py; what its actions change is `scoped(request, write=True)`. Django's
    model permissions play no part, and a superuser without a membership sees nothing. An admin
    that names no rule shows nothing. A row outside the scope is a 404 on every page (change,
    history, one past version, every action), never a 403 or the admin's "does not exist"
    redirect, so nobody learns that it exists.
    """

    # Who sees the admin's door (its entry in the index): holders of one of these roles.
    read_roles: frozenset[str] = access.READ_ROLES

    def scoped(self, request: HttpRequest, *, write: bool) -> QuerySet[Any]:
        return self.model._default_manager.none()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = self.scoped(request, write=False)
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def writable(self, request: HttpRequest) -> QuerySet[Any]:
        return self.scoped(request, write=True)

    def may_write(self, request: HttpRequest, obj: Any = None) -> bool:
        """May the user change rows here (or this row): a write role, and the row in scope."""
        if obj is None:
            return access.holds_role(request.user, access.WRITE_ROLES)
        return self.writable(request).filter(pk=obj.pk).exists()

    def visible_object(self, request: HttpRequest, object_id: Any, queryset: Any = None) -> Any:
        """The row if the user may see it, else 404 (a bad id included)."""
        try:
            return get_object_or_404(
                self.get_queryset(request) if queryset is None else queryset, pk=object_id
            )
        except (ValueError, ValidationError) as bad_id:
            raise Http404 from bad_id

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        found = super().get_object(request, object_id, from_field)
        if found is None:
            raise Http404
        return found

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        # simple-history falls back to the audit trail when the live row is not in
        # get_queryset(): another site's record must look exactly like a missing one.
        self.visible_object(request, unquote(object_id))
        return super().history_view(request, object_id, extra_context)

    def history_form_view(
        self, request: HttpRequest, object_id: str, version_id: str, extra_context: Any = None
    ) -> HttpResponse:
        # simple-history reads a past version without asking get_queryset() at all.
        self.visible_object(request, unquote(object_id))
        return super().history_form_view(  # type: ignore[misc]
            request, object_id, version_id, extra_context
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access.holds_role(request.user, self.read_roles)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.holds_role(request.user, self.read_roles)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def scoped_filter(field_path: str) -> tuple[str, type[admin.RelatedOnlyFieldListFilter]]:
    """A trial or site list filter offering only the trials and sites of the rows the user
    sees (Django's own would list every trial and site in the database)."""
    return (field_path, admin.RelatedOnlyFieldListFilter)


class ScopedInline(admin.TabularInline):
    """An inline of a scoped admin's record (its rows belong to a record the user already
    may see): shown to holders of a read role, never edited in place. Django's inlines
    would ask the model permissions instead."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.holds_role(request.user, access.READ_ROLES)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
