"""Issuing a site system its credentials: a machine user bound to its sites, and an OAuth2
client-credentials application owned by it. The secret is shown once; only its hash is kept."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import Application

from scheduler.models import Membership
from trials.models import Site, Trial


@transaction.atomic
def site_system_credentials_create(
    *, name: str, trial: Trial, sites: list[Site], by: Any = None
) -> tuple[Application, str]:
    """Create a site system (machine user, site_system memberships, OAuth2 application).

    Returns the application and its client secret in plain text, which is never stored and
    cannot be shown again: revoke and issue a new one if it is lost.
    """
    user_model = get_user_model()
    machine = user_model(username=f"system:{name}"[:150], is_active=True)
    machine.set_unusable_password()  # a machine never signs in to the admin
    machine.save()
    for site in sites:
        membership = Membership(user=machine, trial=trial, site=site, role="site_system")
        membership._history_user = by  # type: ignore[attr-defined]
        membership._change_reason = "site system credentials issued"  # type: ignore[attr-defined]
        membership.save()
    secret = generate_client_secret()
    application = Application.objects.create(
        name=name,
        user=machine,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
        hash_client_secret=True,
    )
    return application, secret


@transaction.atomic
def site_system_credentials_revoke(*, application: Application) -> int:
    """Revoke every token of the application and disable its machine user: effective at once."""
    from oauth2_provider.models import AccessToken

    revoked = AccessToken.objects.filter(application=application).count()
    AccessToken.objects.filter(application=application).delete()
    if application.user is not None:
        application.user.is_active = False
        application.user.save(update_fields=["is_active"])
    return revoked
