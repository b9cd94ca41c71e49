"""Migrations the running release survives (django-migration-linter, on Postgres).

The migrate Job runs while the previous release still serves (deploy/kubernetes/
migrate-job.yaml; compose's `migrate` likewise, when the web app is already up), so every
migration must leave a schema the previous code can use, without holding a table's lock for
long: no NOT NULL column the old code does not fill (Django drops a `default=` from the table
once the column is added; `db_default=` stays), no dropped or renamed column or table the old
code still reads, no index built while writes wait (CONCURRENTLY, as scheduler 0014 does).
The linter reads the SQL each migration runs; its warnings count as errors here.

Migrations released before this gate keep their findings, each reviewed below: an applied
migration is not rewritten.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from django.db import connection
from django_migration_linter import MigrationLinter

OUR_APPS = ["trials", "participants", "scheduler", "scheduler_api"]
ADVICE = (
    "The migrate Job runs while the previous release still serves: make the migration one it "
    "survives (add a column nullable or with db_default=, build an index CONCURRENTLY in a "
    "non-atomic migration as scheduler 0014 does, drop or rename only in a release after the "
    "one that stops using it), or, if it is safe anyway, add it to REVIEWED with the reason."
)
NOT_NULL = "NOT NULL constraint on columns"
LOCKING_INDEX = "CREATE INDEX locks table"
LONG_INDEX = "CREATE INDEX prolongs transaction, delaying lock release"
ALTERED = "ALTERING columns (Could be backward compatible. You may ignore this migration.)"

# (app, migration) -> what the linter finds in it, for migrations released before this gate.
# Each was reviewed:
# - the NOT NULL columns came with a Django default, which Django drops from the table: an
#   insert by the release before them fails while both run. They shipped with the release
#   that added them, when the deployment migrated with the app stopped;
# - the indexes were built on tables then small (new features' tables, or before a site had
#   data); later ones are built CONCURRENTLY (scheduler 0014);
# - the history reasons went from varchar(100) to text: no rewrite in Postgres, and the
#   previous code reads and writes the column the same way (a brief ACCESS EXCLUSIVE lock
#   each, which migrate's lock limit keeps from queueing behind long transactions).
REVIEWED: dict[tuple[str, str], set[str]] = {
    ("trials", "0004_japanese_names"): {NOT_NULL},
    ("trials", "0006_history_reason_text"): {ALTERED},
    ("participants", "0002_reminders"): {NOT_NULL},
    ("participants", "0003_screening_log"): {NOT_NULL, LOCKING_INDEX, LONG_INDEX},
    ("participants", "0004_history_reason_text"): {ALTERED},
    ("scheduler", "0008_attention_indexes"): {LOCKING_INDEX},
    ("scheduler", "0013_history_reason_text"): {ALTERED},
}


class _Findings(MigrationLinter):
    """The linter, keeping what it finds per migration instead of printing it."""

    def __init__(self) -> None:
        super().__init__(
            database=connection.alias,
            no_cache=True,
            no_output=True,
            include_apps=OUR_APPS,
            all_warnings_as_errors=True,
        )
        self.found: dict[tuple[str, str], set[str]] = {}
        self._current: tuple[str, str] = ("", "")

    def print_linting_msg(self, app_label: str, migration_name: str, msg: str, *args: Any) -> None:
        self._current = (app_label, migration_name)

    def print_errors(self, errors: list[Any]) -> None:
        if errors:
            self.found.setdefault(self._current, set()).update(e.message for e in errors)

    def print_warnings(self, warnings: list[Any]) -> None:
        self.print_errors(warnings)


@pytest.mark.integration
@pytest.mark.django_db
def test_every_migration_leaves_a_schema_the_running_release_survives() -> None:
    linter = _Findings()
    linter.lint_all_migrations()
    assert linter.nb_total >= 25  # every migration of our apps was read
    new = {key: found for key, found in linter.found.items() if REVIEWED.get(key) != found}
    assert new == {}, ADVICE
    assert set(linter.found) == set(REVIEWED)  # a reviewed one no longer found: drop it


@pytest.mark.integration
@pytest.mark.django_db
def test_the_gate_finds_what_the_previous_release_would_not_survive(
    tmp_path: Any, settings: Any
) -> None:
    """A column added NOT NULL with a Django default, and an index built inside the
    transaction, in a new migration of a throw-away app: both found."""
    package = tmp_path / "unsafe_app"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "__init__.py").write_text("")
    (package / "migrations" / "0001_initial.py").write_text(
        "from django.db import migrations, models\n"
        "class Migration(migrations.Migration):\n"
        "    initial = True\n"
        "    operations = [migrations.CreateModel('Thing', [\n"
        "        ('id', models.BigAutoField(primary_key=True)),\n"
        "        ('name', models.CharField(max_length=10, null=True))])]\n"
    )
    (package / "migrations" / "0002_unsafe.py").write_text(
        "from django.db import migrations, models\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('unsafe_app', '0001_initial')]\n"
        "    operations = [\n"
        "        migrations.AddField('thing', 'code', models.CharField(max_length=5,"
        " default='x')),\n"
        "        migrations.AddIndex('thing', models.Index(fields=['name'],"
        " name='thing_name')),\n"
        "    ]\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "unsafe_app"]
        linter = _Findings()
        linter.include_apps = ["unsafe_app"]
        linter.lint_all_migrations()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("unsafe_app", None)
        sys.modules.pop("unsafe_app.migrations", None)
    assert linter.found == {("unsafe_app", "0002_unsafe"): {NOT_NULL, LOCKING_INDEX, LONG_INDEX}}
