from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.contrib.admin import AdminSite
from django.contrib.admin import apps as admin_apps
from django.http import HttpRequest
from django.template.response import TemplateResponse


class SchedulerConfig(AppConfig):
    name = "scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # tasks: the outbox enqueues tasks by name (it must not import them); registering them
        # here means every process that can enqueue, the web app included, knows them, not
        # only the worker, where Celery's autodiscovery would import them.
        # checks: the system checks of `manage.py check` (sites in use without a mailbox).
        # The security audit's receivers: sign-ins, sign-outs, lockouts, permission and
        # membership changes (scheduler/audittrail.py).
        # arrayin: `__in` with a list as one array parameter on Postgres (see there).
        from scheduler import arrayin, audittrail, checks, tasks  # noqa: F401

        arrayin.register()
        audittrail.connect()


class WorkspaceAdminSite(AdminSite):
    """Django's admin site whose index is the coordinator's start page for clinical roles
    (scheduler/admin/workspace.py); everyone else keeps Django's index."""

    def index(self, request: HttpRequest, extra_context: Any = None) -> TemplateResponse:
        # Imported here: this module is loaded before the models are.
        from scheduler.admin.workspace import start_page

        page = start_page(self, request, extra_context)
        return page if page is not None else super().index(request, extra_context)

    def get_urls(self) -> list[Any]:
        # A site's bookings by resource (scheduler/admin/sitebookings.py): a page of a site's
        # calendar rather than of one model, so the site wires it.
        from scheduler.admin.sitebookings import site_bookings_urls

        return [*site_bookings_urls(self), *super().get_urls()]


class SchedulerAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin` with `WorkspaceAdminSite` as its site (INSTALLED_APPS)."""

    default = False  # "scheduler" alone still means SchedulerConfig

    default_site = "scheduler.apps.WorkspaceAdminSite"
