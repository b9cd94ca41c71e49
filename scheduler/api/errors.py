"""Every API error in one shape: RFC 9457 problem details (application/problem+json).

    {"type": "/api/v1/problems/invalid-input", "title": "Invalid input", "status": 400,
     "detail": "2 fields are invalid", "errors": [{"field": "local_date", "message": "…"}]}

`type` is a relative URI reference, one per kind of problem (PROBLEM_TYPES below, also in the
OpenAPI description); `errors` names each bad field of the body, the query string
("from") or a header ("If-Match"), and is empty when no single field is at fault. Another
site's object is not-found (404), exactly like one that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from scheduler.engine.types import PlanningError
from scheduler.services import CalendarError, EnrollmentError, VisitConflict
from scheduler.unavailable import (
    API_DETAIL,
    RETRY_AFTER_SECONDS,
    database_away,
    let_go_of_a_read_only_server,
)

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "/api/v1/problems/"

# slug -> (title, when)
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "invalid-input": ("Invalid input", "the body, query string or a header is malformed"),
    "not-authenticated": ("Not authenticated", "no valid token or session"),
    "permission-denied": (
        "Permission denied",
        "you may see this object but your role or your token's scope may not change it",
    ),
    "not-found": ("Not found", "no such object for you (other sites' objects included)"),
    "method-not-allowed": ("Method not allowed", "this endpoint does not take that method"),
    "not-acceptable": ("Not acceptable", "the Accept header asks for a format we do not send"),
    "unsupported-media-type": ("Unsupported media type", "send application/json"),
    "payload-too-large": (
        "Payload too large",
        "the body is larger than the server takes (DATA_UPLOAD_MAX_MEMORY_SIZE)",
    ),
    "precondition-required": ("Precondition required", "a change needs If-Match: <ETag>"),
    "precondition-failed": (
        "Precondition failed",
        "the object changed since you read it (stale If-Match): nothing was written",
    ),
    "preview-outdated": (
        "Preview outdated",
        "the result differs from the preview you confirmed: nothing was written",
    ),
    "idempotency-key-reused": (
        "Idempotency key reused",
        "this Idempotency-Key was used for a different request",
    ),
    "refused": ("Refused", "the request is well formed but a clinical rule refuses it"),
    "slot-taken": (
        "Slot taken",
        "the slot you chose was booked by someone else since you read it: nothing was "
        "written; read the visit's slots again and choose another",
    ),
    "throttled": ("Too many requests", "this credential's request budget is spent for now"),
    "unavailable": (
        "Temporarily unavailable",
        "the database did not answer (a restart or failover): try again after Retry-After "
        "seconds; a change sent may or may not have been written, so read it back or repeat "
        "it with the same Idempotency-Key",
    ),
    "server-error": ("Server error", "an unexpected error; nothing is promised to be written"),
}


# slug -> the status it is answered with (the schema's responses are built from this)
PROBLEM_STATUS: dict[str, int] = {
    "invalid-input": 400,
    "not-authenticated": 401,
    "permission-denied": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "not-acceptable": 406,
    "unsupported-media-type": 415,
    "payload-too-large": 413,
    "precondition-required": 428,
    "precondition-failed": 412,
    "preview-outdated": 409,
    "idempotency-key-reused": 422,
    "refused": 422,
    "slot-taken": 409,
    "throttled": 429,
    "unavailable": 503,
    "server-error": 500,
}


class Problem(exceptions.APIException):
    """An API error with a problem type and, optionally, the fields at fault."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    problem_type = "invalid-input"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, str | None]] | None = None,
        status_code: int | None = None,
        problem_type: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.errors = errors or []
        if status_code is not None:
            self.status_code = status_code
        if problem_type is not None:
            self.problem_type = problem_type


class PreconditionRequired(Problem):
    status_code: int = status.HTTP_428_PRECONDITION_REQUIRED
    problem_type = "precondition-required"


class PreconditionFailed(Problem):
    status_code: int = status.HTTP_412_PRECONDITION_FAILED
    problem_type = "precondition-failed"


class Refused(Problem):
    status_code: int = status.HTTP_422_UNPROCESSABLE_ENTITY
    problem_type = "refused"


class PreviewOutdated(Problem):
    status_code: int = status.HTTP_409_CONFLICT
    problem_type = "preview-outdated"


