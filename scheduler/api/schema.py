"""How the OpenAPI schema describes our authentication (drf-spectacular extensions), the
problem details every operation can answer, and the webhooks we send (OpenAPI 3.1's
`webhooks`: one entry per event type, its payload and its signature headers).

Imported by the API's AppConfig.ready(), so the extension is registered before any schema is
generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema
from rest_framework import serializers

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.outbox.webhooks import VISIT_EVENTS
from scheduler.webhooks import EVENT_TYPES


class SiteSystemScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "scheduler.api.auth.SiteSystemAuthentication"
    name = "siteSystem"

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[str]]:
        read = auto_schema.method in ("GET", "HEAD", "OPTIONS")
        return {self.name: ["read" if read else "write"]}

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "oauth2",
            "description": "OAuth2 client credentials: POST client_id and client_secret to "
            '/api/v1/oauth/token/ (grant_type=client_credentials, scope="read write") and send '
            "the access token as `Authorization: Bearer …`.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": "/api/v1/oauth/token/",
                    "scopes": {
                        "read": "Read trials, sites, participants and calendars",
                        "write": "Register and enroll participants, book and record visits",
                    },
                }
            },
        }


# ----------------------------------------------------------------------------------------
# Error responses: every operation declares the problem details it can answer with, so the
# schema describes what the API really says (Schemathesis holds us to it).

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` names each field at fault.",
    "required": ["type", "title", "status", "detail", "errors"],
    "properties": {
        "type": {"type": "string", "description": "/api/v1/problems/<slug>, one per kind."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {
                    "field": {
                        "type": ["string", "null"],
                        "description": "A body field (a.b.0), a query parameter or a header; "
                        "null when no single field is at fault.",
                    },
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def _problem_slugs(status_code: int) -> list[str]:
    from scheduler.api.errors import PROBLEM_STATUS

    return [slug for slug, code in PROBLEM_STATUS.items() if code == status_code]


def _problem_response(status_code: int) -> dict[str, Any]:
    from scheduler.api.errors import PROBLEM_TYPES

    kinds = "; ".join(f"`{slug}`: {PROBLEM_TYPES[slug][1]}" for slug in _problem_slugs(status_code))
    response: dict[str, Any] = {
        "description": kinds,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if status_code in RETRY_AFTER_STATUSES:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


# The answers that say when to try again.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def operation_problems(
    operation: dict[str, Any], method: str, schemas: dict[str, Any]
) -> list[int]:
    """The error statuses one operation can answer, read off what it takes.

    Everyone can meet 401 (no valid token), 403 (a token without the scope, or a role that
    only reads), 406 (an Accept we do not serve), 429 (throttled) and 503 (the database is
    away for a moment: try again after Retry-After). Parameters or a body
    can be malformed (400); a path id or a cursor can name nothing the caller sees (404). A
    body can be of another media type (415) or refused by a clinical rule (422, which is also
    an Idempotency-Key reused with another body). If-Match brings 428 and 412, a confirm
    that carries a preview's digest 409 when the result would differ from the preview, and a
    booking by `slot` 409 when someone else booked the slot first.
    """
    parameters = operation.get("parameters", [])
    names = {p["name"] for p in parameters}
    statuses = {401, 403, 406, 429, 503}
    if any(p["in"] != "path" for p in parameters) or "requestBody" in operation:
        statuses.add(400)
    if any(p["in"] == "path" for p in parameters) or "cursor" in names:
        statuses.add(404)
    if method == "post":
        statuses |= {400, 415, 422}
    if_match = next((p for p in parameters if p["name"] == "If-Match"), None)
    if if_match is not None:
        statuses |= {412, 428} if if_match.get("required") else {412}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = body.get("schema", {}).get("$ref", "")
    body_schema = schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else body.get("schema", {})
    if {"preview_digest", "slot"} & set(body_schema.get("properties", {})):
        statuses.add(409)
    return sorted(statuses)


def problem_responses(result: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the Problem component and each error response."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            for status_code in operation_problems(operation, method, schemas):
                operation["responses"].setdefault(str(status_code), _problem_response(status_code))
    return result


# ----------------------------------------------------------------------------------------
# Webhooks: what a site system's receiver gets (SPECTACULAR_SETTINGS["WEBHOOKS"] names each).
# The payloads mirror scheduler.outbox.webhooks.event_payload: blind-safe by construction.


class WebhookParticipantData(serializers.Serializer[Any]):
    id = serializers.IntegerField(help_text="The participant's API id.")
    study_id = serializers.CharField()
    status = serializers.ChoiceField(choices=Participant.Status.choices)
    enrolled_at = serializers.DateTimeField(
        allow_null=True, help_text="When the enrollment was recorded, UTC."
    )
    enrolled_on = serializers.DateField(
        allow_null=True,
        help_text="The enrollment's date at the site (null for participants enrolled before "
        "it was recorded).",
    )
    ended_on = serializers.DateField(allow_null=True, help_text="Withdrawn or completed on.")


class WebhookVisitData(serializers.Serializer[Any]):
    id = serializers.IntegerField(help_text="The visit's API id.")
    code = serializers.CharField()
    status = serializers.ChoiceField(choices=ScheduledVisit.Status.choices)
    target_date = serializers.DateField(allow_null=True)
    window_start = serializers.DateField(allow_null=True)
    window_end = serializers.DateField(allow_null=True)
    booked_start = serializers.DateTimeField(allow_null=True, help_text="The booked instant, UTC.")
    booked_date = serializers.DateField(allow_null=True, help_text="The site-local day booked.")
    actual_date = serializers.DateField(allow_null=True)
    version = serializers.IntegerField(
        help_text="The visit's version: two moves of one visit are two events."
    )


# The signature headers of every delivery. drf-spectacular's webhooks take no parameters, so
# the `webhook_headers` postprocessing hook adds them to each webhook's operation.
WEBHOOK_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "The message id (msg_…): the same on every retry of one event; "
        "de-duplicate by it.",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "integer"},
        "description": "This attempt's time, in seconds since 1970 (UTC); refuse old ones.",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": '`v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">` '
        "under the subscription's secret (Standard Webhooks). For a grace period after the "
        "secret is rotated (24 hours unless the deployment says otherwise), two "
        "space-separated signatures, under the new secret first and the old one: accept the "
        "delivery if any one verifies.",
    },
]


def webhook_headers(result: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the signature headers on each webhook."""
    for path_item in result.get("webhooks", {}).values():
        for operation in path_item.values():
            operation["parameters"] = [dict(header) for header in WEBHOOK_HEADERS]
    return result


