from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module: no cycle at run time
    from rest_framework.request import Request
    from rest_framework.views import APIView


class CredentialRateThrottle(SimpleRateThrottle):
    """One budget per credential: an OAuth2 application (all its tokens together), else the
    signed-in person, else the client address.

    Counts live in Django's cache; deployments with several web processes configure a shared
    cache (Redis) so the budget is one per credential, not one per process.
    """

    scope = "credential"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        application_id = getattr(request.auth, "application_id", None)
        if application_id is not None:
            ident = f"app-{application_id}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
