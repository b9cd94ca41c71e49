"""Updating many rows in one statement, with their audit history.

Django's `bulk_update` writes a `CASE WHEN id = … THEN …` per row and field; compiling those
expressions costs far more than running the statement (an amendment re-planning a site spent
most of its time there). `rows_update` (and `keys_update`, by keys and values without model
instances) writes the same change as one statement: on Postgres `UPDATE … FROM unnest(…)` with
one array a column, or from a temporary table filled with `COPY` for COPY_UPDATE_FROM_ROWS
rows and more; on SQLite (3.33 and later) `WITH v (…) AS (VALUES …) UPDATE … FROM v` in
batches under its limit on parameters.
`update_with_history` is `simple_history`'s `bulk_update_with_history` on top of it, and
`create_with_history` its `bulk_create_with_history`: the same history rows, with the same
user, reason and type, copied from the rows just written by one `INSERT … SELECT` rather
than built as a model instance each. New rows go in through `rows_create`: on Postgres with
`COPY` (issue 13: bulk COPY for large plans), their keys drawn from the sequence first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone
from simple_history.utils import get_change_reason_from_object, get_history_manager_for_model

# SQLite takes 32,766 parameters a statement, Postgres 65,535.
MAX_PARAMETERS = 30_000
# Text goes in as text: a cast to varchar(n) would cut a value too long without a word, where
# assigning text to the column refuses it.
_TEXT_TYPES = frozenset({"CharField", "TextField", "SlugField", "EmailField", "URLField"})


def _pg_type(field: models.Field[Any, Any]) -> str:
    """The Postgres type a value of `field` is cast to."""
    if field.get_internal_type() in _TEXT_TYPES:
        return "text"
    return str(field.cast_db_type(connection))  # type: ignore[attr-defined]


def rows_update(
    objs: Sequence[models.Model], model: type[models.Model], fields: Sequence[str]
) -> int:
    """Write `fields` of every object in `objs` (all saved rows of `model`) to the database, as
    `bulk_update` does, in one statement per batch. Returns the number of rows updated."""
    if not objs or not fields:
        return 0
    columns = _updatable(model, fields)
    return _update_columns(model, columns, [_column(field, objs) for field in columns])


def keys_update(
    model: type[models.Model], keys: Sequence[Any], values: dict[str, Sequence[Any]]
) -> int:
    """`rows_update` without model instances: the row with key `keys[i]` gets, for each field
    named in `values`, its `values[field][i]` (prepared for the database as Django does)."""
    if not keys or not values:
        return 0
    columns = _updatable(model, list(values))
    return _update_columns(
        model,
        columns,
        [_prepared(columns[0], keys)]
        + [_prepared(field, values[field.name]) for field in columns[1:]],
    )


def _updatable(model: type[models.Model], fields: Sequence[str]) -> list[models.Field[Any, Any]]:
    """The primary key, then the fields named: those a bulk update can write."""
    meta = model._meta
    assert meta.pk is not None  # noqa: S101  # every concrete model has one
    columns: list[models.Field[Any, Any]] = [meta.pk]
    for name in fields:
        field = meta.get_field(name)
        if not isinstance(field, models.Field) or field.many_to_many or field.primary_key:
            raise ValueError(f"{meta.label}.{name} cannot be updated in bulk")
        columns.append(field)
    return columns


def _update_columns(
    model: type[models.Model], fields: list[models.Field[Any, Any]], values: list[list[Any]]
) -> int:
    """Row i gets `values[j][i]` for each field j after the first, the key (all prepared)."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = [quote(str(field.column)) for field in fields]
    assignments = ", ".join(f"{name} = v.{name}" for name in names[1:])
    if connection.vendor == "postgresql" and len(values[0]) >= COPY_UPDATE_FROM_ROWS:
        return _update_by_copy(table, fields, names, assignments, values)
    if connection.vendor == "postgresql":
        # One array a column, unnested: as many parameters as columns whatever the number of
        # rows, nothing to split in batches, and nothing for the driver to parse placeholder
        # by placeholder.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM unnest({_arrays(fields)}) "  # noqa: S608  # nosec B608  # quoted names and placeholders only
                f"AS v ({', '.join(names)}) WHERE {table}.{names[0]} = v.{names[0]}",
                values,
            )
            return int(cursor.rowcount)
    # SQLite: a VALUES list, in batches under its limit on parameters.
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    batch = max(1, MAX_PARAMETERS // len(names))
    rows = list(zip(*values, strict=True))
    updated = 0
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            cursor.execute(
                f"WITH v ({', '.join(names)}) AS (VALUES {', '.join([row] * len(chunk))}) "  # noqa: S608  # nosec B608  # quoted names and placeholders only
                f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{names[0]} = v.{names[0]}",
                [value for values_of_row in chunk for value in values_of_row],
            )
            if cursor.rowcount >= 0:
                updated += cursor.rowcount
            else:  # Python's sqlite3 counts no rows for a statement that starts WITH
                cursor.execute("SELECT changes()")
                updated += cursor.fetchone()[0]
    return updated


def history_record(
    model: type[models.Model],
    objs: Sequence[models.Model],
    *,
    by: Any,
    reason: str,
    history_type: str = "~",
) -> None:
    """One history row per object, copied from the row as stored now by
    `INSERT INTO … SELECT`, with `by` and `reason` (an object's own `_change_reason` or
    `_history_user` wins, as with simple_history). The rows simple_history's
    `bulk_history_create` makes, without building a model instance for each."""
    # Objects alike in who and why are written together.
    groups: dict[tuple[Any, str], list[Any]] = {}
    for obj in objs:
        # An object's own `_history_user`, None included (a system action's), as
        # simple_history's bulk writer reads it.
        user = getattr(obj, "_history_user", by)
        why = get_change_reason_from_object(obj) or reason
        groups.setdefault((getattr(user, "pk", user), why), []).append(obj.pk)
    at = timezone.now()  # one instant for every group, as simple_history's bulk writes
    for (user_id, why), pks in groups.items():
        keys_history_record(model, pks, by=user_id, reason=why, history_type=history_type, at=at)


# From this many rows on, Postgres updates from a temporary table filled with COPY rather than
# from arrays: the driver formats COPY rows in C where it dumps array elements one by one in
# Python. Updating the eleven columns an amendment writes of N visits (arrays, then COPY): 50
# rows 1.5 / 2.5 ms, 150 rows 3.2 / 3.5 ms, 400 rows 8.4 / 6.6 ms, 1,300 rows 40 / 26 ms,
# 4,400 rows 122 / 92 ms.
COPY_UPDATE_FROM_ROWS = 200


def _update_by_copy(
    table: str,
    fields: list[models.Field[Any, Any]],
    names: list[str],
    assignments: str,
    values: list[list[Any]],
) -> int:
    """Postgres: the new values COPY'd into a temporary table, then one `UPDATE … FROM` it."""
    staging = connection.ops.quote_name(f"bulk_update_{next(_staging_numbers)}")
    columns = ", ".join(
        f"{name} {_pg_type(field)}" for name, field in zip(names, fields, strict=True)
    )
    with transaction.atomic(savepoint=False), connection.cursor() as wrapper:
        wrapper.execute(f"CREATE TEMPORARY TABLE {staging} ({columns}) ON COMMIT DROP")
        _copy_rows(wrapper, f"COPY {staging} FROM STDIN", zip(*values, strict=True))
        # The second condition says again what the first does. It lets the planner find the
        # rows by their key: knowing nothing of a temporary table's rows, it would otherwise
        # read the whole table into a hash join for every call (a site's amendment updates a
        # few percent of a trial's visits, twenty sites twenty whole reads).
        key = names[0]
        wrapper.execute(
            f"UPDATE {table} SET {assignments} FROM {staging} AS v "  # noqa: S608  # nosec B608  # quoted names only
            f"WHERE {table}.{key} = v.{key} "
            f"AND {table}.{key} = ANY(ARRAY(SELECT {key} FROM {staging}))"
        )
        updated = int(wrapper.rowcount)
        wrapper.execute(f"DROP TABLE {staging}")
    return updated


_staging_numbers = itertools.count()


def _copy_rows(wrapper: Any, copy_sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """`COPY … FROM STDIN` of `rows` (prepared values) through the driver's cursor (Django's
    has no COPY), logged and its errors turned into Django's as Django's own statements are."""
    logged = getattr(wrapper, "debug_sql", None)
    with (
        connection.wrap_database_errors,
        logged(copy_sql) if logged else contextlib.nullcontext(),
        wrapper.cursor.copy(copy_sql) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def keys_history_record(
    model: type[models.Model],
    keys: Sequence[Any],
    *,
    by: Any,
    reason: str,
    history_type: str = "~",
    at: dt.datetime | None = None,
) -> None:
    """`history_record` of the rows with these keys, all by `by` (a user or their id), at
    `at` (now)."""
    if not keys or not getattr(settings, "SIMPLE_HISTORY_ENABLED", True):
        return
    history = get_history_manager_for_model(model).model
    pk = model._meta.pk
    assert pk is not None  # noqa: S101  # every concrete model has one
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in history.tracked_fields)  # type: ignore[attr-defined]
    user_column = history._meta.get_field("history_user").column  # type: ignore[union-attr]
    statement = (
        f"INSERT INTO {quote(history._meta.db_table)} ({columns}, history_date, "  # noqa: S608  # nosec B608  # quoted names and placeholders only
        f"history_change_reason, history_type, {quote(user_column)}) "
        f"SELECT {columns}, %s, %s, %s, %s FROM {quote(model._meta.db_table)} "
        f"WHERE {quote(pk.column)} "
    )
    now = connection.ops.adapt_datetimefield_value(at or timezone.now())
    user_id = getattr(by, "pk", by)
    why = None if reason is None else str(reason)  # a lazily translated reason, as text
    with connection.cursor() as cursor:
        for where, params in _keys_in(pk, keys):
            cursor.execute(statement + where, [now, why, history_type, user_id, *params])


def _keys_in(pk: models.Field[Any, Any], pks: Sequence[Any]) -> list[tuple[str, list[Any]]]:
    """`pk IN (…)` for many keys, as (SQL after the column, parameters) per statement. On
    Postgres one array, `= ANY(…)`: one parameter however many keys (the driver parses a
    statement placeholder by placeholder); elsewhere a placeholder a key, in batches under
    the limit on parameters."""
    if connection.vendor == "postgresql":
        return [(f"= ANY(CAST(%s AS {_pg_type(pk)}[]))", [list(pks)])]
    return [
        ("IN (" + ", ".join(["%s"] * len(chunk)) + ")", list(chunk))
        for chunk in (
            pks[start : start + MAX_PARAMETERS] for start in range(0, len(pks), MAX_PARAMETERS)
        )
    ]


# Columns whose Python values of exactly this type Django hands to the driver unchanged
# (`get_db_prep_save` of an int, bool, date or str is the value itself): such values skip
# it, which was a fifth of an amendment's time. Any other value (None aside) goes through
# Django's preparation as before: a datetime in a date column, a string in an integer one.
_PASSED_AS_IS: dict[str, type] = {
    "AutoField": int,
    "BigAutoField": int,
    "IntegerField": int,
    "BigIntegerField": int,
    "SmallIntegerField": int,
    "PositiveIntegerField": int,
    "PositiveBigIntegerField": int,
    "PositiveSmallIntegerField": int,
    "BooleanField": bool,
    "DateField": dt.date,
    "CharField": str,
    "TextField": str,
}


def _column(field: models.Field[Any, Any], objs: Sequence[models.Model]) -> list[Any]:
    """Every object's value of `field`, prepared for the database."""
    attname = field.attname
    return _prepared(field, [getattr(obj, attname) for obj in objs])


def _prepared(field: models.Field[Any, Any], values: Sequence[Any]) -> list[Any]:
    """`values` of `field` prepared for the database (`get_db_prep_save`)."""
    target = field.target_field if field.is_relation else field  # type: ignore[attr-defined]
    plain = _PASSED_AS_IS.get(target.get_internal_type())
    prepare = field.get_db_prep_save
    if connection.vendor == "postgresql" and plain is None:
        # Postgres also takes an aware instant and a UUID as they are (what
        # `adapt_datetimefield_value` and a native uuid column give back); a naive instant
        # still goes through Django, which warns of it and makes it aware.
        plain = _PASSED_AS_IS_ON_POSTGRES.get(target.get_internal_type())
        if plain is dt.datetime:
            return [
                value
                if value is None or (type(value) is dt.datetime and value.tzinfo is not None)
                else prepare(value, connection)
                for value in values
            ]
    return [
        value if value is None or type(value) is plain else prepare(value, connection)
        for value in values
    ]


_PASSED_AS_IS_ON_POSTGRES: dict[str, type] = {"DateTimeField": dt.datetime, "UUIDField": uuid.UUID}


def _arrays(fields: Sequence[models.Field[Any, Any]]) -> str:
    """Postgres: a placeholder for each field's column of values, cast to an array of its
    type, for `unnest(…)`: as many parameters as columns, whatever the number of rows."""
    return ", ".join(f"CAST(%s AS {_pg_type(field)}[])" for field in fields)


def _as_inserted(field: models.Field[Any, Any], objs: Sequence[models.Model]) -> list[Any]:
    """Each object's value of `field` as Django's INSERT writes it: `pre_save` (auto_now_add),
    then the database's preparation. A field whose `pre_save` only reads the attribute (all
    but dates stamped automatically, and fields with a `pre_save` of their own) is read as
    `_column` reads it."""
    plain_pre_save = type(field).pre_save is models.Field.pre_save or (
        isinstance(field, models.DateField)
        and type(field).pre_save in (models.DateField.pre_save, models.DateTimeField.pre_save)
        and not field.auto_now
        and not field.auto_now_add
    )
    if plain_pre_save:
        return _column(field, objs)
    if (
        isinstance(field, models.DateTimeField)
        and type(field).pre_save is models.DateTimeField.pre_save
        and (field.auto_now or field.auto_now_add)
    ):
        # What its `pre_save` does for each new row, with one reading of the clock for all
        # of them (written in one statement, they are added at the same moment).
        now = timezone.now()
        for obj in objs:
            setattr(obj, field.attname, now)
        return _column(field, objs)
    return [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objs]


def _check_related(objs: Sequence[models.Model]) -> None:
    """What Model.save() checks: an unsaved related object is refused, a related object saved
    since it was assigned gives its key."""
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]


def update_with_history(
    objs: Sequence[models.Model],
    model: type[models.Model],
    fields: Sequence[str],
    *,
    by: Any,
    reason: str,
) -> int:
    """`rows_update`, and one history row ("~", changed) per object with `by` and `reason`."""
    with transaction.atomic(savepoint=False):
        updated = rows_update(objs, model, fields)
        if objs:
            history_record(model, objs, by=by, reason=reason)
    return updated


def keys_update_with_history(
    model: type[models.Model],
    keys: Sequence[Any],
    values: dict[str, Sequence[Any]],
    *,
    by: Any,
    reason: str,
) -> int:
    """`keys_update`, and one history row ("~", changed) per row with `by` and `reason`."""
    with transaction.atomic(savepoint=False):
        updated = keys_update(model, keys, values)
        keys_history_record(model, keys, by=by, reason=reason)
    return updated


def create_with_history(
    objs: Sequence[models.Model], model: type[models.Model], *, by: Any, reason: str
) -> list[Any]:
    """`bulk_create`, and one history row ("+", created) per object with `by` and `reason`;
    simple_history's `bulk_create_with_history` without a model instance per history row.
    Needs a database that returns the new primary keys (Postgres, SQLite 3.35 and later)."""
    if not objs:
        return []
    with transaction.atomic(savepoint=False):
        created = rows_create(objs, model)
        if any(obj.pk is None for obj in created):
            raise RuntimeError(f"{connection.vendor} did not return the new rows' keys")
        history_record(model, created, by=by, reason=reason, history_type="+")
    return created


def keys_delete_with_history(
    model: type[models.Model], keys: Sequence[Any], *, by: Any, reason: str
) -> int:
    """Delete the rows with these keys, with one history row ("-", deleted) each with `by`
    and `reason`: the rows simple_history's `post_delete` records (as stored, just before they
    go), with two statements however many there are instead of two each, and no model
    instances. For models no other row points at (refused otherwise)."""
    if not keys:
        return 0
    _refuse_pointed_at(model)
    with transaction.atomic(savepoint=False):
        keys_history_record(model, keys, by=by, reason=reason, history_type="-")
        return _delete_keys(model, keys)


def _delete_keys(model: type[models.Model], keys: Sequence[Any]) -> int:
    quote = connection.ops.quote_name
    pk = model._meta.pk
    assert pk is not None  # noqa: S101  # every concrete model has one
    statement = f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(pk.column)} "  # noqa: S608  # nosec B608  # quoted names and placeholders only
    deleted = 0
    with connection.cursor() as cursor:
        for where, params in _keys_in(pk, keys):
            cursor.execute(statement + where, params)
            deleted += cursor.rowcount
    return deleted


