"""`manage.py migrate`, with a limit on each lock wait and retries (Postgres).

Django's migrate waits for every lock its statements need, for as long as it takes. On a
live database that is what takes the app down: ALTER TABLE needs the table's ACCESS
EXCLUSIVE lock, queues behind any transaction using the table (a site's amendment re-plans
every participant in one transaction: 46 s at 10,000), and every query on that table then
queues behind the ALTER. The web app gives up after WEB_LOCK_TIMEOUT_SECONDS and answers 503,
workers wait: for as long as the longest transaction runs, the table is down.

Here each lock wait of a migration that runs in a transaction lasts at most
MIGRATION_LOCK_TIMEOUT_SECONDS (5 s: Postgres's lock_timeout, for this command's connection
only). When one runs out, the migration rolls back, the queries queued behind it go on, and
migrate tries again after a pause (1, 2, 4 … 30 s),
MIGRATION_LOCK_ATTEMPTS times in all (10), before it fails with a message that says which
migration waited. A migration that is not atomic (it builds indexes CONCURRENTLY, which
blocks nobody while it waits) and the post-migrate steps wait as before (see
`migration_progress_callback`). A lock_timeout the connection already has (DATABASE_URL's `options`,
PGOPTIONS, the role's or the server's settings) is kept. SQLite, a limit of 0, and a migrate
run inside a transaction (a test's) are Django's migrate unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from scheduler.unavailable import sqlstate

LOCK_NOT_AVAILABLE = "55P03"
LONGEST_PAUSE_SECONDS = 30


class Command(migrate.Command):
    help = migrate.Command.help + (
        " Each lock wait of a migration lasts at most MIGRATION_LOCK_TIMEOUT_SECONDS; a "
        "migration that waited longer rolls back and migrate tries again (Postgres)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        seconds = settings.MIGRATION_LOCK_TIMEOUT_SECONDS
        self._applying: Any = None
        self._limit: tuple[BaseDatabaseWrapper, int] | None = None
        if connection.vendor != "postgresql" or seconds <= 0 or connection.in_atomic_block:
            super().handle(*args, **options)
            return
        attempts = max(settings.MIGRATION_LOCK_ATTEMPTS, 1)
        for attempt in range(1, attempts + 1):
            self._applying = None
            try:
                # Unless the connection has a lock_timeout of its own (DATABASE_URL's options,
                # PGOPTIONS, the role's or the server's settings), which is then left be.
                self._limit = (connection, round(seconds * 1000)) if unlimited(connection) else None
                super().handle(*args, **options)
            except BaseException as error:
                # A failed migration's connection is not reused (nor its session setting).
                connection.close()
                self._limit = None
                if not isinstance(error, OperationalError) or (
                    sqlstate(error) != LOCK_NOT_AVAILABLE
                ):
                    raise
                waited = self._waited(seconds)
                if attempt == attempts:
                    raise CommandError(
                        f"{waited} {attempts} times: another transaction holds a lock it "
                        "needs (look for long transactions in pg_stat_activity). "
                        f"{self._not_applied()}Run migrate again once they end, or raise "
                        "MIGRATION_LOCK_TIMEOUT_SECONDS or MIGRATION_LOCK_ATTEMPTS."
                    ) from error
                pause = min(2 ** (attempt - 1), LONGEST_PAUSE_SECONDS)
                self.stderr.write(
                    f"{self._new_line()}{waited}: another transaction holds a lock it needs. "
                    f"{self._not_applied()}Trying again in {pause} s "
                    f"(attempt {attempt + 1} of {attempts})."
                )
                time.sleep(pause)
            else:
                # The session's own setting is back since the last migration ended.
                self._limit = None
                return

    def _waited(self, seconds: float) -> str:
        what = f"migration {self._applying}" if self._applying else "migrate"
        return f"{what} waited more than {seconds:g} s for a lock"

    def _not_applied(self) -> str:
        # An atomic migration rolled back whole; a non-atomic one runs without the limit.
        return "That migration is not applied (those before it are). " if self._applying else ""

    def _new_line(self) -> str:
        # "  Applying x..." waits on its line for " OK": a terminal showing both streams
        # would put the message after it.
        return "\n" if self._applying and self.verbosity >= 1 else ""

    def migration_progress_callback(
        self, action: str, migration: Any = None, fake: bool = False
    ) -> None:
        """The limit holds while an atomic migration runs, and only then. A non-atomic one
        builds indexes CONCURRENTLY (scheduler 0014), which waits for every older transaction
        in the database, a nightly pg_dump's too, while blocking nobody: limited, it failed
        and left an invalid index. The post-migrate steps (the audit trail's append-only
        triggers, the app role's grants) wait as Django's always did: failing there would
        leave every migration recorded, and pods would start without them."""
        if action in ("apply_start", "unapply_start"):
            self._applying = migration
            self._lock_timeout(migration.atomic)
        elif action in ("apply_success", "unapply_success"):
            self._applying = None
            self._lock_timeout(False)
        super().migration_progress_callback(action, migration, fake)

    def _lock_timeout(self, limited: bool) -> None:
        # Runs between migrations, outside their transactions: a session setting.
        if self._limit is None:
            return
        connection, milliseconds = self._limit
        with connection.cursor() as cursor:
            if limited:
                cursor.execute(f"SET lock_timeout = {milliseconds}")
            else:
                cursor.execute("SET lock_timeout TO DEFAULT")


def unlimited(connection: BaseDatabaseWrapper) -> bool:
    """Whether `connection` waits for locks without limit (its lock_timeout is 0)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        (current,) = cursor.fetchone()
    return bool(current == "0")
