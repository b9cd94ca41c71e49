"""Postgres that takes a connection and never answers (a failover behind a proxy, a network
partition): a new connection gives up after DATABASE_CONNECT_TIMEOUT seconds instead of
waiting for as long as the silent server keeps it open, so a request answers 503 in seconds
(tests/integration/test_faults.py shows the 503) and a gunicorn thread is not held for good.

The options are the ones config/settings.py computes for a deployment (DATABASE_URL on
Postgres), handed to psycopg the way Django's backend hands them over."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.outages import Blackhole, configured

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
