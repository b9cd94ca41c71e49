from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core import checks
from django.db import connections

from scheduler.appendonly.triggers import (
    append_only_tables,
    function_installed,
    tables_missing_triggers,
)


@checks.register(checks.Tags.database)
def check_history_tables_append_only(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every history table (and the security audit) of a Postgres database where migration
    scheduler 0010 has run refuses UPDATE, DELETE and TRUNCATE. Run by
    `manage.py check --database default` and before `migrate`."""
    found: list[checks.CheckMessage] = []
    for alias in databases or []:
        connection = connections[alias]
        if not function_installed(connection):
            continue
        for table in tables_missing_triggers(connection, append_only_tables(apps)):
            found.append(
                checks.Error(
                    f"The audit table {table} has no append-only trigger in database "
                    f"{alias!r}: its rows can be updated and deleted.",
                    hint="Find out who dropped it; `manage.py migrate --skip-checks` creates "
                    "it again (scheduler/appendonly/triggers.py).",
                    id="appendonly.E001",
                )
            )
    return found
