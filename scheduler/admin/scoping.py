"""Who may see what in the admin.

Memberships (who works on which trial at which site, in which role) are managed here by
whoever manages users (`auth.change_user`). Every change is in the membership's audit trail
(who, when, old and new values), as for clinical records; a membership is deleted rather than
edited into another role, so the trail reads as "granted … revoked".

`ScopedAdmin` is the base of every admin of clinical data: its rows come from
scheduler/access.py and nothing else (see its docstring for the rule). `UserManagersAdmin`
is the base of every admin of governance data that is not a trial's (users, groups,
memberships, machine credentials): only user managers see it.

Deny by default, for every admin: an admin that declares neither rule (Django's own, a
package's, a new one registered with a plain `ModelAdmin`) is replaced by `deny_undeclared`
with one that shows nothing to anyone, a superuser included, and `manage.py check` names it
(scheduler.E100/W100) until it declares its rule.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db.models import (
    DateField,
    DateTimeField,
    DecimalField,
    FloatField,
    ForeignKey,
    GenericIPAddressField,
    IntegerField,
    Model,
    QuerySet,
)
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from participants.models import Participant
from scheduler import access, audittrail
from trials.admin import READS, OneRule
from trials.models import Site, Trial
from trials.protocol_file import EARLIEST_DATE, LATEST_DATE

# ----------------------------------------------------------------------------------------
# Clinical admins: every row from scheduler/access.py, deny by default.

# The lookups Django's list filters (and the app's links) send for a field they filter on,
# and the fields a range may run over.
RANGE_LOOKUPS = frozenset({"gt", "gte", "lt", "lte"})
FILTER_LOOKUPS = frozenset({"exact", "isnull", "in", *RANGE_LOOKUPS})
RANGEABLE_FIELDS = (DateField, DateTimeField, IntegerField, DecimalField, FloatField, ForeignKey)
# The years a date drill-down may ask for: those anything is planned on (protocol files and
# the API take dates in the same range), so no week or month around them runs off the calendar.
HIERARCHY_YEARS = range(EARLIEST_DATE.year, LATEST_DATE.year + 1)


def _field_and_lookup(model: type[Model], lookup: str) -> tuple[Any, str]:
    """The field a list lookup ends on and its lookup ("exact" when none is written); no
    field when the first part names none (a custom filter's parameter)."""
    parts = lookup.split(LOOKUP_SEP)
    field: Any = None
    for position, part in enumerate(parts):
        meta = (field.related_model if field is not None else model)._meta
        try:
            field = meta.pk if part == "pk" else meta.get_field(part)
        except FieldDoesNotExist:
            if field is None:
                return None, ""
            return field, LOOKUP_SEP.join(parts[position:])
        if not field.is_relation or field.related_model is None:
            rest = parts[position + 1 :]
            return field, LOOKUP_SEP.join(rest) if rest else "exact"
    return field, "exact"


def is_primary_key(model: type[Model], value: str) -> bool:
    """Could `value` (as posted) be a primary key of `model`: of its type and in its range?
    An integer key is ASCII digits only (int() also takes " 12", "1_2" and "١٢")."""
    field = model._meta.pk
    assert field is not None
    if isinstance(field, IntegerField) and not (value.isascii() and value.isdigit()):
        return False
    try:
        # The field's range validators (bigint for BigAutoField) as well as its type.
        field.run_validators(field.to_python(value))
    except ValidationError:
        return False
    return True


class ScopedAdmin(OneRule, admin.ModelAdmin):
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

    # Who may act on rows here (their actions' door): holders of one of these roles.
    write_roles: frozenset[str] = access.WRITE_ROLES

    def may_write(self, request: HttpRequest, obj: Any = None) -> bool:
        """May the user change rows here (or this row): a write role, and the row in scope."""
        if obj is None:
            return access.holds_role(request.user, self.write_roles)
        if request.method not in ("GET", "HEAD"):
            return self.writable(request).filter(pk=obj.pk).exists()
        # Django's change view asks this seven times for one page (the form, its inlines,
        # the buttons). A read changes neither the memberships nor the row, so the first
        # answer holds for the rest of the request; a POST asks the database every time,
        # since its own change may move the row out of scope.
        answers: dict[tuple[type, Any], bool] = request.__dict__.setdefault("_may_write", {})
        key = (type(self), obj.pk)
        if key not in answers:
            answers[key] = self.writable(request).filter(pk=obj.pk).exists()
        return answers[key]

    def visible_object(self, request: HttpRequest, object_id: Any, queryset: Any = None) -> Any:
        """The row if the user may see it, else 404 (a bad id included)."""
        try:
            return get_object_or_404(
                self.get_queryset(request) if queryset is None else queryset, pk=object_id
            )
        except (ValueError, ValidationError) as bad_id:
            raise Http404 from bad_id

    def lookup_allowed(self, lookup: str, value: str, request: Any = None) -> bool:
        """The lookups the list's own filters and links send, not any of the caller's making.

        Django lets a list's query string filter any of the model's own fields with any lookup
        (`?reason__regex=(`, `?target_date__year=99999`, `?last_error__icontains=…`): a value
        the database refuses was a 500 when the list was counted, and a field the list hides
        from a role (a reminder's delivery error from a monitor) could be read a guess at a
        time. Allowed here: exact, isnull and `in` on any field Django allows, ranges on
        dates, instants and numbers only (a range over text reads it a letter at a time), an
        address that is one, and the date hierarchy's year within the dates anything is planned
        on. Anything else is refused as an incorrect filter (the list's "?e=1" page).
        Parameters that name no field are the custom filters' own.
        """
        hierarchy = self.date_hierarchy
        if hierarchy and lookup in {f"{hierarchy}__{part}" for part in ("year", "month", "day")}:
            if lookup.endswith("__year") and not (
                value.isascii() and value.isdigit() and int(value) in HIERARCHY_YEARS
            ):
                raise IncorrectLookupParameters(
                    f"{lookup}: a year from {HIERARCHY_YEARS[0]} to {HIERARCHY_YEARS[-1]}"
                )
            return True
        field, kind = _field_and_lookup(self.model, lookup)
        if field is None:
            return True  # a custom filter's parameter, or no field at all (refused by Django)
        if kind not in FILTER_LOOKUPS or (
            kind in RANGE_LOOKUPS and not isinstance(field, RANGEABLE_FIELDS)
        ):
            raise IncorrectLookupParameters(f"filtering by {lookup} is not offered here")
        if isinstance(field, GenericIPAddressField) and kind == "exact":
            try:
                field.run_validators(field.to_python(value))
            except ValidationError as error:
                raise IncorrectLookupParameters(f"{lookup}: not an address") from error
        return bool(super().lookup_allowed(lookup, value, request))

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        found = super().get_object(request, object_id, from_field)
        if found is None:
            raise Http404
        return found

    # Whether opening one of its records leaves a view in the access audit (the security
    # audit's own rows do not: reading the audit is not reading a participant's record).
    records_views = True

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """The record's page; a page that shows a participant's record (theirs, or one of their
        visits, milestones, reminders, feeds or treatment assignments) is recorded as read,
        under the participant shown (not the id as the URL spells it)."""
        response = super().change_view(request, object_id, form_url, extra_context)
        shown = (getattr(response, "context_data", None) or {}).get("original")
        if self.records_views and shown is not None:
            participant_id: int | None
            if isinstance(shown, Participant):
                participant_id, page = shown.pk, "change"
            else:
                participant_id = getattr(shown, "participant_id", None)
                page = self.model._meta.model_name or "change"
            if participant_id is not None:
                audittrail.record_view(
                    request,
                    participant_id=participant_id,
                    surface="admin",
                    page=page,
                    response=response,
                )
        return response

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

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        """Django's action handling, given only the selected ids that are ids of this model.

        Django filters `pk__in=<the posted _selected_action values>`, and a value that is not
        of the key's type ("abc", "²") is a ValueError there: a 500. Dropped here (a number
        beyond the key's range too), it is answered like an id that matches no row; with
        nothing left, Django's own "items must be selected" message and redirect.
        """
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        valid = [value for value in selected if is_primary_key(self.model, value)]
        if len(valid) != len(selected):
            post = request.POST.copy()
            post.setlist(helpers.ACTION_CHECKBOX_NAME, valid)
            # Django reads the selection from request.POST; the stubs call it read-only.
            request.POST = post  # type: ignore[assignment]
        return super().response_action(request, queryset)

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        """The door and the rows' pages for holders of a read role; nothing is added, changed
        or deleted through Django's forms (changes go through the services' actions)."""
        return action in READS and access.holds_role(request.user, self.read_roles)


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A trial or site filter offering the trials or sites the user reads (from
    scheduler/access.py, a few rows), not every one in the database; and without Django's
    "related only" query, which reads the whole list to find which ones its rows use."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        related = field.related_model
        if related is Site:
            rows: QuerySet[Any] = access.sites_for(request.user)
        elif related is Trial:
            rows = access.trials_for(request.user)
        else:
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        return [(row.pk, str(row)) for row in rows.order_by(*(ordering or ["code"]))]


def scoped_filter(field_path: str) -> tuple[str, type[admin.RelatedFieldListFilter]]:
    """A trial or site list filter offering only the trials and sites the user reads
    (Django's own would list every trial and site in the database)."""
    return (field_path, ScopedRelatedFilter)


class ScopedInline(OneRule, admin.TabularInline):
    """An inline of a scoped admin's record (its rows belong to a record the user already
    may see): shown to holders of a read role, never edited in place. Django's inlines
    would ask the model permissions instead."""

    extra = 0
    can_delete = False

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return action == "view" and access.holds_role(request.user, access.READ_ROLES)


# ----------------------------------------------------------------------------------------
# Governance admins (users, groups, memberships, machine credentials): user managers only.


class UserManagersAdmin(OneRule, admin.ModelAdmin):
    """The base (first in the bases) of every admin of users, groups, memberships and machine
    credentials: user managers (`access.manages_users`) see every row, nobody else sees any
    or the door. Adding, changing and deleting need a user manager who also passes the
    admin's own rule (Django's model permission, or whatever the package's admin refuses)."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return access.user_management_rows_for(request.user, super().get_queryset(request))

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        # Every object page (change, delete, history, a password) is refused alike to anyone
        # else, before any lookup: Django would redirect a missing one to the list.
        if not access.manages_users(request.user):
            raise PermissionDenied
        return super().get_object(request, object_id, from_field)

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        if not access.manages_users(request.user):
            return False
        return action in READS or self.django_permits(request, action, obj)


# ----------------------------------------------------------------------------------------
# Deny by default: an admin that declares no rule shows nothing.


class DeniedAdmin(OneRule, admin.ModelAdmin):
    """Stands in for an admin that declares no rule: no door, no row, no page, for anyone."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).none()

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return False


def declares_rule(model_admin: admin.ModelAdmin) -> bool:
    """Does the admin say, through scheduler/access.py, who sees which of its rows?"""
    return isinstance(model_admin, ScopedAdmin | UserManagersAdmin)


def deny_undeclared(site: admin.AdminSite) -> list[str]:
    """Replace every admin of `site` that declares no rule with a `DeniedAdmin` of the same
    class (so its pages still resolve, as 403s); returns the models' labels."""
    denied = []
    for model, model_admin in list(site._registry.items()):
        if declares_rule(model_admin) or isinstance(model_admin, DeniedAdmin):
            continue
        original = type(model_admin)
        site.unregister(model)
        site.register(
            model,
            type(f"Denied{original.__name__}", (DeniedAdmin, original), {"__module__": __name__}),
        )
        denied.append(model._meta.label)
    return denied


def undeclared_admin_messages(site: admin.AdminSite) -> list[checks.CheckMessage]:
    """An admin that declares no rule is an error (registered after `deny_undeclared` ran, it
    shows rows by Django's permissions alone: to a superuser, everything); one denied by it,
    a warning (it shows nothing to anyone)."""
    found: list[checks.CheckMessage] = []
    for model, model_admin in site._registry.items():
        if isinstance(model_admin, DeniedAdmin):
            found.append(
                checks.Warning(
                    f"The admin of {model._meta.label} declares no access rule, so it shows "
                    "nothing to anyone.",
                    hint="Base it on ScopedAdmin (rows from scheduler/access.py) or "
                    "UserManagersAdmin (scheduler/admin/scoping.py).",
                    obj=type(model_admin),
                    id="scheduler.W100",
                )
            )
        elif not declares_rule(model_admin):
            found.append(
                checks.Error(
                    f"The admin of {model._meta.label} declares no access rule: it shows rows "
                    "by Django's model permissions alone (to a superuser, every row).",
                    hint="Base it on ScopedAdmin (rows from scheduler/access.py) or "
                    "UserManagersAdmin (scheduler/admin/scoping.py).",
                    obj=type(model_admin),
                    id="scheduler.E100",
                )
            )
    return found


@checks.register(checks.Tags.admin)
def check_admins_declare_rules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return undeclared_admin_messages(admin.site)
