from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    task_failure,
    task_postrun,
    task_prerun,
    worker_init,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scheduler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Celery's Django fixup closes every database connection before and after every task unless
# this is set, whatever CONN_MAX_AGE says: a new Postgres connection (a backend forked and
# authenticated) for each task, which cost more than sending a reminder. Connections are kept
# instead the way Django keeps them across requests (`keep_database_connections` below); the
# fixup still closes them every this many tasks.
app.conf.update(CELERY_DB_REUSE_MAX=10_000)


@task_prerun.connect
@task_postrun.connect
def keep_database_connections(task: object = None, **kwargs: object) -> None:
    """Around each task, as around each request: close a connection older than CONN_MAX_AGE
    (0, the development default: every task's), in error, or unusable, and check the
    others' health before their next use (CONN_HEALTH_CHECKS). Not for a task run eagerly,
    inside its caller's transaction (tests)."""
    if getattr(getattr(task, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@task_failure.connect
def let_go_of_a_read_only_server(exception: BaseException | None = None, **kwargs: object) -> None:
    """A task that met a server taking no writes (a failover's old primary) closes its
    connection at task_postrun (above), so the next task connects anew: Django keeps a
    connection that still answers for the rest of CONN_MAX_AGE, and every task on it would
    fail the same way until then."""
    from scheduler.unavailable import let_go_of_a_read_only_server as let_go

    let_go(exception)


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


@worker_init.connect
@beat_init.connect
def refuse_the_development_secret_key(**kwargs: object) -> None:
    """A worker or beat stops, as the web app does (config/startup.py), when it would run
    outside DEBUG with the development key: unless WEBHOOK_SECRET_KEYS is set, the key
    derives the one that encrypts webhook signing secrets (scheduler/outbox/webhooks.py), and
    a deployment that forgot its key must not half-run."""
    from django.core.exceptions import ImproperlyConfigured

    from config.startup import require_secret_key

    try:
        require_secret_key()
    except ImproperlyConfigured as refused:
        # Celery logs an Exception a signal receiver raises and carries on; SystemExit is not
        # an Exception, so the process stops with the message on stderr.
        raise SystemExit(f"refusing to start: {refused}") from refused


if app.conf.broker_url == "filesystem://":
    # The laptop broker is a pair of folders; anything that enqueues (a management command,
    # a benchmark) must find them even before `make run` created them.
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = (app.conf.broker_transport_options or {}).get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
