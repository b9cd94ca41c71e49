from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scheduler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def filter_worker_log_handlers(logger: object, **kwargs: object) -> None:
    """Give the handlers a worker sets up (console or --logfile) the filters every Django
    handler has: no feed token, no database error text quoting a row."""
    from config.logging import RedactFeedTokens, ScrubDatabaseErrors

    for handler in getattr(logger, "handlers", []):
        if not any(isinstance(f, ScrubDatabaseErrors) for f in handler.filters):
            handler.addFilter(ScrubDatabaseErrors())
            handler.addFilter(RedactFeedTokens())


if app.conf.broker_url == "filesystem://":
    # The laptop broker is a pair of folders; anything that enqueues (a management command,
    # a benchmark) must find them even before `make run` created them.
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = (app.conf.broker_transport_options or {}).get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
