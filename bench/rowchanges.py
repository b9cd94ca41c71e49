"""Row changes: what a piece of work wrote to Postgres, and the same rows written again with
plain SQL, for the baselines of bench/replan.py and bench/enroll.py.

A `Recorder` runs the work in a transaction rolled back afterwards, with every table it may
write fingerprinted first (primary key and md5 of each row, in temporary tables), and dumps the
rows the work inserted, updated and deleted as COPY text. Replayed from the same state, the
baseline writes exactly those rows (COPY for inserts; COPY into a temporary table then one
UPDATE … FROM and one DELETE … USING per table) and the recorder checks that it produced the
very same changes. The first recording of a scenario fingerprints every table; later ones
only the tables it wrote, and refuse a run that wrote any other.

Both sides end with `SET CONSTRAINTS ALL IMMEDIATE` inside their timing: Postgres then checks
at once the foreign keys it would have checked at `COMMIT` (Django makes every one deferred),
so each side costs what it would committed, less the last flush of the log, and is still rolled
back.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import quoted


@dataclass
class Table:
    name: str
    pk: str
    columns: list[str]


@dataclass
class Changes:
    """The rows one run inserted, updated and deleted, per table, dumped to COPY text files."""

    folder: Path
    tables: dict[str, Table]
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # ins, upd, del
    digest: str = ""

    def path(self, table: str, kind: str) -> Path:
        return self.folder / f"{table}.{kind}.copy"

    def summary(self) -> str:
        parts = []
        for name, (ins, upd, dele) in sorted(self.counts.items()):
            words = [
                f"+{ins:,}" if ins else "",
                f"~{upd:,}" if upd else "",
                f"-{dele:,}" if dele else "",
            ]
            parts.append(f"{name} {' '.join(w for w in words if w)}")
        return "; ".join(parts)

    @property
    def rows(self) -> int:
        return sum(sum(c) for c in self.counts.values())


def public_tables(cursor: Any) -> dict[str, Table]:
    """Every table of the public schema with a one-column primary key."""
    tables: dict[str, Table] = {}
    names = cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    ).fetchall()
    for (name,) in names:
        keys = cursor.execute(
            """SELECT a.attname FROM pg_index i JOIN pg_attribute a
               ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
               WHERE i.indrelid = %s::regclass AND i.indisprimary""",
            [quoted(name)],
        ).fetchall()
        columns = cursor.execute(
            """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
               AND NOT attisdropped AND attgenerated = '' ORDER BY attnum""",
            [quoted(name)],
        ).fetchall()
        if len(keys) == 1:
            tables[name] = Table(name, keys[0][0], [c for (c,) in columns])
    return tables


def write_counts(cursor: Any) -> dict[str, int]:
    """Rows inserted, updated and deleted per table by this connection, not yet flushed to the
    server's statistics: this transaction's, and (since Postgres 15) maybe earlier ones', so
    only a difference of two readings says what a piece of work wrote."""
    rows = cursor.execute(
        """SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables
           WHERE schemaname = 'public'"""
    ).fetchall()
    return dict(rows)


def fingerprint(cursor: Any, tables: dict[str, Table]) -> None:
    """Each table's rows as (primary key, md5 of the row), in temporary tables b_<n>."""
    for number, table in enumerate(tables.values()):
        cursor.execute(f"DROP TABLE IF EXISTS b_{number}")
        cursor.execute(
            f"CREATE TEMP TABLE b_{number} AS SELECT t.{quoted(table.pk)} AS pk, "  # noqa: S608
            f"md5(t::text) AS h FROM {quoted(table.name)} t"
        )
        cursor.execute(f"ANALYZE b_{number}")


def _dump(cursor: Any, sql: str, path: Path) -> int:
    lines = 0
    with path.open("wb") as out, cursor.copy(sql) as copy:
        for data in copy:
            out.write(data)
            lines += bytes(data).count(b"\n")
    return lines


def dump_changes(cursor: Any, tables: dict[str, Table], folder: Path) -> Changes:
    """The rows inserted, updated and deleted since `fingerprint`, ordered by primary key."""
    changes = Changes(folder, {})
    digest = hashlib.sha256()
    for number, table in enumerate(tables.values()):
        pk, name = quoted(table.pk), quoted(table.name)
        columns = ", ".join(f"t.{quoted(c)}" for c in table.columns)
        counts = (
            _dump(
                cursor,
                f"COPY (SELECT {columns} FROM {name} t LEFT JOIN b_{number} b ON b.pk = t.{pk} "  # noqa: S608
                f"WHERE b.pk IS NULL ORDER BY t.{pk}) TO STDOUT",
                changes.path(table.name, "ins"),
            ),
            _dump(
                cursor,
                f"COPY (SELECT {columns} FROM {name} t JOIN b_{number} b ON b.pk = t.{pk} "  # noqa: S608
                f"WHERE md5(t::text) <> b.h ORDER BY t.{pk}) TO STDOUT",
                changes.path(table.name, "upd"),
            ),
            _dump(
                cursor,
                f"COPY (SELECT b.pk FROM b_{number} b LEFT JOIN {name} t ON t.{pk} = b.pk "  # noqa: S608
                f"WHERE t.{pk} IS NULL ORDER BY b.pk) TO STDOUT",
                changes.path(table.name, "del"),
            ),
        )
        if any(counts):
            changes.tables[table.name] = table
            changes.counts[table.name] = counts
            for kind in ("ins", "upd", "del"):
                digest.update(changes.path(table.name, kind).read_bytes())
        else:
            for kind in ("ins", "upd", "del"):
                changes.path(table.name, kind).unlink()
    changes.digest = digest.hexdigest()
    return changes


