"""A web request waits at most WEB_LOCK_TIMEOUT_SECONDS for a row another transaction holds
(config/startup.py: limit_lock_waits), then answers 503 with Retry-After and writes nothing;
the same request goes through once the row is free.

Real Postgres: the lock is held by a second connection, as a site's amendment or a colleague's
long transaction would hold it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from config.startup import limit_lock_waits, limit_statement_time
from scheduler import unavailable
from scheduler.models import ScheduledVisit
from tests.api.conftest import World

LOCK_TIMEOUT_SECONDS = 1.0
# The holder lets go by itself after this long, so a request that waits (no limit) ends too.
HOLD_AT_MOST_SECONDS = 8.0


def _libpq(settings_dict: dict[str, Any]) -> str:
    """The test database's address as a libpq connection string."""
    return psycopg.conninfo.make_conninfo(
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
        user=settings_dict["USER"] or None,
        password=settings_dict["PASSWORD"] or None,
        dbname=settings_dict["NAME"],
    )


@contextmanager
def opened_as_the_web_app(limit: Callable[[], None], **overrides: float) -> Iterator[None]:
    """This process's database connections opened as the web app opens them (`limit`, one of
    config/startup.py's, under `overrides` of the settings), then as before."""
    options = dict(connection.settings_dict.get("OPTIONS", {}))
    with override_settings(**overrides):
        # The limits set settings.DATABASES["default"], which the test connection uses.
        assert connection.settings_dict is settings.DATABASES["default"]
        limit()
        connection.close()
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict["OPTIONS"] = options


@pytest.fixture
def web_lock_limit() -> Iterator[None]:
    """With a one-second lock limit."""
    with opened_as_the_web_app(limit_lock_waits, WEB_LOCK_TIMEOUT_SECONDS=LOCK_TIMEOUT_SECONDS):
        yield


class RowHolder:
    """A second connection holding FOR UPDATE on one visit row until `release()` (or, at the
    latest, HOLD_AT_MOST_SECONDS)."""

    def __init__(self, visit: ScheduledVisit) -> None:
        self._releasing = threading.Lock()  # the timer's thread and the test's, one at a time
        self.connection = psycopg.connect(_libpq(connection.settings_dict))
        self.connection.execute(
            "SELECT id FROM scheduler_scheduledvisit WHERE id = %s FOR UPDATE", [visit.pk]
        )
        self._timer = threading.Timer(HOLD_AT_MOST_SECONDS, self.release)
        self._timer.start()

    def release(self) -> None:
        self._timer.cancel()
        with self._releasing:
            if not self.connection.closed:
                self.connection.rollback()
                self.connection.close()


