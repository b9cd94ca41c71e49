"""The project's handler500: a database that is away answers 503 with Retry-After (a problem
document under /api/, a plain page elsewhere); anything else is Django's own 500.

Django calls the handler inside the `except` block of the failed request, so the exception is
`sys.exc_info()`. The 503 page is rendered without the request's context: its context
processors would read the user and the session, from the database that is away.
"""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils import translation
from django.views import defaults

from scheduler.api.errors import PROBLEM_CONTENT_TYPE, problem_body
from scheduler.unavailable import (
    API_DETAIL,
    PAGE_TEXT,
    PAGE_TITLE,
    RETRY_AFTER_SECONDS,
    database_away,
    let_go_of_a_read_only_server,
)


def server_error(request: HttpRequest) -> HttpResponse:
    error = sys.exc_info()[1]
    if not database_away(error):
        return defaults.server_error(request)
    let_go_of_a_read_only_server(error)
    response: HttpResponse
    if request.path_info.startswith("/api/"):
        response = JsonResponse(
            problem_body("unavailable", 503, API_DETAIL, []),
            status=503,
            content_type=PROBLEM_CONTENT_TYPE,
        )
    else:
        page = render_to_string(
            "unavailable.html",
            {
                "title": PAGE_TITLE,
                "text": PAGE_TEXT,
                "LANGUAGE_CODE": translation.get_language(),
            },
        )
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
