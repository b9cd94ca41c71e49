"""Middleware: the health check that must run before Django looks at the request's Host, the
refusal of NUL characters in parameters, and the reader's language."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils import translation

from scheduler.api.errors import PROBLEM_CONTENT_TYPE, problem_body
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


# The content types whose bodies Django parses into request.POST (the only ones looked at).
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _inspected_forms(request: HttpRequest) -> tuple[str, ...]:
    # Under /api/ a multipart body is DRF's to parse (a JSON-only view answers it 415: read
    # here first, it would reach the view as empty data), except at the OAuth endpoints,
    # which are Django views taking forms whose parameters reach Postgres.
    if request.path.startswith("/api/") and not request.path.startswith("/api/v1/oauth/"):
        return ("application/x-www-form-urlencoded",)
    return FORM_CONTENT_TYPES


def nul_parameter(request: HttpRequest) -> str | None:
    """The name of the first query or form parameter whose name or value holds a NUL, if any.

    Cheap on the common path: the raw query string is searched before it is parsed (a NUL
    arrives as "%00", or raw from a lax server), and a body is looked at only for a form POST,
    which the view parses anyway. A JSON body is never read: the API's serializers refuse a
    NUL in it themselves, and reading it here would cost every request its size.
    """
    query = request.META.get("QUERY_STRING", "")
    if "%00" in query or "\x00" in query:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                return name
    if request.method == "POST" and request.content_type in _inspected_forms(request):
        for name, values in request.POST.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                return name
    return None


class NulParameterMiddleware:
    """Answer 400, naming the parameter, for a NUL character in a query or form parameter.

    Postgres refuses a NUL in text (DataError), so a NUL that reaches a query through a list
    filter, a form or a token endpoint was a 500. One check here covers every page, the ones
    not yet written included, instead of one in each filter. Under /api/ the answer is the
    API's problem document (invalid-input, the parameter in `errors`), like the API's own 400s;
    elsewhere a plain-text line, like the language switch's 400. A file's contents are not
    parameters and are not looked at.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = nul_parameter(request)
        if name is None:
            return self.get_response(request)
        # Show a NUL in the name itself as \x00, not as a raw control character.
        shown = name.replace("\x00", "\\x00")
        message = f'parameter "{shown}" contains a NUL character'
        if request.path_info.startswith("/api/"):
            return JsonResponse(
                problem_body(
                    "invalid-input",
                    400,
                    message,
                    # The wording of the API's own serializers for the same mistake.
                    [{"field": name, "message": "Null characters are not allowed."}],
                ),
                status=400,
                content_type=PROBLEM_CONTENT_TYPE,
            )
        return HttpResponseBadRequest(f"{message}\n", content_type="text/plain; charset=utf-8")


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
