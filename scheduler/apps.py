from __future__ import annotations

from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # tasks: the outbox enqueues tasks by name (it must not import them); registering them
        # here means every process that can enqueue, the web app included, knows them, not
        # only the worker, where Celery's autodiscovery would import them.
        # checks: the system checks of `manage.py check` (sites in use without a mailbox).
        from scheduler import checks, tasks  # noqa: F401