def _refuse_pointed_at(model: type[models.Model]) -> None:
    """Django's `delete()` would cascade to rows pointing at these; there is nothing here to
    cascade with."""
    pointed_at = [
        relation.related_model
        for relation in model._meta.related_objects
        if relation.related_model is not get_history_manager_for_model(model).model
    ]
    if pointed_at:
        raise ValueError(f"{model.__name__} rows are pointed at by {pointed_at}; use delete()")


# From this many rows on, Postgres writes new rows with COPY (below it, one INSERT costs less
# than the extra round trip for the keys).
COPY_FROM_ROWS = 20


def rows_add_new(objs: Sequence[models.Model], model: type[models.Model]) -> None:
    """`bulk_create(objs, ignore_conflicts=True)`: a row a unique constraint already holds is
    left as it is and this one not written, and no keys come back (as with Django's). On
    Postgres one statement of one array a column (`INSERT … SELECT … FROM unnest(…) ON
    CONFLICT DO NOTHING`) instead of a placeholder per value; defaults, `pre_save` and value
    preparation are Django's own. Elsewhere Django's `bulk_create`."""
    objs = list(objs)
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    if (
        connection.vendor != "postgresql"
        or not objs
        or meta.parents  # multi-table inheritance
        or any(obj.pk is not None for obj in objs)  # keys given
        or any(field.get_internal_type() == "JSONField" for field in fields)  # no jsonb[] cast
    ):
        model._default_manager.bulk_create(objs, ignore_conflicts=True)
        return
    _check_related(objs)
    values = [_as_inserted(field, objs) for field in fields]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    insert = f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608  # nosec B608  # quoted names only
    if len(objs) >= COPY_UPDATE_FROM_ROWS:
        _add_new_by_copy(model, fields, zip(*values, strict=True))
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"{insert}SELECT * FROM unnest({_arrays(fields)}) ON CONFLICT DO NOTHING",  # noqa: S608  # nosec B608  # quoted names and placeholders only
            values,
        )


