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
