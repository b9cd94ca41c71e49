"""Who may call the API at all; what they see is scoped by `scheduler.access` in each view.

A token needs the "read" scope for GET/HEAD/OPTIONS and "write" for everything else; a
session (a person in the browsable API) is held to the same roles but has no scopes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

if TYPE_CHECKING:  # rest_framework.views imports this module: no cycle at run time
    from rest_framework.request import Request
    from rest_framework.views import APIView


class ApiAccess(BasePermission):
    message = "this credential lacks the scope this request needs"

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.user is None or not request.user.is_authenticated:
            return False
        token: Any = request.auth
        if token is None or not hasattr(token, "scope"):
            return True  # a session
        needed = "read" if request.method in SAFE_METHODS else "write"
        return bool(token.is_valid([needed]))
