"""A backup that restores: deploy/backup.sh and deploy/restore.sh, the scripts the compose
`backup` service and the README's restore procedure run, against a real Postgres.

The demo data (every seed trial, enrolled participants with calendars, booked and done visits,
reminders, and the audit history all of that wrote) is dumped with pg_dump, restored with
pg_restore into a new database, and compared table by table: the same row count everywhere
and the same rows, the audit trail's included.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from psycopg import sql

from participants.models import Participant
from scheduler.models import Reminder, ScheduledVisit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

AUDITED = [
    "public.participants_historicalparticipant",
    "public.participants_historicalparticipantanchor",
    "public.participants_historicaltreatmentassignment",
    "public.scheduler_historicalscheduledvisit",
    "public.scheduler_historicalscheduledprocedure",
    "public.scheduler_historicalscheduledmilestone",
    "public.trials_historicalprotocolversion",
    "public.trials_historicaltrial",
    "public.trials_historicalsite",
    "public.trials_historicaltrialsite",
]

TABLES = """
    SELECT n.nspname || '.' || c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%'
     ORDER BY 1
"""


def _libpq_env(**extra: str) -> dict[str, str]:
    database = connection.settings_dict
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": database["HOST"] or "127.0.0.1",
        "PGPORT": str(database["PORT"] or 5432),
        "PGUSER": database["USER"],
        **extra,
    }
    if database["PASSWORD"]:
        env["PGPASSWORD"] = database["PASSWORD"]
    return env


def _connect(name: str) -> psycopg.Connection[Any]:
    database = connection.settings_dict
    return psycopg.connect(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        user=database["USER"],
        password=database["PASSWORD"] or None,
        dbname=name,
        autocommit=True,
    )


def _contents(name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, each table's rows in a stable order."""
    with _connect(name) as conn, conn.cursor() as cursor:
        tables = [row[0] for row in cursor.execute(TABLES).fetchall()]
        contents = {}
        for table in tables:
            schema, relation = table.split(".")
            rows = cursor.execute(
                sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, relation))
            ).fetchall()
            contents[table] = sorted(rows, key=repr)
    return contents


@pytest.fixture
def restore_target() -> Iterator[str]:
    target = f"{connection.settings_dict['NAME']}_restore"
    drop = ["dropdb", "--if-exists", "--", target]
    subprocess.run(drop, env=_libpq_env(PGDATABASE="postgres"), check=True, timeout=60)
    yield target
    subprocess.run(drop, env=_libpq_env(PGDATABASE="postgres"), check=True, timeout=60)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_restored_backup_has_every_row_and_the_same_audit_trail(
    tmp_path: Path, restore_target: str
) -> None:
    assert connection.vendor == "postgresql"
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    source = connection.settings_dict["NAME"]
    history_tables = sorted(
        f"public.{model._meta.db_table}"
        for model in apps.get_models()
        if model.__name__.startswith("Historical")
    )

    backup = subprocess.run(
        ["sh", str(DEPLOY / "backup.sh")],
        env=_libpq_env(PGDATABASE=source, BACKUP_DIR=str(tmp_path), BACKUP_KEEP="3"),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    dump = Path(backup.stdout.strip())
    restore = subprocess.run(
        ["sh", str(DEPLOY / "restore.sh"), str(dump), restore_target],
        env=_libpq_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    original, restored = _contents(source), _contents(restore_target)
    counts = {table: len(rows) for table, rows in original.items()}

    assert dump.parent == tmp_path
    assert dump.name.startswith(f"{source}-") and dump.suffix == ".dump"
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    # What the demo holds, so the comparison below is over real rows, not empty tables.
    assert counts["public.participants_participant"] == Participant.objects.count() > 0
    assert counts["public.scheduler_scheduledvisit"] == ScheduledVisit.objects.count() > 0
    assert counts["public.scheduler_reminder"] == Reminder.objects.count() > 0
    # The audit trail of what the demo did: registrations, anchors, assignments, calendars
    # (planned, booked, done), protocol imports, sites.
    assert [table for table in AUDITED if counts[table] == 0] == []
    assert set(AUDITED) <= set(history_tables)
    # Every table, row for row; the audit trail (the history tables) among them.
    assert {table: len(rows) for table, rows in restored.items()} == counts
    assert [table for table in original if restored[table] != original[table]] == []
    assert {table: restored[table] for table in history_tables} == {
        table: original[table] for table in history_tables
    }
    # restore.sh's own report says the same, for the person running it.
    printed = dict(line.rsplit(" ", 1) for line in restore.stdout.splitlines()[:-1])
    assert {table: int(n) for table, n in printed.items()} == counts
    assert restore.stdout.splitlines()[-1] == f"restored {dump} into {restore_target}"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_an_existing_database_and_leaves_it_alone(
    tmp_path: Path, restore_target: str
) -> None:
    source = connection.settings_dict["NAME"]
    subprocess.run(
        ["createdb", "--", restore_target], env=_libpq_env(PGDATABASE="postgres"), check=True
    )
    with _connect(restore_target) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    dump = subprocess.run(
        ["sh", str(DEPLOY / "backup.sh")],
        env=_libpq_env(PGDATABASE=source, BACKUP_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.strip()

    refused = subprocess.run(
        ["sh", str(DEPLOY / "restore.sh"), dump, restore_target],
        env=_libpq_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert refused.returncode == 1
    assert f'database "{restore_target}" already exists' in refused.stderr
    assert _contents(restore_target) == {"public.kept": [("still here",)]}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_backup_keeps_the_newest_dumps_and_only_whole_ones(tmp_path: Path) -> None:
    source = connection.settings_dict["NAME"]
    for stamp in ("20260101T020000Z", "20260102T020000Z", "20260103T020000Z"):
        (tmp_path / f"{source}-{stamp}.dump").write_bytes(b"older dump")
    (tmp_path / "other-20250101T020000Z.dump").write_bytes(b"another database's dump")

    newest = subprocess.run(
        ["sh", str(DEPLOY / "backup.sh")],
        env=_libpq_env(PGDATABASE=source, BACKUP_DIR=str(tmp_path), BACKUP_KEEP="2"),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.strip()

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"{source}-20260103T020000Z.dump", Path(newest).name, "other-20250101T020000Z.dump"]
    )
