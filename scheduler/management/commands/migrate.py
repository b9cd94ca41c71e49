"""`manage.py migrate`, with a limit on each lock wait and retries (Postgres).

Django's migrate waits for every lock its statements need, for as long as it takes. On a
live database that is what takes the app down: ALTER TABLE needs the table's ACCESS
EXCLUSIVE lock, queues behind any transaction using the table (a site's amendment re-plans
every participant in one transaction: 46 s at 10,000), and every query on that table then
queues behind the ALTER. The web app gives up after WEB_LOCK_TIMEOUT_SECONDS and answers 503,
workers wait: for as long as the longest transaction runs, the table is down.

Here each lock wait lasts at most MIGRATION_LOCK_TIMEOUT_SECONDS (5 s: Postgres's
lock_timeout, for this command's connection only). When one runs out, the migration being
applied rolls back (each runs in its own transaction; the one that cannot, scheduler 0014,
builds its indexes CONCURRENTLY and rebuilds one a failed build left invalid), the queries
queued behind it go on, and migrate tries again after a pause (1, 2, 4 … 30 s),
MIGRATION_LOCK_ATTEMPTS times in all (10), before it fails with a message that says which
migration waited. A lock_timeout the connection already has (DATABASE_URL's `options`,
PGOPTIONS, the role's or the server's settings) is kept. SQLite, a limit of 0, and a migrate
run inside a transaction (a test's) are Django's migrate unchanged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
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
        " Each lock wait lasts at most MIGRATION_LOCK_TIMEOUT_SECONDS; a migration that waited "
        "longer rolls back and migrate tries again (Postgres)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        seconds = settings.MIGRATION_LOCK_TIMEOUT_SECONDS
        if connection.vendor != "postgresql" or seconds <= 0 or connection.in_atomic_block:
            super().handle(*args, **options)
            return
        attempts = max(settings.MIGRATION_LOCK_ATTEMPTS, 1)
        for attempt in range(1, attempts + 1):
            self._applying: object = None
            try:
                with lock_waits_limited(connection, seconds):
                    super().handle(*args, **options)
                return
            except OperationalError as error:
                if sqlstate(error) != LOCK_NOT_AVAILABLE:
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

    def _waited(self, seconds: float) -> str:
        what = f"migration {self._applying}" if self._applying else "migrate"
        return f"{what} waited more than {seconds:g} s for a lock"

    def _not_applied(self) -> str:
        # An atomic migration rolled back whole; the non-atomic one (scheduler 0014) is not
        # recorded either, and mends what it left when it runs again.
        return "That migration is not applied (those before it are). " if self._applying else ""

    def _new_line(self) -> str:
        # "  Applying x..." waits on its line for " OK": a terminal showing both streams
        # would put the message after it.
        return "\n" if self._applying and self.verbosity >= 1 else ""

    def migration_progress_callback(
        self, action: str, migration: Any = None, fake: bool = False
    ) -> None:
        if action in ("apply_start", "unapply_start"):
            self._applying = migration
        elif action in ("apply_success", "unapply_success"):
            self._applying = None
        super().migration_progress_callback(action, migration, fake)


@contextlib.contextmanager
def lock_waits_limited(connection: BaseDatabaseWrapper, seconds: float) -> Iterator[None]:
    """Each lock wait of `connection`'s statements lasts at most `seconds` while inside, unless
    the connection has a lock_timeout of its own; as it was afterwards. On an error the
    connection is closed (and the setting with it): a failed migration's is not reused."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        (current,) = cursor.fetchone()
        if current == "0":
            cursor.execute(f"SET lock_timeout = {round(seconds * 1000)}")
    try:
        yield
    except BaseException:
        connection.close()
        raise
    if current == "0":
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout TO DEFAULT")
