"""Middleware that must run before Django looks at the request's Host."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from scheduler.views import healthz

HEALTH_PATH = "/healthz"


class HealthCheckMiddleware:
    """Answer `/healthz` before host validation, redirects and sessions.

    Container and load-balancer probes call the app by IP (docker-compose's check calls
    127.0.0.1, Kubernetes probes the pod's address), and no deployment lists those in
    ALLOWED_HOSTS, so through the normal stack every probe would be a 400. The endpoint is
    exempt by design: it reads nothing from the request, takes GET only, and says no more than
    "the database answers" and the heartbeat's age. It sits first, so an HTTPS redirect in
    front of everything else does not turn a plain-HTTP probe into a 301.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == HEALTH_PATH and request.method in ("GET", "HEAD"):
            return healthz(request)
        return self.get_response(request)