def _book(client: Any, visit: ScheduledVisit, key: str) -> Any:
    slot = {"local_date": "2026-02-02", "local_time": "09:30"}
    preview = client.post(f"/api/v1/visits/{visit.pk}/book/preview/", slot, format="json")
    assert preview.status_code == 200, preview.content
    return client.post(
        f"/api/v1/visits/{visit.pk}/book/",
        {**slot, "preview_digest": preview.json()["preview_digest"]},
        format="json",
        HTTP_IF_MATCH=preview.json()["visit_etag"],
        HTTP_IDEMPOTENCY_KEY=key,
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_booking_waiting_on_a_held_row_answers_503_then_goes_through(
    world: World, web_lock_limit: None
) -> None:
    client = world.client("site_system")
    client.raise_request_exception = False
    visit = world.visit("BERLIN-001", "V2")

    person = world.signed_in("coordinator")
    form = {"local_date": "2026-02-02", "local_time": "10:00", "_confirm": "1",
            "version": "1", "reason": ""}  # fmt: skip

    holder = RowHolder(visit)
    try:
        started = time.monotonic()
        refused = _book(client, visit, "book-v2-locked")
        waited = time.monotonic() - started
        page = person.post(reverse("admin:scheduler_scheduledvisit_book", args=[visit.pk]), form)
    finally:
        holder.release()
    visit.refresh_from_db()
    unchanged = (visit.status, visit.version, visit.booked_date)
    retried = _book(client, visit, "book-v2-locked")  # the same key: nothing was stored

    assert (refused.status_code, refused["Retry-After"]) == (503, "30")
    assert refused.json() == {
        "type": "/api/v1/problems/unavailable",
        "title": "Temporarily unavailable",
        "status": 503,
        "detail": unavailable.API_DETAIL,
        "errors": [],
    }
    # The coordinator booking the same visit in the admin: the page that says to try again.
    assert (page.status_code, page["Retry-After"]) == (503, "30")
    assert f"<p>{unavailable.PAGE_TEXT}</p>" in page.content.decode()
    # Refused after the limit, long before the holder would have let go.
    assert LOCK_TIMEOUT_SECONDS <= waited < HOLD_AT_MOST_SECONDS - 2
    assert unchanged == (ScheduledVisit.Status.PLANNED, 1, None)
    assert retried.status_code == 200, retried.content
    assert "Idempotent-Replayed" not in retried
    visit.refresh_from_db()
    assert (visit.status, visit.version, str(visit.booked_date)) == ("booked", 2, "2026-02-02")


SHOWN = ("lock_timeout", "deadlock_timeout", "statement_timeout")


def _settings_in(module: str, **env: str) -> dict[str, str]:
    """SHOWN as a connection a fresh process opens after importing `module` sees them."""
    script = (
        f"import {module}, django; django.setup(); from django.db import connection; "
        "cursor = connection.cursor(); "
        f"print(*[cursor.execute('SHOW ' + name).fetchone()[0] for name in {SHOWN!r}])"
    )
    environment = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",  # the suite's base database, which need not exist (CI's does not)
            "REDIS_URL",
            "CACHE_REDIS_URL",
            "WEB_LOCK_TIMEOUT_SECONDS",
            "WEB_STATEMENT_TIMEOUT_SECONDS",
            "PGOPTIONS",
        )
    }
    environment |= {"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true", **env}
    # The test database, which this test's connection made.
    environment["DATABASE_URL"] = env.get("DATABASE_URL", "{url}").format(url=_url())
    output = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, check=False
    )
    assert output.returncode == 0, output.stderr.decode()[-3000:]
    return dict(zip(SHOWN, output.stdout.decode().strip().splitlines()[-1].split(), strict=True))


def _url() -> str:
    database = connection.settings_dict
    return (
        f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )


def _server_defaults() -> dict[str, str]:
    with psycopg.connect(_libpq(connection.settings_dict)) as plain:
        return {name: plain.execute(f"SHOW {name}").fetchone()[0] for name in SHOWN}  # type: ignore[index]


