"""The application's database role cannot touch the audit trail, on a real Postgres.

A deployment migrates as the tables' owner and runs the app as `scheduler_app`
(docker-compose.yml): deploy/postgres-init/10-app-role.sh creates that role and `migrate`'s
post_migrate step (scheduler/appendonly/grants.py) grants it its privileges. Here the same
script creates a role of this run's own name in the test database's cluster, the same
`migrate` grants it the same privileges, and the app then writes as it: its rows and their
history go in, while changing or erasing the history, or setting its triggers aside, is
refused.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from participants.models import Participant
from scheduler.appendonly import grants
from tests.factories import participant_for

INIT_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres-init" / "10-app-role.sh"
HISTORY = "participants_historicalparticipant"


@dataclass(frozen=True)
class Role:
    name: str
    password: str


def _owner(dbname: str) -> psycopg.Connection[Any]:
    database = connection.settings_dict
    return psycopg.connect(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        user=database["USER"],
        password=database["PASSWORD"] or None,
        dbname=dbname,
        autocommit=True,
    )


@pytest.fixture
def app_role(tmp_path: Path) -> Iterator[Role]:
    """A login role created by the deployment's init script, dropped afterwards (roles belong
    to the cluster, which other test databases share: hence this run's own name)."""
    database = connection.settings_dict
    role = Role(name=f"test_app_{uuid.uuid4().hex[:12]}", password=secrets.token_urlsafe(24))
    password_file = tmp_path / "postgres_app_password"
    password_file.write_text(role.password + "\n", encoding="utf-8")
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": database["HOST"] or "127.0.0.1",
        "PGPORT": str(database["PORT"] or 5432),
        "POSTGRES_USER": database["USER"],
        "POSTGRES_DB": database["NAME"],
        "APP_DB_ROLE": role.name,
        "APP_DB_PASSWORD_FILE": str(password_file),
    }
    if database["PASSWORD"]:
        env["PGPASSWORD"] = database["PASSWORD"]
    created = subprocess.run(
        ["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert created.stdout == f"10-app-role.sh: role {role.name} is ready\n"
    try:
        yield role
    finally:
        with _owner(database["NAME"]) as owner:
            # Its privileges and default privileges in this database go first, then the role.
            owner.execute(f'DROP OWNED BY "{role.name}"')
            owner.execute(f'DROP ROLE "{role.name}"')


def _refusal(conn: psycopg.Connection[Any], statement: str) -> tuple[str | None, str]:
    """The SQLSTATE and message with which `statement`, run as the app's role, fails."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    return caught.value.sqlstate, caught.value.diag.message_primary or ""


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_app_role_writes_history_but_cannot_change_erase_or_unguard_it(
    app_role: Role, import_seed: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert connection.vendor == "postgresql"
    # What `docker compose run migrate` does, for this run's role instead of scheduler_app.
    monkeypatch.setattr(grants, "APP_ROLE", app_role.name)
    call_command("migrate", verbosity=0, interactive=False)

    # The app, connected as the role, registers a participant: the row and its history go in.
    owner_settings = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(USER=app_role.name, PASSWORD=app_role.password)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            session = cursor.fetchone()
        participant = participant_for(
            import_seed("000"), anchors={"day1": dt.date(2026, 2, 2)}, study_id="P-LP-1"
        )
        written = list(
            Participant.history.filter(id=participant.id).values_list("study_id", "history_type")
        )
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(owner_settings)

    assert session == (app_role.name, False)
    assert written == [("P-LP-1", "+")]

    with psycopg.connect(
        host=owner_settings["HOST"] or "127.0.0.1",
        port=owner_settings["PORT"] or 5432,
        user=app_role.name,
        password=app_role.password,
        dbname=owner_settings["NAME"],
        autocommit=True,
    ) as app:
        refusals = {
            "update": _refusal(app, f"UPDATE {HISTORY} SET study_id = 'P-X'"),
            "delete": _refusal(app, f"DELETE FROM {HISTORY}"),
            "truncate": _refusal(app, f"TRUNCATE {HISTORY}"),
            "disable trigger": _refusal(
                app, f"ALTER TABLE {HISTORY} DISABLE TRIGGER audit_history_append_only_row"
            ),
            "disable all": _refusal(app, f"ALTER TABLE {HISTORY} DISABLE TRIGGER ALL"),
            "drop trigger": _refusal(
                app, f"DROP TRIGGER audit_history_append_only_row ON {HISTORY}"
            ),
            "drop function": _refusal(app, "DROP FUNCTION audit_history_append_only() CASCADE"),
            "replica mode": _refusal(app, "SET session_replication_role = replica"),
            "drop table": _refusal(app, f"DROP TABLE {HISTORY}"),
        }
        # Ordinary writes to ordinary tables are the app's to make.
        renamed = app.execute(
            "UPDATE participants_participant SET study_id = 'P-LP-2' WHERE id = %s",
            [participant.id],
        ).rowcount

    assert refusals == {
        "update": ("42501", f"audit history is append-only: UPDATE refused on {HISTORY}"),
        "delete": ("42501", f"audit history is append-only: DELETE refused on {HISTORY}"),
        "truncate": ("42501", f"permission denied for table {HISTORY}"),
        "disable trigger": ("42501", f"must be owner of table {HISTORY}"),
        "disable all": ("42501", f"must be owner of table {HISTORY}"),
        "drop trigger": ("42501", f"must be owner of relation {HISTORY}"),
        "drop function": ("42501", "must be owner of function audit_history_append_only"),
        "replica mode": ("42501", 'permission denied to set parameter "session_replication_role"'),
        "drop table": ("42501", f"must be owner of table {HISTORY}"),
    }
    assert renamed == 1
    # The history is as the app wrote it, and both triggers are still in place and enabled.
    with _owner(owner_settings["NAME"]) as owner:
        history = owner.execute(
            f"SELECT study_id, history_type FROM {HISTORY} WHERE id = %s", [participant.id]
        ).fetchall()
        guards = owner.execute(
            "SELECT tgname, tgenabled FROM pg_trigger"
            " WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY 1",
            [HISTORY],
        ).fetchall()
    assert history == [("P-LP-1", "+")]
    assert guards == [
        ("audit_history_append_only_row", "O"),
        ("audit_history_append_only_truncate", "O"),
    ]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_grants_reach_a_table_the_owner_creates_later_and_are_idempotent(
    app_role: Role,
) -> None:
    assert grants.grant(connection, app_role.name) is True
    assert grants.grant(connection, app_role.name) is True
    assert grants.grant(connection, f"{app_role.name}_missing") is False
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE least_privilege_later (id bigserial PRIMARY KEY, note text)")
    try:
        with psycopg.connect(
            host=connection.settings_dict["HOST"] or "127.0.0.1",
            port=connection.settings_dict["PORT"] or 5432,
            user=app_role.name,
            password=app_role.password,
            dbname=connection.settings_dict["NAME"],
            autocommit=True,
        ) as app:
            app.execute("INSERT INTO least_privilege_later (note) VALUES ('later')")
            rows = app.execute("SELECT id, note FROM least_privilege_later").fetchall()
            refused = _refusal(app, "CREATE TABLE least_privilege_own (id int)")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE least_privilege_later")

    assert rows == [(1, "later")]
    assert refused == ("42501", "permission denied for schema public")
