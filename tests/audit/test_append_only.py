"""The audit trail cannot be edited or wiped: on Postgres every history table (and the
security audit) refuses UPDATE, DELETE and TRUNCATE, even through raw SQL by the
application's database account; django-simple-history's clean-up commands refuse
(scheduler/appendonly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from scheduler.appendonly import checks, triggers
from scheduler.models import Membership, SecurityEvent
from tests.audit.conftest import World

ROOT = Path(__file__).resolve().parents[2]
REFUSAL = (
    "{} is disabled: the audit trail is append-only (21 CFR 11.10(e), ICH E6(R3)), so history "
    "rows are never deleted. Keep the trail as long as the trial's records must be kept; "
    "archive database backups instead."
)


def refused(sql: str) -> str:
    """Run `sql` as the application's database account; the database's refusal."""
    with (
        pytest.raises(DatabaseError) as raised,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # The test's own inserts leave deferred constraint checks pending, which TRUNCATE
        # would refuse before any trigger runs.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql)
    return raised.value.__cause__.diag.message_primary  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------------
# The clean-up commands (any database)


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["clean_old_history", "clean_duplicate_history"])
def test_the_bundled_clean_up_commands_refuse(world: World, command: str) -> None:
    history = Membership.history.count()

    with pytest.raises(CommandError) as raised:
        call_command(command)

    assert str(raised.value) == REFUSAL.format(command)
    assert Membership.history.count() == history > 0


@pytest.mark.parametrize("command", ["clean_old_history", "clean_duplicate_history"])
def test_the_clean_up_commands_exit_non_zero_from_the_shell(command: str) -> None:
    finished = subprocess.run(  # noqa: S603 - our own manage.py, fixed arguments
        [sys.executable, "manage.py", command, "--auto", "--days", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert (finished.returncode, finished.stdout, finished.stderr) == (
        1,
        "",
        REFUSAL.format(command) + "\n",
    )


# ----------------------------------------------------------------------------------------
# The triggers (Postgres)


@pytest.mark.integration
@pytest.mark.django_db
def test_a_history_row_cannot_be_updated_deleted_or_truncated_through_raw_sql(
    world: World,
) -> None:
    table = Membership.history.model._meta.db_table
    rows = Membership.history.count()

    assert connection.vendor == "postgresql"
    assert refused(f"UPDATE {table} SET role = 'sponsor_monitor'") == (  # noqa: S608
        f"audit history is append-only: UPDATE refused on {table}"
    )
    assert refused(f"DELETE FROM {table}") == (  # noqa: S608
        f"audit history is append-only: DELETE refused on {table}"
    )
    assert refused(f"TRUNCATE {table}") == (
        f"audit history is append-only: TRUNCATE refused on {table}"
    )
    assert Membership.history.count() == rows > 0


@pytest.mark.integration
@pytest.mark.django_db
def test_the_security_audit_cannot_be_updated_or_deleted_through_the_orm(world: World) -> None:
    events = SecurityEvent.objects.count()

    with pytest.raises(DatabaseError) as updated, transaction.atomic():
        SecurityEvent.objects.update(username="someone-else")
    with pytest.raises(DatabaseError) as deleted, transaction.atomic():
        SecurityEvent.objects.all().delete()

    assert updated.value.__cause__.diag.message_primary == (  # type: ignore[union-attr]
        "audit history is append-only: UPDATE refused on scheduler_securityevent"
    )
    assert deleted.value.__cause__.diag.message_primary == (  # type: ignore[union-attr]
        "audit history is append-only: DELETE refused on scheduler_securityevent"
    )
    assert SecurityEvent.objects.count() == events > 0


@pytest.mark.integration
@pytest.mark.django_db
def test_every_historical_model_has_both_triggers() -> None:
    tables = triggers.append_only_tables(apps)

    assert {
        "participants_historicalparticipant",
        "scheduler_historicalmembership",
        "scheduler_historicalreminder",
        "scheduler_historicalscheduledvisit",
        "scheduler_securityevent",
        "trials_historicaltrial",
    } <= set(tables)
    assert len(tables) == len([m for m in apps.get_models() if triggers.is_append_only(m)])
    assert triggers.tables_missing_triggers(connection, tables) == []
    assert checks.check_history_tables_append_only(databases=["default"]) == []


@pytest.mark.integration
@pytest.mark.django_db
def test_a_table_without_its_triggers_fails_the_check_until_migrate_adds_them(
    world: World,
) -> None:
    table = "scheduler_historicalmembership"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {triggers.ROW_TRIGGER} ON {table}")

    found = checks.check_history_tables_append_only(databases=["default"])
    triggers.install_after_migrate(
        sender=None, app_config=apps.get_app_config("scheduler"), apps=apps
    )

    assert [(message.id, message.msg) for message in found] == [
        (
            "appendonly.E001",
            f"The audit table {table} has no append-only trigger in database 'default': its "
            "rows can be updated and deleted.",
        )
    ]
    assert triggers.tables_missing_triggers(connection, [table]) == []
    assert refused(f"DELETE FROM {table}") == (  # noqa: S608
        f"audit history is append-only: DELETE refused on {table}"
    )


@pytest.mark.integration
@pytest.mark.django_db
def test_flush_refuses_on_a_database_that_is_not_a_test_one(monkeypatch: Any) -> None:
    monkeypatch.setitem(connection.settings_dict, "NAME", "scheduler")

    with pytest.raises(CommandError) as raised:
        call_command("flush", interactive=False)

    assert str(raised.value) == (
        "flush would erase the audit trail, which is append-only: refused. To start over, "
        "drop the database and create it again."
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_test_database_is_still_emptied_between_tests(world: World) -> None:
    assert Membership.history.count() > 0

    call_command("flush", interactive=False)

    assert (Membership.history.count(), SecurityEvent.objects.count()) == (0, 0)
    assert triggers.tables_missing_triggers(connection, triggers.append_only_tables(apps)) == []


@pytest.mark.integration
@pytest.mark.django_db
def test_deleting_a_user_named_in_the_trail_is_refused(world: World) -> None:
    # simple-history would set the user of their entries to NULL: an edit of the trail.
    membership = Membership.objects.get(user=world.coordinator)
    membership._history_user = world.auditor  # type: ignore[attr-defined]
    membership.save()

    with pytest.raises(DatabaseError) as raised, transaction.atomic():
        world.auditor.delete()

    assert raised.value.__cause__.diag.message_primary == (  # type: ignore[union-attr]
        "audit history is append-only: UPDATE refused on scheduler_historicalmembership"
    )
