"""How the OpenAPI schema describes our authentication (drf-spectacular extensions).

Imported by the API's AppConfig.ready(), so the extension is registered before any schema is
generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
                        "type": "string",
                        "nullable": True,
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
    return {
        "description": kinds,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def operation_problems(
    operation: dict[str, Any], method: str, schemas: dict[str, Any]
) -> list[int]:
    """The 4xx statuses one operation can answer, read off what it takes.

    Everyone can meet 401 (no valid token), 403 (a token without the scope, or a role that
    only reads), 406 (an Accept we do not serve) and 429 (throttled). Parameters or a body
    can be malformed (400); a path id or a cursor can name nothing the caller sees (404). A
    body can be of another media type (415) or refused by a clinical rule (422, which is also
    an Idempotency-Key reused with another body). If-Match brings 428 and 412, and a confirm
    that carries a preview's digest 409 when the result would differ from the preview.
    """
    parameters = operation.get("parameters", [])
    names = {p["name"] for p in parameters}
    statuses = {401, 403, 406, 429}
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
    if "preview_digest" in body_schema.get("properties", {}):
        statuses.add(409)
    return sorted(statuses)


def problem_responses(result: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the Problem component and each 4xx response."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            for status_code in operation_problems(operation, method, schemas):
                operation["responses"].setdefault(str(status_code), _problem_response(status_code))
    return result
