"""Migration 0014's indexes (the site feed's version probes each participant's newest audit
row through them): built concurrently on Postgres, and built again when an interrupted
concurrent build left an invalid index under the name, which `IF NOT EXISTS` alone would keep
and the planner never uses."""

from __future__ import annotations

import importlib

import pytest
from django.db import connection

migration = importlib.import_module("scheduler.migrations.0014_history_newest_by_participant")


def validity() -> dict[str, bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_class.relname, pg_index.indisvalid FROM pg_index "
            "JOIN pg_class ON pg_class.oid = pg_index.indexrelid WHERE pg_class.relname = ANY(%s)",
            [list(migration.INDEXES.values())],
        )
        return dict(cursor.fetchall())


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_index_a_failed_concurrent_build_left_invalid_is_built_again() -> None:
    visits = migration.INDEXES["scheduler_historicalscheduledvisit"]
    with connection.cursor() as cursor:
        # What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [visits]
        )
    before = validity()

    with connection.schema_editor(atomic=False) as editor:
        migration.create(None, editor)

    assert before == {visits: False, "history_milestone_participant_newest": True}
    assert validity() == {visits: True, "history_milestone_participant_newest": True}