_EVENT_DESCRIPTIONS = {
    "visit.booked": "A visit was booked at a site-local date and time.",
    "visit.moved": "A booked visit was moved, or its planned date changed with the calendar.",
    "visit.done": "A visit was recorded as done.",
    "visit.missed": "A visit was recorded as missed.",
    "visit.cancelled": "A visit was cancelled.",
    "participant.enrolled": "A participant was enrolled; the calendar is planned.",
    "participant.withdrawn": "A participant withdrew; later visits are cancelled.",
}


def _component_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace(".", "_").split("_"))


def webhook_event_serializer(event_type: str) -> type[serializers.Serializer[Any]]:
    """The body of one event type as a serializer, for the schema only."""
    name = _component_name(event_type)
    data_fields: dict[str, Any] = {
        "trial": serializers.CharField(help_text="The trial's code."),
        "site": serializers.CharField(help_text="The site's code."),
        "participant": WebhookParticipantData(),
    }
    if event_type in VISIT_EVENTS:
        data_fields["visit"] = WebhookVisitData()
    data = type(f"{name}EventData", (serializers.Serializer,), data_fields)
    return type(
        f"{name}Event",
        (serializers.Serializer,),
        {
            "type": serializers.ChoiceField(
                choices=[(event_type, event_type)], help_text="The event type."
            ),
            "timestamp": serializers.DateTimeField(help_text="When it happened, UTC."),
            "data": data(),
        },
    )


def webhook_definition(event_type: str) -> OpenApiWebhook:
    return OpenApiWebhook(
        name=event_type,
        decorator=extend_schema(
            summary=event_type,
            description=f"{_EVENT_DESCRIPTIONS.get(event_type, event_type)} POSTed to each "
            "active subscription of the site system to this event at the participant's site, "
            "through the outbox: retried with backoff on a timeout, a connection error, 408, "
            "429 or 5xx (not before a Retry-After the answer gives, up to a day); any other "
            "answer is final. Never an arm, contact details or free text.",
            request=webhook_event_serializer(event_type),
            responses={
                200: OpenApiResponse(description="Received (any 2xx)."),
                500: OpenApiResponse(description="Not received: sent again later."),
            },
        ),
    )


# One module attribute per event type, for SPECTACULAR_SETTINGS["WEBHOOKS"] (import strings).
WEBHOOKS: dict[str, OpenApiWebhook] = {e: webhook_definition(e) for e in EVENT_TYPES}
for _event_type, _webhook in WEBHOOKS.items():
    globals()[f"webhook_{_event_type.replace('.', '_')}"] = _webhook