_DRF_TYPES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.NotAuthenticated, "not-authenticated"),
    (exceptions.AuthenticationFailed, "not-authenticated"),
    (exceptions.PermissionDenied, "permission-denied"),
    (exceptions.NotFound, "not-found"),
    (exceptions.MethodNotAllowed, "method-not-allowed"),
    (exceptions.NotAcceptable, "not-acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported-media-type"),
    (exceptions.Throttled, "throttled"),
    (exceptions.ValidationError, "invalid-input"),
    (exceptions.ParseError, "invalid-input"),
]


def field_errors(detail: Any, prefix: str = "") -> Iterator[dict[str, str | None]]:
    """DRF's nested error detail as a flat list of {"field": "a.b.0", "message": …}."""
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors", "__all__") else str(key)
            path = f"{prefix}.{name}" if prefix and name else prefix or name
            yield from field_errors(value, path)
    elif isinstance(detail, list | tuple):
        if all(not isinstance(item, Mapping | list | tuple) for item in detail):
            for item in detail:
                yield {"field": prefix or None, "message": str(item)}
        else:
            for index, item in enumerate(detail):
                yield from field_errors(item, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield {"field": prefix or None, "message": str(detail)}


def problem_body(
    problem_type: str, status_code: int, detail: str, errors: list[dict[str, str | None]]
) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + problem_type,
        "title": PROBLEM_TYPES[problem_type][0],
        "status": status_code,
        "detail": detail,
        "errors": errors,
    }


def _translate(exc: Exception) -> exceptions.APIException | None:
    """Django's and the services' exceptions as API exceptions; None if not ours to answer."""
    if isinstance(exc, exceptions.APIException):
        return exc
    if isinstance(exc, Http404):
        return exceptions.NotFound("no such object")
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        return Problem(
            f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            problem_type="payload-too-large",
        )
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
        return Problem(
            "the request was refused by a validation rule",
            errors=list(field_errors(detail)),
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
            problem_type="refused",
        )
    if isinstance(exc, VisitConflict):
        return PreconditionFailed(str(exc), errors=[{"field": "If-Match", "message": str(exc)}])
    if isinstance(exc, EnrollmentError):
        return Refused(str(exc), errors=[{"field": None, "message": p} for p in exc.problems])
    if isinstance(exc, PlanningError):
        return Refused(str(exc), errors=[{"field": None, "message": p} for p in exc.problems])
    if isinstance(exc, CalendarError):
        message = str(exc)
        field = exc.field or ("reason" if message.startswith("a reason is required") else None)
        return Refused(message, errors=[{"field": field, "message": message}])
    return None


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error as problem details, none as an HTML page."""
    api_exc = _translate(exc)
    if api_exc is None and database_away(exc):
        # The traceback too (the log filter withholds what the database quotes).
        logger.warning("database unavailable during an API request: answered 503", exc_info=exc)
        set_rollback()
        let_go_of_a_read_only_server(exc)
        return _respond(
            context,
            problem_body("unavailable", 503, API_DETAIL, []),
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if api_exc is None:
        logger.exception("unhandled error in an API view", exc_info=exc)
        set_rollback()
        return _respond(context, problem_body("server-error", 500, "an unexpected error", []), {})
    headers: dict[str, str] = {}
    wait = getattr(api_exc, "wait", None)
    if isinstance(api_exc, exceptions.Throttled) and wait is not None:
        headers["Retry-After"] = str(int(wait) + 1)
    auth_header = getattr(api_exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    if isinstance(api_exc, Problem):
        problem_type, errors = api_exc.problem_type, api_exc.errors
        detail = str(api_exc.detail)
    else:
        problem_type = next(
            (slug for cls, slug in _DRF_TYPES if isinstance(api_exc, cls)), "invalid-input"
        )
        if isinstance(api_exc, exceptions.ValidationError):
            errors = list(field_errors(api_exc.detail))
            detail = f"{len(errors)} field(s) are invalid" if errors else "the input is invalid"
        else:
            errors = []
            detail = str(api_exc.detail)
    set_rollback()
    return _respond(
        context, problem_body(problem_type, api_exc.status_code, detail, errors), headers
    )


def _respond(context: dict[str, Any], body: dict[str, Any], headers: dict[str, str]) -> Response:
    response = Response(body, status=body["status"], headers=headers)
    request = context.get("request")
    renderer = getattr(request, "accepted_renderer", None)
    if renderer is None or getattr(renderer, "format", "json") == "json":
        response.content_type = PROBLEM_CONTENT_TYPE
    return response
