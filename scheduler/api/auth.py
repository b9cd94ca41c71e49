"""Machine authentication: OAuth2 client credentials (django-oauth-toolkit).

A site system is an OAuth2 Application with the client-credentials grant, owned by a machine
user whose `site_system` memberships bind it to its (trial, site) pairs; what it may see and
do is then decided by `scheduler.access` like for anyone else. Client secrets are stored as
password hashes and access tokens as their SHA-256 (RFC 9700), tokens expire
(OAUTH2_PROVIDER["ACCESS_TOKEN_EXPIRE_SECONDS"]) and can be revoked at /api/v1/oauth/revoke/.
"""

from __future__ import annotations

from typing import Any

from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request


class SiteSystemAuthentication(OAuth2Authentication):
    """Bearer tokens of the client-credentials grant act as their application's user."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        # Client-credentials tokens carry no resource owner: the application's machine user
        # is the one whose memberships scope the request.
        user = user or token.application.user
        if user is None or not user.is_active:
            raise AuthenticationFailed("this credential has no active user")
        return user, token
