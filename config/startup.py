"""What the app checks before it serves anyone: the web app (gunicorn, runserver:
config/wsgi.py), Celery workers and beat (their worker_init and beat_init signals in
config/celery.py)."""

from __future__ import annotations

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
