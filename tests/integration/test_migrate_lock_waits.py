"""`manage.py migrate` waits at most MIGRATION_LOCK_TIMEOUT_SECONDS for each lock, rolls the
migration back and tries again (scheduler/management/commands/migrate.py), so a long
transaction on a table does not turn an ALTER queued behind it into an outage of that table.

Real Postgres, a database of its own migrated to scheduler 0012; scheduler 0013 alters six
history tables (ACCESS EXCLUSIVE each), and a second connection holds one of them the way a
long-running amendment would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from scheduler.management.commands.migrate import unlimited

ROOT = Path(__file__).resolve().parents[2]
HELD_TABLE = "scheduler_historicalscheduledvisit"
# 0013's first table, altered before it reaches the held one.
FIRST_TABLE = "scheduler_historicalcalendarfeed"


def _conninfo(name: str) -> str:
    database = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        user=database["USER"] or "postgres",
        password=database["PASSWORD"] or None,
        dbname=name,
    )


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own beside the test database, dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_migrate_locks"[:63]
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Migrate:
    """`manage.py migrate` in a process of its own against `name`, its stderr read as it
    comes."""

    def __init__(self, name: str, *args: str, **env: str) -> None:
        database = connection.settings_dict
        url = (
            f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{name}"
        )
        environment = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "PGOPTIONS") and not k.startswith("MIGRATION_LOCK_")
        }
        environment |= {"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true"}
        environment |= {"DATABASE_URL": url, **env}
        self.process = subprocess.Popen(  # noqa: S603 - our own manage.py, fixed arguments
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.errors: list[str] = []
        self.output: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stderr, self.errors),
                                  (self.process.stdout, self.output))
        ]  # fmt: skip
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for_error_line(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.errors):
            assert time.monotonic() < deadline, f"no {text!r} in {self.errors}"
            assert self.process.poll() is None, f"exited: {self.errors}"
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Its exit code, stdout and stderr; a migrate still waiting after `timeout` is
        stopped and fails the test."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"migrate still waiting after {timeout} s: {self.errors}")
        finally:
            for reader in self._readers:
                reader.join(timeout=5)
        return self.process.returncode, "".join(self.output), "".join(self.errors)


def _state(conn: psycopg.Connection[Any]) -> tuple[list[str], str, str]:
    """The scheduler migrations recorded, and the reason column's type in the first and the
    held table."""
    applied = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM django_migrations WHERE app = 'scheduler' ORDER BY name"
        )
    ]
    types = dict(
        conn.execute(  # type: ignore[arg-type]
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE column_name = 'history_change_reason' AND table_name = ANY(%s)",
            [[FIRST_TABLE, HELD_TABLE]],
        ).fetchall()
    )
    return applied, types[FIRST_TABLE], types[HELD_TABLE]


def _waiting_locks(conn: psycopg.Connection[Any], name: str) -> int:
    return conn.execute(  # type: ignore[no-any-return, index]
        "SELECT count(*) FROM pg_locks JOIN pg_database ON pg_database.oid = pg_locks.database "
        "WHERE NOT granted AND datname = %s",
        [name],
    ).fetchone()[0]


@pytest.mark.integration
@pytest.mark.django_db
def test_migrate_gives_way_to_a_long_transaction_then_applies_or_says_what_waited(
    database: str,
) -> None:
    setup = Migrate(database, "scheduler", "0012", "-v", "0")
    assert setup.finish()[0] == 0, setup.errors
    observer = psycopg.connect(_conninfo(database), autocommit=True)
    holder = psycopg.connect(_conninfo(database))  # a transaction using the table, held open
    holder.execute(f"SELECT count(*) FROM {HELD_TABLE}")
    try:
        before = _state(observer)

        # It gives up: two attempts of a second each, and a message that names the migration.
        code, _, errors = Migrate(
            database, MIGRATION_LOCK_TIMEOUT_SECONDS="1", MIGRATION_LOCK_ATTEMPTS="2"
        ).finish()
        after_giving_up = _state(observer)

        # It gives way, then applies once the transaction ends.
        migrate = Migrate(
            database, MIGRATION_LOCK_TIMEOUT_SECONDS="1", MIGRATION_LOCK_ATTEMPTS="10"
        )
        deadline = time.monotonic() + 60
        while _waiting_locks(observer, database) == 0:  # the ALTER, queued behind the holder
            assert time.monotonic() < deadline and migrate.process.poll() is None
            time.sleep(0.02)
        # A query of the app's arrives while the ALTER waits: with Django's migrate it would
        # queue behind the ALTER for as long as the holder runs (here, until its own limit).
        reader = psycopg.connect(_conninfo(database), autocommit=True)
        reader.execute("SET lock_timeout = '4s'")
        started = time.monotonic()
        read = reader.execute(f"SELECT count(*) FROM {HELD_TABLE}").fetchone()
        read_in = time.monotonic() - started
        reader.close()
        migrate.wait_for_error_line("Trying again in 1 s (attempt 2 of 10)")
    finally:
        holder.rollback()
        holder.close()
    code_after, out_after, errors_after = migrate.finish()
    applied = _state(observer)
    observer.close()

    assert before == (before[0], "character varying", "character varying")
    assert before[0][-1] == "0012_security_events"
    assert code == 1
    assert errors.count("0013_history_reason_text waited more than 1 s for a lock") == 2
    assert (
        "lock it needs. That migration is not applied (those before it are). Trying again in "
        "1 s (attempt 2 of 2).\n"
    ) in errors
    assert errors.endswith(
        "CommandError: migration scheduler.0013_history_reason_text waited more than 1 s for "
        "a lock 2 times: another transaction holds a lock it needs (look for long "
        "transactions in pg_stat_activity). That migration is not applied (those before it "
        "are). Run migrate again once they end, or raise MIGRATION_LOCK_TIMEOUT_SECONDS or "
        "MIGRATION_LOCK_ATTEMPTS.\n"
    )
    # Nothing of it was written: the tables it altered before the held one are as they were.
    assert after_giving_up == before

    assert read == (0,)
    assert read_in < 1.5  # the ALTER gave way after its second, not the reader's 4
    assert code_after == 0, errors_after
    assert "Applying scheduler.0013_history_reason_text... OK" in out_after
    assert applied[1:] == ("text", "text")
    assert {"0013_history_reason_text", "0014_history_newest_by_participant"} <= set(applied[0])


@pytest.mark.integration
@pytest.mark.django_db
def test_a_connections_own_lock_timeout_is_left_be() -> None:
    assert unlimited(connection)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '7s'")  # DATABASE_URL's options, PGOPTIONS, ...
    assert not unlimited(connection)


@pytest.mark.integration
@pytest.mark.django_db
def test_an_index_built_concurrently_waits_for_old_transactions_instead_of_failing(
    database: str,
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every transaction older than it, on any table (a
    nightly pg_dump, a long report), and blocks nobody meanwhile. Limited, it failed after
    the limit and left an invalid index; unlimited, it waits, then builds."""
    setup = Migrate(database, "-v", "0")
    assert setup.finish()[0] == 0, setup.errors
    back = Migrate(database, "scheduler", "0013", "-v", "0")
    assert back.finish()[0] == 0, back.errors
    observer = psycopg.connect(_conninfo(database), autocommit=True)
    holder = psycopg.connect(_conninfo(database))  # a snapshot on another table, held open
    holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM trials_site")
    release = threading.Timer(10.0, holder.rollback)
    try:
        started = time.monotonic()
        release.start()
        code, out, errors = Migrate(
            database, MIGRATION_LOCK_TIMEOUT_SECONDS="1", MIGRATION_LOCK_ATTEMPTS="2"
        ).finish()
        took = time.monotonic() - started
        indexes = observer.execute(
            "SELECT relname, indisvalid FROM pg_index JOIN pg_class "
            "ON pg_class.oid = pg_index.indexrelid WHERE relname LIKE 'history_%_newest' "
            "ORDER BY relname"
        ).fetchall()
    finally:
        release.cancel()
        holder.close()
        observer.close()

    assert code == 0, errors
    assert "Applying scheduler.0014_history_newest_by_participant... OK" in out
    assert took >= 9.5  # it waited for the old transaction (limited, it failed within ~3 s)
    assert indexes == [
        ("history_milestone_participant_newest", True),
        ("history_visit_participant_newest", True),
    ]
