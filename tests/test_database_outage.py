"""Postgres that takes a connection and never answers (a failover behind a proxy, a network
partition): a new connection gives up after DATABASE_CONNECT_TIMEOUT seconds instead of
waiting for as long as the silent server keeps it open, so a request answers 503 in seconds
(tests/integration/test_faults.py shows the 503) and a gunicorn thread is not held for good.

The options are the ones config/settings.py computes for a deployment (DATABASE_URL on
Postgres), handed to psycopg the way Django's backend hands them over."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import django.db as django_db
import psycopg
import pytest
from django.db import connection, transaction

from scheduler.unavailable import database_away
from tests.outages import Blackhole, closed_port, configured

POSTGRES = {"DATABASE_URL": "postgres://scheduler:pw@db.internal:5432/scheduler"}


def test_a_deployment_gives_up_on_a_silent_database_after_five_seconds() -> None:
    options = configured("DATABASES", **POSTGRES)["default"]["OPTIONS"]

    assert options == {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    shorter = configured("DATABASES", **POSTGRES, DATABASE_CONNECT_TIMEOUT="2")
    assert shorter["default"]["OPTIONS"]["connect_timeout"] == 2
    # What the URL says wins.
    in_url = {"DATABASE_URL": POSTGRES["DATABASE_URL"] + "?connect_timeout=15&sslmode=require"}
    assert configured("DATABASES", **in_url)["default"]["OPTIONS"] == {
        **options,
        "connect_timeout": 15,
        "sslmode": "require",
    }


def test_a_connection_to_a_silent_database_fails_within_its_timeout() -> None:
    # libpq counts at least 2 s.
    options = configured("DATABASES", **POSTGRES, DATABASE_CONNECT_TIMEOUT="2")["default"][
        "OPTIONS"
    ]
    # The silent server hangs up after 15 s: without the timeout the connection waits so long.
    with Blackhole(hold_seconds=15) as silent:
        started = time.perf_counter()
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(
                host="127.0.0.1", port=silent.port, user="scheduler", dbname="scheduler", **options
            )
        took = time.perf_counter() - started

    assert silent.accepted == 1
    assert type(refused.value) is psycopg.errors.ConnectionTimeout
    assert took < 6


# ----------------------------------------------------------------------------------------
# Which database errors are "away for now" (503, try again) and which are a 500


def as_django(driver_error: BaseException) -> BaseException:
    """The error as Django raises it: its own OperationalError, the driver's as the cause."""
    wrapped = django_db.OperationalError(*driver_error.args)
    wrapped.__cause__ = driver_error
    return wrapped


def sqlite_error(locked: bool, tmp_path: Path) -> sqlite3.OperationalError:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    if locked:
        holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("INSERT INTO t VALUES (1)" if locked else "SELECT * FROM missing")
    except sqlite3.OperationalError as error:
        return error
    finally:
        other.close()
        holder.close()
    raise AssertionError("no error")


def test_a_refused_or_silent_server_a_closed_connection_and_a_busy_sqlite_are_away(
    tmp_path: Path,
) -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=closed_port(), user="x", dbname="x")

    assert database_away(as_django(refused.value)) is True
    assert database_away(django_db.InterfaceError("connection already closed")) is True
    assert database_away(as_django(sqlite_error(locked=True, tmp_path=tmp_path))) is True


def test_errors_that_do_not_pass_by_themselves_are_not_away(tmp_path: Path) -> None:
    missing_table = as_django(sqlite_error(locked=False, tmp_path=tmp_path / "x"))
    try:
        try:
            raise as_django(sqlite_error(locked=True, tmp_path=tmp_path / "y"))
        except django_db.OperationalError:
            raise KeyError("raised while handling it") from None
    except KeyError as other:
        while_handling = other

    assert database_away(missing_table) is False
    assert database_away(while_handling) is False  # another error, raised while handling one
    assert database_away(ValueError("not a database error")) is False
    assert database_away(None) is False


@pytest.mark.integration
@pytest.mark.django_db
def test_postgres_timeouts_are_away_and_program_limits_are_not() -> None:
    """Errors as Django raises them, from the test database."""
    arguments = ", ".join(["1"] * 101)
    with (
        pytest.raises(django_db.OperationalError) as cancelled,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(1)")
    with (
        pytest.raises(django_db.OperationalError) as too_many,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"SELECT concat({arguments})")  # noqa: S608 - a fixed statement

    assert cancelled.value.__cause__.diag.sqlstate == "57014"  # type: ignore[union-attr]
    assert database_away(cancelled.value) is True
    assert too_many.value.__cause__.diag.sqlstate == "54023"  # type: ignore[union-attr]
    assert database_away(too_many.value) is False
