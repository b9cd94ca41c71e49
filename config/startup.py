"""What the app checks before it serves anyone: the web app (gunicorn, runserver:
config/wsgi.py), Celery workers and beat (their worker_init and beat_init signals in
config/celery.py)."""

from __future__ import annotations

import os
import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def require_secret_key() -> None:
    """Refuse to serve with the development key outside development.

    config/settings.py gives the laptop, the test suite and the linters a fixed development
    key so that they need no environment; the web app must have its own (SECRET_KEY or
    SECRET_KEY_FILE) unless DEBUG=true."""
    if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY and not settings.DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set SECRET_KEY (or SECRET_KEY_FILE, a file holding it) to "
            "a long random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`; only DEBUG=true "
            "runs with the development key."
        )


def limit_lock_waits() -> None:
    """Make this process's requests wait at most WEB_LOCK_TIMEOUT_SECONDS for each row or table
    lock they need (Postgres's lock_timeout, given when each connection opens: no extra round
    trip).

    Without a limit, a request that needs a row another transaction holds (a site's amendment
    re-planning every participant, a long migration) waits for as long as that transaction
    runs, and holds a gunicorn thread all that time: a few such requests and the process
    answers nobody. With it, Postgres refuses the statement (SQLSTATE 55P03), the request's
    transaction rolls back, and the person or site system gets the 503 with Retry-After that
    says to try again (config/errors.py, scheduler/unavailable.py). Only the web app calls
    this (config/wsgi.py): Celery workers and migrations hold no person's request, and are
    left to wait. A lock_timeout given in DATABASE_URL's `options` (or in PGOPTIONS) wins.
    """
    _web_connection_setting("lock_timeout", settings.WEB_LOCK_TIMEOUT_SECONDS)


def limit_statement_time() -> None:
    """Make each statement of this process's requests run at most
    WEB_STATEMENT_TIMEOUT_SECONDS (Postgres's statement_timeout, given like the lock limit).

    A statement that runs away (a filter nobody foresaw over a trial's whole history, a plan
    gone wrong after a migration) would otherwise hold its gunicorn thread, its connection and
    Postgres's CPU for as long as it runs, after the person has given up. With the limit,
    Postgres cancels it (SQLSTATE 57014), the transaction rolls back and the request answers
    503 with Retry-After, nothing written. The limit is per statement, not per request: a
    streamed export or feed reads in chunks, each its own statement. Web only; a
    statement_timeout given in DATABASE_URL's `options` (or in PGOPTIONS) wins."""
    _web_connection_setting("statement_timeout", settings.WEB_STATEMENT_TIMEOUT_SECONDS)


def _web_connection_setting(name: str, seconds: float) -> None:
    """Open the web app's Postgres connections with the server setting `name` at `seconds`
    (in milliseconds), unless the connection's options already give one. 0: no limit."""
    database = settings.DATABASES["default"]
    if seconds <= 0 or database["ENGINE"] not in POSTGRES_ENGINES:
        return  # SQLite waits for its own busy timeout, then answers 503 the same way
    options = database.setdefault("OPTIONS", {})
    # libpq reads PGOPTIONS only when the connection is given no `options`: start from it, or
    # setting ours would drop what the environment set.
    given = options.get("options", os.environ.get("PGOPTIONS", ""))
    named = {found.lower().replace("-", "_") for found in _SERVER_SETTING.findall(given)}
    if name not in named:
        options["options"] = f"{given} -c {name}={round(seconds * 1000)}".strip()


POSTGRES_ENGINES = frozenset(
    {"django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"}
)
# A server setting in libpq's `options`: `-c name=value`, `-cname=value` or `--name=value`
# (names are case-insensitive; a long option's dashes stand for underscores).
_SERVER_SETTING = re.compile(r"(?:^|\s)(?:-c\s*|--)([A-Za-z0-9_.-]+?)\s*=")
