# The audit trail is append-only on Postgres: every django-simple-history table (of every app,
# found from the models as they are at this point) refuses UPDATE, DELETE and TRUNCATE, even
# through raw SQL by the application's own database account. History tables created by later
# migrations get the same triggers after each `migrate` (scheduler/appendonly/triggers.py).
# Nothing on SQLite.

from typing import Any

from django.db import migrations

from scheduler.appendonly import triggers


def make_append_only(apps: Any, schema_editor: Any) -> None:
    triggers.install(schema_editor.connection, triggers.append_only_tables(apps))


def allow_changes_again(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(triggers.DROP_FUNCTION)


class Migration(migrations.Migration):
    # The latest migration of every app with history tables, so all of them exist here.
    dependencies = [
        ("scheduler", "0009_booking_holds"),
        ("participants", "0003_screening_log"),
        ("trials", "0005_visit_plans"),
    ]

    operations = [migrations.RunPython(make_append_only, allow_changes_again, elidable=False)]
