from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AppendOnlyConfig(AppConfig):
    """Listed before `simple_history` in INSTALLED_APPS: its management commands replace the
    package's clean-up commands (see the package's docstring)."""

    name = "scheduler.appendonly"
    label = "appendonly"
    verbose_name = "Append-only audit trail"

    def ready(self) -> None:
        from scheduler.appendonly import checks, grants, triggers  # noqa: F401 - registers the check

        post_migrate.connect(triggers.install_after_migrate, dispatch_uid="appendonly-triggers")
        post_migrate.connect(grants.grant_after_migrate, dispatch_uid="appendonly-app-role-grants")