def check_deferred(cursor: Any) -> None:
    """Check now every deferred constraint the transaction would check at `COMMIT` (the
    foreign keys of every row written): what a commit costs besides flushing the log."""
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _load(cursor: Any, sql: str, path: Path) -> None:
    with path.open("rb") as source, cursor.copy(sql) as copy:
        while chunk := source.read(1 << 20):
            copy.write(chunk)


def write_plainly(cursor: Any, changes: Changes) -> None:
    """The baseline: the same row changes, with COPY, one UPDATE … FROM and one DELETE … USING
    per table."""
    timed = bool(os.environ.get("BENCH_SQL"))  # seconds per table, printed
    for number, (name, table) in enumerate(changes.tables.items()):
        inserted, updated, deleted = changes.counts[name]
        started = time.perf_counter()
        pk = quoted(table.pk)
        column_list = ", ".join(quoted(c) for c in table.columns)
        if deleted:
            cursor.execute(
                f"CREATE TEMP TABLE d_{number} AS SELECT {pk} FROM {quoted(name)} WITH NO DATA"  # noqa: S608
            )
            _load(cursor, f"COPY d_{number} FROM STDIN", changes.path(name, "del"))
            cursor.execute(
                f"DELETE FROM {quoted(name)} t USING d_{number} d WHERE t.{pk} = d.{pk}"  # noqa: S608
            )
        if updated:
            cursor.execute(
                f"CREATE TEMP TABLE u_{number} AS SELECT {column_list} FROM {quoted(name)} "  # noqa: S608
                "WITH NO DATA"
            )
            _load(cursor, f"COPY u_{number} ({column_list}) FROM STDIN", changes.path(name, "upd"))
            assignments = ", ".join(
                f"{quoted(c)} = u.{quoted(c)}" for c in table.columns if c != table.pk
            )
            cursor.execute(
                f"UPDATE {quoted(name)} t SET {assignments} FROM u_{number} u "  # noqa: S608
                f"WHERE t.{pk} = u.{pk}"
            )
        if inserted:
            _load(
                cursor, f"COPY {quoted(name)} ({column_list}) FROM STDIN", changes.path(name, "ins")
            )
        if timed and (inserted or updated or deleted):
            print(
                f"  plain SQL {time.perf_counter() - started:7.3f} s  {name} "
                f"+{inserted:,} ~{updated:,} -{deleted:,}"
            )


@dataclass
class Recorder:
    """Records scenarios' row changes and replays them with plain SQL (Postgres only)."""

    folder: Path
    tables: dict[str, Table] = field(default_factory=dict)
    touched: dict[str, set[str]] = field(default_factory=dict)  # scenario -> tables written

    def __post_init__(self) -> None:
        for kind in ("service", "baseline"):
            (self.folder / kind).mkdir(parents=True, exist_ok=True)

    def _tables(self, scenario: str) -> dict[str, Table]:
        from django.db import connection

        if not self.tables:
            with connection.cursor() as wrapper:
                self.tables = public_tables(wrapper.cursor)
        names = self.touched.get(scenario, self.tables)
        return {name: self.tables[name] for name in sorted(names)}

    def record(self, scenario: str, work: Callable[[], Any]) -> tuple[float, Changes]:
        """Seconds `work` took, in a transaction rolled back afterwards, and its row changes."""
        from django.db import connection, transaction

        tables = self._tables(scenario)
        with transaction.atomic(), connection.cursor() as wrapper:
            cursor = wrapper.cursor
            fingerprint(cursor, tables)
            before = write_counts(cursor)
            started = time.perf_counter()
            work()
            check_deferred(cursor)
            seconds = time.perf_counter() - started
            after = write_counts(cursor)
            written = {name for name, count in after.items() if count > before.get(name, 0)}
            unseen = written - set(tables)
            assert not unseen, f"{scenario} wrote tables not fingerprinted: {sorted(unseen)}"
            changes = dump_changes(cursor, tables, self.folder / "service")
            self.touched.setdefault(scenario, set(changes.tables))
            transaction.set_rollback(True)
        return seconds, changes

    def replay(self, scenario: str, changes: Changes) -> float:
        """Seconds the same row changes take with plain SQL, in a transaction rolled back
        afterwards; checked to be the very same changes."""
        from django.db import connection, transaction

        tables = self._tables(scenario)
        with transaction.atomic(), connection.cursor() as wrapper:
            cursor = wrapper.cursor
            fingerprint(cursor, tables)
            started = time.perf_counter()
            write_plainly(cursor, changes)
            check_deferred(cursor)
            seconds = time.perf_counter() - started
            again = dump_changes(cursor, tables, self.folder / "baseline")
            transaction.set_rollback(True)
        assert again.counts == changes.counts and again.digest == changes.digest, (
            f"{scenario}: the plain SQL did not write the same rows "
            f"({again.summary()} against {changes.summary()})"
        )
        return seconds
