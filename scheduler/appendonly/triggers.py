"""The triggers that make the audit trail append-only on Postgres (see the package docstring).

Used by migration scheduler 0010 (with the models as they were then), by the post_migrate
receiver (with the models as they are now) and by the `appendonly.E001` check; every
function here does nothing on another database.
"""

from __future__ import annotations

from typing import Any

from django.apps.registry import Apps
from django.db.backends.base.base import BaseDatabaseWrapper
from simple_history.models import HistoricalChanges

FUNCTION = "audit_history_append_only"
ROW_TRIGGER = "audit_history_append_only_row"
TRUNCATE_TRIGGER = "audit_history_append_only_truncate"
TRIGGERS = (ROW_TRIGGER, TRUNCATE_TRIGGER)
# Append-only tables that are not django-simple-history's: the security audit, and the record
# of each emergency unblinding with the notices it sent (who broke the code, whom, and why).
OTHER_APPEND_ONLY_MODELS = frozenset(
    {"scheduler.securityevent", "scheduler.emergencyunblinding", "scheduler.unblindingnotice"}
)

# RAISE aborts the statement and its transaction; the message names the operation and the
# table (TG_OP is UPDATE, DELETE or TRUNCATE).
CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit history is append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit entries are written once and never changed or removed.';
END
$$
"""
DROP_FUNCTION = f"DROP FUNCTION IF EXISTS {FUNCTION}() CASCADE"


def is_append_only(model: type[Any]) -> bool:
    """Is `model` (a live model or one of a migration's state) part of the audit trail?"""
    return (
        issubclass(model, HistoricalChanges) or model._meta.label_lower in OTHER_APPEND_ONLY_MODELS
    )


def append_only_tables(apps: Apps) -> list[str]:
    """The tables of every append-only model `apps` knows, sorted: every django-simple-history
    historical model of every app, so a history table added later is covered too."""
    return sorted(
        {
            model._meta.db_table
            for model in apps.get_models(include_auto_created=False)
            if is_append_only(model) and model._meta.managed and not model._meta.proxy
        }
    )


def function_installed(connection: BaseDatabaseWrapper) -> bool:
    """Has migration 0010 created the trigger function in this (Postgres) database?"""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_proc WHERE proname = %s AND pg_function_is_visible(oid)", [FUNCTION]
        )
        return cursor.fetchone() is not None


def tables_missing_triggers(connection: BaseDatabaseWrapper, tables: list[str]) -> list[str]:
    """Those of `tables` that exist and lack one of the two triggers (one query)."""
    existing = set(connection.introspection.table_names())
    present = [table for table in tables if table in existing]
    if not present:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgname = ANY(%s) AND c.relname = ANY(%s) AND pg_table_is_visible(c.oid)"
            " GROUP BY c.relname",
            [list(TRIGGERS), present],
        )
        complete = {table for table, count in cursor.fetchall() if count == len(TRIGGERS)}
    return [table for table in present if table not in complete]


def install(connection: BaseDatabaseWrapper, tables: list[str]) -> list[str]:
    """Create the function (again) and the triggers each of `tables` lacks; returns the
    tables that got them. Nothing on a database other than Postgres."""
    if connection.vendor != "postgresql":
        return []
    missing = tables_missing_triggers(connection, tables)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(CREATE_FUNCTION)
        for table in missing:
            for trigger in TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {quote(table)}")
            cursor.execute(
                f"CREATE TRIGGER {quote(ROW_TRIGGER)} BEFORE UPDATE OR DELETE ON {quote(table)}"
                f" FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
            )
            cursor.execute(
                f"CREATE TRIGGER {quote(TRUNCATE_TRIGGER)} BEFORE TRUNCATE ON {quote(table)}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
            )
    return missing


def install_after_migrate(
    sender: Any, app_config: Any, using: str = "default", apps: Apps | None = None, **kwargs: Any
) -> None:
    """post_migrate: give every append-only table that exists now its triggers, once 0010 has
    run (before it, or after it was reversed, nothing)."""
    from django.db import connections

    if app_config.label != "scheduler" or apps is None:
        return
    connection = connections[using]
    if function_installed(connection):
        install(connection, append_only_tables(apps))
