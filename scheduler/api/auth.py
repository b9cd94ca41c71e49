"""Machine authentication: OAuth2 client credentials (django-oauth-toolkit).

A site system is an OAuth2 Application with the client-credentials grant, owned by a machine
user whose `site_system` memberships bind it to its (trial, site) pairs; what it may see and
do is then decided by `scheduler.access` like for anyone else. Client secrets are stored as
password hashes and access tokens as their SHA-256 (RFC 9700), tokens expire
(OAUTH2_PROVIDER["ACCESS_TOKEN_EXPIRE_SECONDS"]) and can be revoked at /api/v1/oauth/revoke/.

Every request reads its token from the database (no cache: a revoked or expired token is
refused on the very next request), in one query that also brings the application and the
machine user it acts as (django-oauth-toolkit's own lookup joins the application but not its
user, which cost every request a second query).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from django.core.exceptions import SuspiciousOperation
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from oauth2_provider.models import AccessToken
from oauth2_provider.settings import oauth2_settings
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

# The select_related of the token lookup: the application with its (machine) user, and the
# token's own resource owner (none for client credentials).
TOKEN_RELATIONS = ("application__user", "user")


def load_access_token(token: str) -> AccessToken | None:
    """The stored token for a presented bearer token, with its application and users."""
    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    # The checksum is unique: no ORDER BY (`.first()` adds one, which costs its compilation).
    rows = AccessToken.objects.select_related(*TOKEN_RELATIONS).filter(token_checksum=checksum)
    return next(iter(rows.order_by()[:1]), None)


def _oauthlib_core() -> Any:
    """django-oauth-toolkit's `get_oauthlib_core`, with a validator whose token lookup is
    `load_access_token`; every other check (expiry, scopes, audience, the application's
    `is_usable`, header-only transport) is the configured validator's own."""
    validator = _validator_class(oauth2_settings.OAUTH2_VALIDATOR_CLASS)()
    server = oauth2_settings.OAUTH2_SERVER_CLASS(validator, **oauth2_settings.server_kwargs)
    return oauth2_settings.OAUTH2_BACKEND_CLASS(server)


@functools.cache
def _validator_class(base: type[Any]) -> type[Any]:
    class Validator(base):  # type: ignore[misc, valid-type]
        def _load_access_token(self, token: str) -> AccessToken | None:
            return load_access_token(token)

    return Validator


class SiteSystemAuthentication(OAuth2Authentication):
    """Bearer tokens of the client-credentials grant act as their application's user."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = self._verify(request)
        if result is None:
            return None
        user, token = result
        # Client-credentials tokens carry no resource owner: the application's machine user
        # is the one whose memberships scope the request.
        user = user or token.application.user
        if user is None or not user.is_active:
            raise AuthenticationFailed("this credential has no active user")
        return user, token

    def _verify(self, request: Request) -> tuple[Any, Any] | None:
        # OAuth2Authentication.authenticate, with `_oauthlib_core` for `get_oauthlib_core`.
        try:
            valid, r = _oauthlib_core().verify_request(request, scopes=[])
        except ValueError as error:
            if str(error) == "Invalid hex encoding in query string.":
                raise SuspiciousOperation(error) from error
            raise
        if valid:
            return r.user, r.access_token
        request.oauth2_error = getattr(r, "oauth2_error", {})  # type: ignore[attr-defined]
        return None