def _add_new_by_copy(
    model: type[models.Model],
    fields: Sequence[models.Field[Any, Any]],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Postgres, many rows (values of `fields`, prepared): COPY'd into a temporary table
    (formatted by the driver in C, where it dumps array elements one by one in Python), then
    inserted from it, a row a unique constraint already holds left out."""
    quote = connection.ops.quote_name
    staging = quote(f"bulk_insert_{next(_staging_numbers)}")
    names = [quote(f"c{number}") for number in range(len(fields))]
    typed = ", ".join(
        f"{name} {_pg_type(field)}" for name, field in zip(names, fields, strict=True)
    )
    columns = ", ".join(quote(field.column) for field in fields)
    with transaction.atomic(savepoint=False), connection.cursor() as wrapper:
        wrapper.execute(f"CREATE TEMPORARY TABLE {staging} ({typed}) ON COMMIT DROP")
        _copy_rows(wrapper, f"COPY {staging} FROM STDIN", rows)
        wrapper.execute(
            f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "  # noqa: S608  # nosec B608  # quoted names only
            f"SELECT {', '.join(names)} FROM {staging} ON CONFLICT DO NOTHING"
        )
        wrapper.execute(f"DROP TABLE {staging}")


def _copy_new(
    model: type[models.Model],
    fields: Sequence[models.Field[Any, Any]],
    rows: Iterable[Sequence[Any]],
    count: int,
) -> list[Any]:
    """Postgres: `count` keys drawn from the table's sequence in one query, and the rows
    (values of `fields`, prepared) written with them by `COPY`. Returns the keys, in order."""
    meta = model._meta
    pk = meta.pk
    assert pk is not None  # noqa: S101  # every concrete model has one
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in [pk, *fields])
    with connection.cursor() as wrapper:
        wrapper.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, pk.column, count],
        )
        keys = [key for (key,) in wrapper.fetchall()]
        _copy_rows(
            wrapper,
            f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN",  # nosec B608  # quoted names only
            ((key, *row) for key, row in zip(keys, rows, strict=True)),
        )
    return keys


def rows_create(objs: Sequence[models.Model], model: type[models.Model]) -> list[Any]:
    """`bulk_create(objs)` (new rows, each given its primary key), without the SQL compiled
    value by value: on Postgres, for COPY_FROM_ROWS rows or more, the keys are drawn from the
    table's sequence in one query and the rows written with `COPY`; otherwise Django's
    `bulk_create`. Field defaults, `pre_save` (auto_now_add) and database preparation are
    Django's own; a constraint violated raises Django's IntegrityError, as `bulk_create` does."""
    objs = list(objs)
    if connection.vendor != "postgresql" or len(objs) < COPY_FROM_ROWS:
        return model._default_manager.bulk_create(objs)
    meta = model._meta
    if any(obj.pk is not None for obj in objs) or meta.parents:
        return model._default_manager.bulk_create(objs)  # keys given, or multi-table
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    _check_related(objs)
    keys = _copy_new(
        model,
        fields,
        zip(*(_as_inserted(field, objs) for field in fields), strict=True),
        len(objs),
    )
    for key, obj in zip(keys, objs, strict=True):
        obj.pk = key
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


# ----------------------------------------------------------------------------------------
# New rows from plain values
#
# A cohort's calendars are hundreds of thousands of new rows. Building a model instance for
# each (13 µs), checking its related objects and reading its values back out cost more than
# writing the row; `values_create` and `values_add_new` take each row's values as a tuple and
# write them as `rows_create` and `rows_add_new` write instances.


def values_create(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[Any]:
    """`rows_create` without model instances: the new row i has `rows[i][j]` in the field
    named `fields[j]` (a relation by its key: `participant_id`), and every other field its
    default, as a new instance would (a callable default called for each row,
    `auto_now_add` the statement's instant). Returns the new rows' keys, in order."""
    if not rows:
        return []
    if connection.vendor != "postgresql" or len(rows) < COPY_FROM_ROWS:
        made = rows_create(_instances(model, fields, rows), model)
        return [obj.pk for obj in made]
    every_field, full_rows = _full_rows(model, fields, rows)
    return _copy_new(model, every_field, full_rows, len(rows))


def values_create_with_history(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    by: Any,
    reason: str,
) -> list[Any]:
    """`values_create`, and one history row ("+", created) per row with `by` and `reason`
    (`create_with_history` without model instances)."""
    if not rows:
        return []
    with transaction.atomic(savepoint=False):
        keys = values_create(model, fields, rows)
        keys_history_record(model, keys, by=by, reason=reason, history_type="+")
    return keys


def values_add_new(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """`rows_add_new` without model instances (the rows given as `values_create` takes them):
    a row a unique constraint already holds is left as it is and this one not written."""
    if not rows:
        return
    if (
        connection.vendor != "postgresql"
        or len(rows) < COPY_UPDATE_FROM_ROWS
        or any(field.get_internal_type() == "JSONField" for field in model._meta.concrete_fields)
    ):
        rows_add_new(_instances(model, fields, rows), model)
        return
    _add_new_by_copy(model, *_full_rows(model, fields, rows))


def _instances(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[models.Model]:
    """The model instances `rows` describe (where instances are written: SQLite, few rows)."""
    attnames = [field.attname for field in _given_fields(model, fields, rows)]
    return [model(**dict(zip(attnames, row, strict=True))) for row in rows]


def _given_fields(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]] = ()
) -> list[models.Field[Any, Any]]:
    """The fields named, each a column of the model's own other than its key, once; refused
    unless each of `rows` has a value for each."""
    meta = model._meta
    given: list[models.Field[Any, Any]] = []
    for name in fields:
        field = meta.get_field(name)
        if not isinstance(field, models.Field) or field.primary_key or not field.concrete:
            raise ValueError(f"{meta.label}.{name} cannot be given as a value")
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            # Django's save stamps it over any value given; so does `values_create`.
            raise ValueError(f"{meta.label}.{name} is stamped when written; leave it out")
        given.append(field)
    if len({field.name for field in given}) != len(given):
        raise ValueError(f"{meta.label}: a field named twice in {list(fields)}")
    for number, row in enumerate(rows):
        if len(row) != len(given):
            raise ValueError(
                f"{meta.label}: row {number} has {len(row)} values for {len(given)} fields"
            )
    return given


# `pre_save`s that only read the attribute (or stamp `auto_now`, handled apart).
_PLAIN_PRE_SAVES = (models.Field.pre_save, models.DateField.pre_save, models.DateTimeField.pre_save)


def _full_rows(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[models.Field[Any, Any]], Iterable[tuple[Any, ...]]]:
    """Every field but the key, and each row's values of them prepared for the database:
    those given, then the defaults of the rest. Refuses a field whose value a new instance
    would compute on save (a `pre_save` of its own), which plain values cannot stand for."""
    meta = model._meta
    given = _given_fields(model, fields, rows)
    named = {field.name for field in given}
    rest = [
        field for field in meta.concrete_fields if not field.primary_key and field.name not in named
    ]
    columns: list[list[Any]] = [
        _prepared(field, [row[j] for row in rows]) for j, field in enumerate(given)
    ]
    now = timezone.now()
    for field in rest:
        if isinstance(field, models.DateField) and (field.auto_now or field.auto_now_add):
            value: Any = now if isinstance(field, models.DateTimeField) else now.date()
            columns.append([field.get_db_prep_save(value, connection)] * len(rows))
        elif (
            type(field).pre_save not in _PLAIN_PRE_SAVES
            or field.db_default is not models.NOT_PROVIDED
        ):
            # Computed on save, or by the database (which COPY, naming every column, skips).
            raise ValueError(f"{meta.label}.{field.name} is computed on save; give its value")
        elif callable(field.default):
            columns.append(_prepared(field, [field.get_default() for _ in rows]))
        else:
            columns.append([field.get_db_prep_save(field.get_default(), connection)] * len(rows))
    return [*given, *rest], zip(*columns, strict=True)
