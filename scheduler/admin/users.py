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
from typing import Any

import django.contrib.auth.admin  # noqa: F401 - registers the admins replaced here
import oauth2_provider.admin  # noqa: F401 - registers the admins replaced here
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from scheduler.admin.scoping import UserManagersAdmin, deny_undeclared
from scheduler.models import Membership

Application = get_application_model()


def _governed_by_user_managers(model: type[Any]) -> type[admin.ModelAdmin]:
    """Register `model` again with its current admin class on `UserManagersAdmin`."""
    original = type(admin.site.get_model_admin(model))
    admin.site.unregister(model)
    governed = type(
        original.__name__,
        (UserManagersAdmin, original),
        {"__module__": __name__, "__doc__": original.__doc__},
    )
    admin.site.register(model, governed)
    return governed


_governed_by_user_managers(get_user_model())
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
