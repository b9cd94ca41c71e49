from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    """Its own app only for the rows the API keeps for itself (idempotency records)."""

    name = "scheduler.api"
    label = "scheduler_api"
    verbose_name = "REST API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from scheduler.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
