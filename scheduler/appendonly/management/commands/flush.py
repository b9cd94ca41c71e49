from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.core.management.commands import flush
from django.core.management.sql import emit_post_migrate_signal
from django.db import connections, transaction
from django.db.backends.base.creation import TEST_DATABASE_PREFIX

from scheduler.appendonly.triggers import function_installed


class Command(flush.Command):
    """Django's `flush`, except on a Postgres database whose audit trail is append-only:
    there it would wipe the trail, so it refuses; a test database (`test_…`, thrown away
    after the run) is emptied with the triggers set aside for the transaction."""

    def handle(self, **options: Any) -> None:
        database = options["database"]
        connection = connections[database]
        if not function_installed(connection):
            super().handle(**options)
            return
        if not str(connection.settings_dict["NAME"]).startswith(TEST_DATABASE_PREFIX):
            raise CommandError(
                "flush would erase the audit trail, which is append-only: refused. To start "
                "over, drop the database and create it again."
            )
        with transaction.atomic(using=database):
            with connection.cursor() as cursor:
                # Triggers do not fire for a session in replica mode; only a superuser may set
                # it (tests run as one), and LOCAL ends it with this transaction.
                cursor.execute("SET LOCAL session_replication_role = replica")
            super().handle(**{**options, "inhibit_post_migrate": True})
        if not options.get("inhibit_post_migrate", False):
            emit_post_migrate_signal(options["verbosity"], options["interactive"], database)
