"""Sign-in attempts, lockouts and second-factor devices in the admin: user managers only.

django-axes' admins (Access attempts: the failures counted toward a lockout, deleted to lift
one; Access failures: each failed sign-in; Access logs: each sign-in and sign-out) and
django-otp's TOTP devices are registered again, and django-otp-webauthn's passkeys registered,
on `UserManagersAdmin`, so only whoever manages users sees them (scheduler/admin/users.py
imports this module before `deny_undeclared`). A device is never added or edited here: a user
manager who chose someone's key would hold their second factor. Deleting one (a lost phone or
security key) makes its owner enrol again at the next sign-in.
"""

from __future__ import annotations

from typing import Any

import axes.admin  # noqa: F401 - registers the admins replaced here
import django_otp.plugins.otp_totp.admin  # noqa: F401 - registers the admin replaced here
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.admin import WebAuthnCredentialAdmin
from django_otp_webauthn.models import WebAuthnCredential

from scheduler.admin.scoping import UserManagersAdmin


def _governed(model: type[Any], *, may: tuple[str, ...], original: Any = None) -> None:
    """Register `model` again with its package's admin (registered, or `original` where the
    package registers none) on `UserManagersAdmin`, allowing user managers `may` beyond
    reading."""
    if original is None:
        original = type(admin.site.get_model_admin(model))
        admin.site.unregister(model)

    def permits(self: Any, request: HttpRequest, action: str, obj: Any = None) -> bool:
        return (action in ("module", "view") or action in may) and UserManagersAdmin.permits(
            self, request, action, obj
        )

    admin.site.register(
        model,
        type(
            original.__name__,
            (UserManagersAdmin, original),
            {"__module__": __name__, "__doc__": original.__doc__, "permits": permits},
        ),
    )


# Deleting an access attempt lifts the lockout it counts toward.
_governed(AccessAttempt, may=("delete",))
_governed(AccessFailureLog, may=())
_governed(AccessLog, may=())
_governed(TOTPDevice, may=("delete",))
_governed(WebAuthnCredential, may=("delete",), original=WebAuthnCredentialAdmin)
