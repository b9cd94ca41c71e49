"""The application's own database role: it reads and writes rows, and nothing more.

The append-only triggers (`triggers.py`) stop every role but the tables' owner and a superuser,
who may disable or drop them. So a deployment migrates as the owner and runs the web app,
the workers and beat as `APP_ROLE`, a login role that owns nothing: SELECT, INSERT, UPDATE
and DELETE on the tables (the triggers still refuse UPDATE and DELETE on the audit trail; no
TRUNCATE, no ALTER, no DROP: those need the owner), USAGE and SELECT on the sequences.
deploy/postgres-init/10-app-role.sh creates the role; `grant` (after every `migrate`, through
post_migrate in `apps.py`) gives it the privileges on what exists, and default privileges
give it the same on every table and sequence the owner creates later. Nothing on another
database than Postgres, nor where the role does not exist (a laptop, the test suite).
"""

from __future__ import annotations

from typing import Any

from django.apps.registry import Apps
from django.db.backends.base.base import BaseDatabaseWrapper

APP_ROLE = "scheduler_app"

TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"


def role_exists(connection: BaseDatabaseWrapper, role: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        return cursor.fetchone() is not None


def grant(connection: BaseDatabaseWrapper, role: str) -> bool:
    """Give `role` the application's privileges on every table and sequence of the current
    schema, now and (default privileges of the connected role, the owner) later. Idempotent;
    returns whether anything was granted (False off Postgres or when the role is missing)."""
    if not role_exists(connection, role):
        return False
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
        grants = (
            f"GRANT USAGE ON SCHEMA {quote(schema)} TO {quote(role)}",
            f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {quote(schema)} TO {quote(role)}",
            f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {quote(schema)}"
            f" TO {quote(role)}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quote(schema)}"
            f" GRANT {TABLE_PRIVILEGES} ON TABLES TO {quote(role)}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quote(schema)}"
            f" GRANT {SEQUENCE_PRIVILEGES} ON SEQUENCES TO {quote(role)}",
        )
        for statement in grants:
            cursor.execute(statement)
    return True


def grant_after_migrate(
    sender: Any, app_config: Any, using: str = "default", apps: Apps | None = None, **kwargs: Any
) -> None:
    """post_migrate: once per `migrate` (on the scheduler app's signal, when every app's
    tables exist), grant `APP_ROLE` its privileges if the role exists."""
    from django.db import connections

    if app_config.label != "scheduler":
        return
    grant(connections[using], APP_ROLE)
