"""Updating many rows in one statement, with their audit history.

Django's `bulk_update` writes a `CASE WHEN id = … THEN …` per row and field; compiling those
expressions costs far more than running the statement (an amendment re-planning a site spent
most of its time there). `rows_update` writes the same change as one
`WITH v (…) AS (VALUES …) UPDATE … FROM v`, which Postgres and SQLite (3.33 and later) both
take, in batches that stay under either database's limit on parameters. `update_with_history`
is `simple_history`'s `bulk_update_with_history` on top of it: the same history rows, with the
same user, reason and type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models, transaction
from simple_history.utils import get_history_manager_for_model

# SQLite takes 32,766 parameters a statement, Postgres 65,535.
MAX_PARAMETERS = 30_000
# Text goes in as text: a cast to varchar(n) would cut a value too long without a word, where
# assigning text to the column refuses it.
_TEXT_TYPES = frozenset({"CharField", "TextField", "SlugField", "EmailField", "URLField"})


def _cast(field: models.Field[Any, Any]) -> str:
    """The placeholder of one value of `field` in the VALUES list."""
    if connection.vendor != "postgresql":
        return "%s"
    kind = "text" if field.get_internal_type() in _TEXT_TYPES else field.cast_db_type(connection)  # type: ignore[attr-defined]
    return f"CAST(%s AS {kind})"


def rows_update(
    objs: Sequence[models.Model], model: type[models.Model], fields: Sequence[str]
) -> int:
    """Write `fields` of every object in `objs` (all saved rows of `model`) to the database, as
    `bulk_update` does, in one statement per batch. Returns the number of rows updated."""
    if not objs or not fields:
        return 0
    meta = model._meta
    pk = meta.pk
    assert pk is not None  # noqa: S101  # every concrete model has one
    columns: list[models.Field[Any, Any]] = []
    for name in fields:
        field = meta.get_field(name)
        if not isinstance(field, models.Field) or field.many_to_many or field.primary_key:
            raise ValueError(f"{meta.label}.{name} cannot be updated in bulk")
        columns.append(field)
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    names = [quote(str(field.column)) for field in [pk, *columns]]
    row = "(" + ", ".join(_cast(field) for field in [pk, *columns]) + ")"
    assignments = ", ".join(f"{name} = v.{name}" for name in names[1:])
    batch = max(1, MAX_PARAMETERS // len(names))
    updated = 0
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        for start in range(0, len(objs), batch):
            chunk = objs[start : start + batch]
            params: list[Any] = []
            for obj in chunk:
                params.append(pk.get_db_prep_save(obj.pk, connection))
                for field in columns:
                    params.append(field.get_db_prep_save(getattr(obj, field.attname), connection))
            cursor.execute(
                f"WITH v ({', '.join(names)}) AS (VALUES {', '.join([row] * len(chunk))}) "  # noqa: S608  # nosec B608  # quoted names and placeholders only
                f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{names[0]} = v.{names[0]}",
                params,
            )
            if cursor.rowcount >= 0:
                updated += cursor.rowcount
            else:  # Python's sqlite3 counts no rows for a statement that starts WITH
                cursor.execute("SELECT changes()")
                updated += cursor.fetchone()[0]
    return updated


def update_with_history(
    objs: Sequence[models.Model],
    model: type[models.Model],
    fields: Sequence[str],
    *,
    by: Any,
    reason: str,
) -> int:
    """`rows_update`, and one history row ("~", changed) per object with `by` and `reason`
    (an object's own `_change_reason` or `_history_user` wins, as with simple_history)."""
    with transaction.atomic(savepoint=False):
        updated = rows_update(objs, model, fields)
        get_history_manager_for_model(model).bulk_history_create(
            objs, update=True, default_user=by, default_change_reason=reason
        )
    return updated