@pytest.mark.integration
@pytest.mark.django_db
def test_the_web_app_limits_lock_waits_and_statements_and_leaves_every_other_setting_be() -> None:
    server = _server_defaults()
    # The test's premise: the server sets no limit.
    assert (server["lock_timeout"], server["statement_timeout"]) == ("0", "0")
    web = _settings_in("config.wsgi")
    assert web == {**server, "lock_timeout": "10s", "statement_timeout": "30s"}
    assert _settings_in("config.wsgi", WEB_LOCK_TIMEOUT_SECONDS="2.5")["lock_timeout"] == "2500ms"
    assert _settings_in("config.wsgi", WEB_LOCK_TIMEOUT_SECONDS="0") == {
        **server,
        "statement_timeout": "30s",
    }
    assert _settings_in("config.wsgi", WEB_STATEMENT_TIMEOUT_SECONDS="0.75") == {
        **server,
        "lock_timeout": "10s",
        "statement_timeout": "750ms",
    }
    assert (
        _settings_in("config.wsgi", WEB_LOCK_TIMEOUT_SECONDS="0", WEB_STATEMENT_TIMEOUT_SECONDS="0")
        == server
    )
    # An operator's own lock_timeout wins, however it is spelled; their other settings stay.
    for given in ("-c%20lock_timeout%3D3000", "-c%20LOCK_TIMEOUT%3D3s", "--lock-timeout%3D3s"):
        url = f"{{url}}?options={given}"
        assert _settings_in("config.wsgi", DATABASE_URL=url)["lock_timeout"] == "3s", given
    deadlock = _settings_in("config.wsgi", DATABASE_URL="{url}?options=-c%20deadlock_timeout%3D2s")
    assert (deadlock["lock_timeout"], deadlock["deadlock_timeout"]) == ("10s", "2s")
    assert deadlock["statement_timeout"] == "30s"
    from_environment = _settings_in("config.wsgi", PGOPTIONS="-c statement_timeout=5000")
    assert (from_environment["lock_timeout"], from_environment["statement_timeout"]) == (
        "10s",
        "5s",
    )
    # Celery workers and beat, and migrations, wait for their locks: they import the
    # settings and the Celery app, never config.wsgi (the limit is set there and only there).
    assert _settings_in("config.celery") == server
    assert _settings_in("django.core.management") == server


# ----------------------------------------------------------------------------------------
# A statement that runs too long: cancelled at WEB_STATEMENT_TIMEOUT_SECONDS, 503, nothing
# written. The slow statement is real: a trigger makes each update of a visit take five seconds.

STATEMENT_TIMEOUT_SECONDS = 0.5
SLOW_SECONDS = 5.0


@pytest.fixture
def web_statement_limit() -> Iterator[None]:
    with opened_as_the_web_app(
        limit_statement_time, WEB_STATEMENT_TIMEOUT_SECONDS=STATEMENT_TIMEOUT_SECONDS
    ):
        yield


class SlowVisitUpdates:
    """Every UPDATE of a visit row takes SLOW_SECONDS until `remove()`."""

    def __init__(self) -> None:
        self.connection = psycopg.connect(_libpq(connection.settings_dict), autocommit=True)
        self.connection.execute(
            "CREATE FUNCTION test_slow_update() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({SLOW_SECONDS}); RETURN NEW; END $$"
        )
        self.connection.execute(
            "CREATE TRIGGER test_slow_update BEFORE UPDATE ON scheduler_scheduledvisit "
            "FOR EACH ROW EXECUTE FUNCTION test_slow_update()"
        )

    def remove(self) -> None:
        self.connection.execute(
            "DROP TRIGGER IF EXISTS test_slow_update ON scheduler_scheduledvisit"
        )
        self.connection.execute("DROP FUNCTION IF EXISTS test_slow_update()")
        self.connection.close()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_booking_whose_statement_runs_too_long_answers_503_then_goes_through(
    world: World, web_statement_limit: None
) -> None:
    client = world.client("site_system")
    client.raise_request_exception = False
    visit = world.visit("BERLIN-001", "V2")

    slow = SlowVisitUpdates()
    try:
        started = time.monotonic()
        refused = _book(client, visit, "book-v2-slow")
        took = time.monotonic() - started
    finally:
        slow.remove()
    visit.refresh_from_db()
    unchanged = (visit.status, visit.version, visit.booked_date)
    retried = _book(client, visit, "book-v2-slow")  # the same key: nothing was stored

    assert (refused.status_code, refused["Retry-After"]) == (503, "30")
    assert refused.json()["type"] == "/api/v1/problems/unavailable"
    # Cancelled at the limit, not after the slow statement ran its course.
    assert took < SLOW_SECONDS
    assert unchanged == (ScheduledVisit.Status.PLANNED, 1, None)
    assert retried.status_code == 200, retried.content
    visit.refresh_from_db()
    assert (visit.status, visit.version, str(visit.booked_date)) == ("booked", 2, "2026-02-02")
