"""Middleware: the health check that must run before Django looks at the request's Host, and
the reader's language."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import translation

from scheduler.i18n import SUPPORTED_LANGUAGES
from scheduler.models import USER_LANGUAGE_SESSION_KEY
from scheduler.views import healthz, livez

HEALTH_PATH = "/healthz"
LIVE_PATH = "/livez"
PROBES = {HEALTH_PATH: healthz, LIVE_PATH: livez}


class HealthCheckMiddleware:
    """Answer `/healthz` and `/livez` before host validation, redirects and sessions.

    Container and load-balancer probes call the app by IP (docker-compose's check calls
    127.0.0.1, Kubernetes probes the pod's address), and no deployment lists those in
    ALLOWED_HOSTS, so through the normal stack every probe would be a 400. The endpoints are
    exempt by design: they read nothing from the request, take GET only, and say no more than
    "this process answers", "the database answers" and the heartbeat's age. It sits first, so
    an HTTPS redirect in front of everything else does not turn a plain-HTTP probe into a 301.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)


class UserLanguageMiddleware:
    """Show every page in the language its reader chose (English or Japanese).

    Placed after AuthenticationMiddleware and Django's LocaleMiddleware: LocaleMiddleware
    activates the browser's Accept-Language; a choice made with the admin's language switch
    (stored per user, copied into the session at sign-in; see scheduler/i18n.py) wins over it.
    Reads the session only, never a table, so a page costs the same queries in any language.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        language = session.get(USER_LANGUAGE_SESSION_KEY) if session is not None else None
        if language in SUPPORTED_LANGUAGES:
            translation.activate(language)
            request.LANGUAGE_CODE = language
        return self.get_response(request)
