"""Users, groups and machine credentials in the admin: user managers only; and the admin's
deny-by-default guard.

Django's User and Group admins and django-oauth-toolkit's (applications, access and refresh
tokens, ID tokens, grants) are registered again on `UserManagersAdmin`: whoever manages users
(`auth.change_user`) sees every row, nobody else sees any, or the door; a superuser manages
users, so sees them. Credentials are issued by `manage.py api_client_create`, which creates
the machine user and its site-system memberships with the application, so an application is
never added or edited here (that would bind it to another user's sites without a trace);
its page shows the (trial, site) pairs it acts for. Tokens are revoked with the package's
own actions.

Imported last by the package (it imports every other module of the package first), so
`deny_undeclared` sees every admin registered so far: one that declares no access rule
shows nothing to anyone.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any

import django.contrib.auth.admin  # noqa: F401 - registers the admins replaced here
import oauth2_provider.admin  # noqa: F401 - registers the admins replaced here
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Count, Prefetch, QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)
from simple_history.models import HistoricalChanges

from scheduler.admin.scoping import UserManagersAdmin, deny_undeclared
from scheduler.models import Membership

Application = get_application_model()


def _governed_by_user_managers(model: type[Any], *mixins: type[Any]) -> type[admin.ModelAdmin]:
    """Register `model` again with its current admin class on `UserManagersAdmin` (and
    `mixins`, first)."""
    original = type(admin.site.get_model_admin(model))
    admin.site.unregister(model)
    governed = type(
        original.__name__,
        (*mixins, UserManagersAdmin, original),
        {"__module__": __name__, "__doc__": original.__doc__},
    )
    admin.site.register(model, governed)
    return governed


def named_in_audit_trail(users: Iterable[Any]) -> list[str]:
    """Why each of `users` cannot be deleted: the audit trail entries that name them as who
    made a change. The trail is append-only (on Postgres its triggers refuse the UPDATE that
    Django's SET_NULL would make), and who did what is what it is kept for."""
    by_id = {user.pk: user for user in users}
    reasons = []
    for model in apps.get_models():
        fields = {field.name for field in model._meta.get_fields()}
        if not issubclass(model, HistoricalChanges) or "history_user" not in fields:
            continue  # not the trail, or a many-to-many history (its parent names the user)
        counts = (
            model._default_manager.filter(history_user__in=list(by_id))
            .order_by()
            .values_list("history_user")
            .annotate(entries=Count("pk"))
        )
        for user_id, entries in counts:
            reasons.append(
                ngettext(
                    "%(user)s is named in %(count)d audit entry of %(what)s: the audit trail "
                    "keeps who made each change, so deactivate the account instead (untick "
                    "“Active”)",
                    "%(user)s is named in %(count)d audit entries of %(what)s: the audit trail "
                    "keeps who made each change, so deactivate the account instead (untick "
                    "“Active”)",
                    entries,
                )
                % {
                    "user": by_id[user_id],
                    "count": entries,
                    "what": model._meta.verbose_name_plural,
                }
            )
    return reasons


class KeptByTheAuditTrail:
    """A user named in the audit trail is never deleted: the delete page lists those entries
    as protected (Django then refuses the deletion), for one user or a selection."""

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        deleted, counts, permissions_needed, protected = super().get_deleted_objects(  # type: ignore[misc]
            objs, request
        )
        return deleted, counts, permissions_needed, [*protected, *named_in_audit_trail(objs)]


_governed_by_user_managers(get_user_model(), KeptByTheAuditTrail)
_governed_by_user_managers(Group)
for _token_model in (
    get_access_token_model(),
    get_refresh_token_model(),
    get_id_token_model(),
    get_grant_model(),
):
    _governed_by_user_managers(_token_model)


ApplicationRecordAdmin: Any = type(admin.site.get_model_admin(Application))
admin.site.unregister(Application)


@admin.register(Application)
class SiteSystemApplicationAdmin(UserManagersAdmin, ApplicationRecordAdmin):  # type: ignore[misc]
    """OAuth2 applications (site systems' credentials) with the (trial, site) pairs each acts
    for: its machine user's site-system memberships."""

    list_display = (*ApplicationRecordAdmin.list_display, "bound_to")
    readonly_fields = (*ApplicationRecordAdmin.readonly_fields, "bound_to")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        bindings = Membership.objects.filter(role=Membership.Role.SITE_SYSTEM).select_related(
            "trial", "site"
        )
        return (
            super()
            .get_queryset(request)
            .select_related("user")
            .prefetch_related(
                Prefetch(
                    "user__memberships",
                    queryset=bindings.order_by("trial__code", "site__code"),
                    to_attr="site_system_bindings",
                )
            )
        )

    @admin.display(description="acts for (trial @ site)")
    def bound_to(self, application: Any) -> str:
        user = application.user
        bindings = getattr(user, "site_system_bindings", None) if user is not None else None
        if bindings is None:
            if user is None:
                return "-"
            bindings = list(
                user.memberships.filter(role=Membership.Role.SITE_SYSTEM)
                .select_related("trial", "site")
                .order_by("trial__code", "site__code")
            )
        return ", ".join(f"{m.trial.code} @ {m.site.code}" for m in bindings if m.site) or "-"

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        # Credentials come with their sites from `manage.py api_client_create`: never added
        # or edited here (editing the user would move them to other sites, unaudited).
        return action not in ("add", "change") and super().permits(request, action, obj)


# Every other module of the package first (each registers its admins), then the guard.
for _module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
    importlib.import_module(f"{__package__}.{_module.name}")
DENIED = deny_undeclared(admin.site)
