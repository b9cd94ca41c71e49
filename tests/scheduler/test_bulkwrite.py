"""Updating many rows in one statement (`scheduler.bulkwrite`), on whichever database the suite
runs on: SQLite in `make test` on a laptop, Postgres in CI."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from participants.models import Participant
from scheduler import bulkwrite
from scheduler.bulkwrite import (
    create_with_history,
    history_record,
    keys_delete_with_history,
    keys_update_with_history,
    rows_add_new,
    rows_update,
    update_with_history,
)
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.services import participant_enroll
from tests.factories import participant_for
from trials.models import ProcedureDefinition, ProtocolVersion

D = dt.date
VISIT_FIELDS = [
    "status",
    "reason",
    "visit_definition",
    "occurrence",
    "target_date",
    "window_start",
    "window_end",
    "estimated",
    "booked_date",
    "booked_start",
    "deviation_days",
    "version",
    "ical_sequence",
]


def _enrolled(version: ProtocolVersion, study_id: str, **anchors: dt.date) -> Participant:
    participant = participant_for(
        version,
        anchors=anchors,
        birth_date=D(1980, 6, 15),
        weight_kg=Decimal("60"),
        study_id=study_id,
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


@pytest.fixture
def jasmine(import_seed: Any) -> Participant:
    return _enrolled(import_seed("002"), "J-001", day1=D(2026, 3, 2))


@pytest.fixture(params=["arrays", "copy"])
def update_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Postgres updates from arrays below COPY_UPDATE_FROM_ROWS rows, from a table filled
    with COPY from there on: each test taking this runs both (SQLite has one way)."""
    monkeypatch.setattr(bulkwrite, "COPY_UPDATE_FROM_ROWS", 1 if request.param == "copy" else 10**9)
    return str(request.param)


def _visits(participant: Participant) -> list[ScheduledVisit]:
    return list(participant.visits.order_by("id"))


def _stored(participant: Participant) -> list[dict[str, Any]]:
    return list(participant.visits.order_by("id").values("id", *VISIT_FIELDS))


def _change(visits: list[ScheduledVisit]) -> None:
    """A change of every kind of value, NULLs to values and values to NULLs among them."""
    definitions = [v.visit_definition for v in visits]
    for i, visit in enumerate(visits):
        visit.status = ScheduledVisit.Status.BOOKED if i % 2 else ScheduledVisit.Status.CANCELLED
        visit.reason = f"réplanifié n° {i} — 'quoted' \"too\"; DROP TABLE x; --"
        visit.visit_definition = definitions[(i + 1) % len(definitions)]
        visit.occurrence = 1000 + i
        visit.target_date = visit.target_date + dt.timedelta(days=i)
        visit.window_start = visit.window_start + dt.timedelta(days=i - 1)
        visit.window_end = visit.window_end + dt.timedelta(days=i + i % 3)
        visit.estimated = not visit.estimated
        visit.booked_date = visit.target_date if i % 2 else None
        visit.booked_start = (
            dt.datetime(2026, 4, 1, 9, 30, tzinfo=dt.UTC) + dt.timedelta(hours=i) if i % 2 else None
        )
        visit.deviation_days = -i if i % 3 else None
        visit.version += 1
        visit.ical_sequence += 2


def _twins(import_seed: Any) -> tuple[Participant, Participant, list[Any], list[Any]]:
    """Two JASMINE participants alike, and their visits changed alike (not saved)."""
    version = import_seed("002")
    mine = _enrolled(version, "J-001", day1=D(2026, 3, 2))
    theirs = _enrolled(version, "J-002", day1=D(2026, 3, 2))
    ours, others = _visits(mine), _visits(theirs)
    _change(ours)
    _change(others)
    return mine, theirs, ours, others


def test_rows_update_writes_what_bulk_update_writes(import_seed: Any, update_path: str) -> None:
    mine, django, ours, theirs = _twins(import_seed)

    assert rows_update(ours, ScheduledVisit, VISIT_FIELDS) == 54
    ScheduledVisit.objects.bulk_update(theirs, VISIT_FIELDS)

    written, expected = _stored(mine), _stored(django)
    assert [{k: v for k, v in row.items() if k != "id"} for row in written] == [
        {k: v for k, v in row.items() if k != "id"} for row in expected
    ]
    # Exactly the values set, read back.
    assert written[1]["reason"] == "réplanifié n° 1 — 'quoted' \"too\"; DROP TABLE x; --"
    assert written[1]["booked_start"] == dt.datetime(2026, 4, 1, 10, 30, tzinfo=dt.UTC)
    assert written[0]["booked_start"] is None and written[0]["deviation_days"] is None
    assert written[2]["deviation_days"] == -2
    # Nothing else in the table moved.
    assert (
        ScheduledVisit.objects.exclude(participant=mine).filter(reason__contains="DROP").count()
        == 54
    )


def test_rows_update_writes_decimals_and_nulls(import_seed: Any, update_path: str) -> None:
    participant = _enrolled(
        import_seed("001"), "T-001", psl_start=D(2026, 3, 2), day1=D(2026, 3, 16)
    )
    milestones = list(ScheduledMilestone.objects.filter(participant=participant).order_by("id"))
    assert len(milestones) > 3
    doses = [Decimal("12.50"), None, Decimal("0.25"), Decimal("17.5")]
    for i, milestone in enumerate(milestones):
        milestone.dose_mg = doses[i % 4]
        milestone.flag = "" if i % 2 else "check the dose"
    assert rows_update(milestones, ScheduledMilestone, ["dose_mg", "flag"]) == len(milestones)
    stored = list(
        ScheduledMilestone.objects.filter(participant=participant)
        .order_by("id")
        .values_list("dose_mg", "flag")
    )
    assert stored == [(doses[i % 4], "" if i % 2 else "check the dose") for i in range(len(stored))]


def test_rows_update_splits_batches_under_the_parameter_limit(
    jasmine: Participant, monkeypatch: pytest.MonkeyPatch
) -> None:
    visits = _visits(jasmine)
    # 3 parameters a row (id and two fields): at most 4 rows a statement.
    monkeypatch.setattr(bulkwrite, "MAX_PARAMETERS", 12)
    for i, visit in enumerate(visits):
        visit.reason = f"batch {i}"
        visit.version = 100 + i
    with CaptureQueriesContext(connection) as queries:
        assert rows_update(visits, ScheduledVisit, ["reason", "version"]) == 54
    updates = [q for q in queries.captured_queries if "UPDATE" in q["sql"]]
    # SQLite: 54 rows, 4 a statement. Postgres: one array a column, one statement.
    assert len(updates) == (1 if connection.vendor == "postgresql" else 14)
    assert list(jasmine.visits.order_by("id").values_list("reason", "version")) == [
        (f"batch {i}", 100 + i) for i in range(54)
    ]


def test_rows_update_is_one_statement_for_a_calendar(jasmine: Participant) -> None:
    visits = _visits(jasmine)
    for visit in visits:
        visit.version += 1
    with CaptureQueriesContext(connection) as queries:
        rows_update(visits, ScheduledVisit, VISIT_FIELDS)
    statements = [q["sql"] for q in queries.captured_queries if "changes()" not in q["sql"]]
    assert len(statements) == 1
    assert ("unnest(" in statements[0]) == (connection.vendor == "postgresql")


SAVEPOINTS = ("SAVEPOINT", "RELEASE", "ROLLBACK")


def test_large_updates_on_postgres_copy_into_a_table_dropped_after(
    jasmine: Participant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From COPY_UPDATE_FROM_ROWS rows on: a temporary table, COPY, one UPDATE, the table
    dropped; twice in one transaction, each its own table."""
    monkeypatch.setattr(bulkwrite, "COPY_UPDATE_FROM_ROWS", 50)
    visits = _visits(jasmine)
    for visit in visits:
        visit.version += 5
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        assert rows_update(visits, ScheduledVisit, ["version"]) == 54
        assert rows_update(visits[:49], ScheduledVisit, ["version"]) == 49
    statements = [
        q["sql"] for q in queries.captured_queries if q["sql"].split()[0] not in SAVEPOINTS
    ]
    if connection.vendor == "postgresql":
        assert [sql.split()[0] for sql in statements] == [
            "CREATE",
            "COPY",
            "UPDATE",
            "DROP",
            "UPDATE",  # 49 rows: from arrays
        ]
        assert statements[1].startswith('COPY "bulk_update_')
        assert statements[2].split("FROM")[1].split()[0] == statements[1].split()[1]
        # The rows are found by key (an index), not by reading the whole table.
        staging = statements[1].split()[1]
        assert statements[2].endswith(
            f'AND "scheduler_scheduledvisit"."id" = ANY(ARRAY(SELECT "id" FROM {staging}))'
        )
        assert "unnest(" in statements[4]
    assert set(jasmine.visits.values_list("version", flat=True)) == {6}


def test_text_too_long_for_its_column_is_never_cut(jasmine: Participant, update_path: str) -> None:
    [visit, other] = _visits(jasmine)[:2]
    visit.status = "x" * 11  # the column holds 10
    other.status = ScheduledVisit.Status.CANCELLED
    if connection.vendor == "postgresql":
        with pytest.raises(DataError), transaction.atomic():
            rows_update([other, visit], ScheduledVisit, ["status"])
        # The whole statement was refused: neither row changed.
        assert set(jasmine.visits.values_list("status", flat=True)) == {"planned"}
    else:
        # SQLite keeps text whole whatever the declared length.
        rows_update([other, visit], ScheduledVisit, ["status"])
        assert ScheduledVisit.objects.get(pk=visit.pk).status == "x" * 11


def test_fields_that_cannot_be_updated_in_bulk_are_refused(jasmine: Participant) -> None:
    visits = _visits(jasmine)
    with pytest.raises(ValueError, match="scheduler.ScheduledVisit.id cannot be updated in bulk"):
        rows_update(visits, ScheduledVisit, ["id"])
    with pytest.raises(ValueError, match="ScheduledVisit.procedures cannot be updated in bulk"):
        rows_update(visits, ScheduledVisit, ["procedures"])
    assert rows_update([], ScheduledVisit, ["status"]) == 0


def test_update_with_history_records_who_and_why(
    jasmine: Participant, django_user_model: Any
) -> None:
    coordinator = django_user_model.objects.create_user("coordinator")
    visits = _visits(jasmine)[:3]
    for visit in visits:
        visit.reason = "moved"
    visits[2]._change_reason = "its own reason"  # type: ignore[attr-defined]
    assert (
        update_with_history(visits, ScheduledVisit, ["reason"], by=coordinator, reason="why") == 3
    )
    history = [
        visit.history.order_by("-history_id").values_list(
            "history_type", "history_user__username", "history_change_reason", "reason"
        )[0]
        for visit in visits
    ]
    assert history == [
        ("~", "coordinator", "why", "moved"),
        ("~", "coordinator", "why", "moved"),
        ("~", "coordinator", "its own reason", "moved"),
    ]


HISTORY_IGNORED = {"history_id", "history_date", "id", "participant_id", "ical_uid", "visit_id"}


def _history(model: Any, **filters: Any) -> list[dict[str, Any]]:
    rows = model.history.filter(**filters).order_by("history_id").values()
    return sorted(
        ({k: v for k, v in row.items() if k not in HISTORY_IGNORED} for row in rows),
        key=repr,
    )


def test_history_rows_are_the_ones_simple_history_writes(
    import_seed: Any, django_user_model: Any
) -> None:
    from simple_history.utils import bulk_create_with_history, bulk_update_with_history

    coordinator = django_user_model.objects.create_user("coordinator")
    mine, theirs, ours, others = _twins(import_seed)
    ours[5]._change_reason = others[5]._change_reason = "its own"  # type: ignore[attr-defined]
    update_with_history(ours, ScheduledVisit, VISIT_FIELDS, by=coordinator, reason="amended")
    bulk_update_with_history(
        others,
        ScheduledVisit,
        VISIT_FIELDS,
        default_user=coordinator,
        default_change_reason="amended",
    )
    written = _history(ScheduledVisit, participant=mine, history_type="~")
    assert len(written) == 54
    assert written == _history(ScheduledVisit, participant=theirs, history_type="~")
    assert sorted(r["history_change_reason"] for r in written).count("its own") == 1

    # Created rows: each visit's procedures made again, both ways.
    for visits, create in ((ours, "ours"), (others, "theirs")):
        made = [
            ScheduledProcedure(visit=visit, procedure=procedure.procedure)
            for visit in visits[:10]
            for procedure in visit.procedures.all()
        ]
        ScheduledProcedure.objects.filter(visit__in=visits[:10]).delete()
        if create == "ours":
            created = create_with_history(made, ScheduledProcedure, by=coordinator, reason="again")
            assert all(row.pk for row in created) and len(created) == len(made) > 10
        else:
            bulk_create_with_history(
                made, ScheduledProcedure, default_user=coordinator, default_change_reason="again"
            )
    mine_created = _history(ScheduledProcedure, visit__participant_id=mine.pk, history_type="+")
    theirs_created = _history(ScheduledProcedure, visit__participant_id=theirs.pk, history_type="+")
    assert mine_created and mine_created == theirs_created


def test_history_follows_what_is_stored_and_by_whom(
    jasmine: Participant, django_user_model: Any
) -> None:
    coordinator = django_user_model.objects.create_user("coordinator")
    investigator = django_user_model.objects.create_user("investigator")
    [first, second] = _visits(jasmine)[:2]
    second._history_user = investigator  # type: ignore[attr-defined]
    history_record(
        ScheduledVisit, [first, second], by=coordinator, reason="looked", history_type="~"
    )
    rows = list(
        ScheduledVisit.history.filter(id__in=[first.pk, second.pk], history_type="~")
        .order_by("id")
        .values_list("id", "history_user__username", "history_change_reason", "target_date")
    )
    assert rows == [
        (first.pk, "coordinator", "looked", first.target_date),
        (second.pk, "investigator", "looked", second.target_date),
    ]
    assert create_with_history([], ScheduledVisit, by=coordinator, reason="none") == []


def _new_copies(visits: list[ScheduledVisit], participant: Participant) -> list[ScheduledVisit]:
    """New visits for `participant` with every value of `visits` (changed by `_change`, so
    NULLs, instants and text a COPY must escape among them), at occurrences of their own."""
    copies = []
    for visit in visits:
        copy = ScheduledVisit(
            participant=participant,
            protocol_version_id=visit.protocol_version_id,
            unscheduled_reason="tab\there, newline\nthere, backslash \\N and \\\\ — end",
            actual_start=visit.booked_start,
            actual_date=visit.booked_date,
        )
        for name in VISIT_FIELDS:
            setattr(copy, name, getattr(visit, name))
        copy.occurrence += 5000
        copies.append(copy)
    return copies


def _values(rows: list[ScheduledVisit]) -> list[dict[str, Any]]:
    left_out = {"id", "participant", "ical_uid"}
    fields = [f.attname for f in ScheduledVisit._meta.concrete_fields if f.name not in left_out]
    stored = ScheduledVisit.objects.filter(pk__in=[row.pk for row in rows]).order_by("occurrence")
    return list(stored.values(*fields))


def test_rows_create_writes_what_bulk_create_writes(import_seed: Any) -> None:
    mine, theirs, ours, others = _twins(import_seed)

    with CaptureQueriesContext(connection) as queries:
        created = bulkwrite.rows_create(_new_copies(ours, mine), ScheduledVisit)
    expected = ScheduledVisit.objects.bulk_create(_new_copies(others, theirs))

    assert len(created) == len(expected) == 54
    assert all(row.pk is not None and not row._state.adding for row in created)
    assert _values(created) == _values(expected)
    assert {row.pk for row in created} == set(
        ScheduledVisit.objects.filter(participant=mine, occurrence__gt=5000).values_list(
            "pk", flat=True
        )
    )
    # Postgres: the keys in one query, the rows in one COPY; SQLite: Django's bulk insert.
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        assert statements == ["SELECT", "COPY"]
    else:
        assert set(statements) == {"INSERT"}
    # Saved like any other: they change and delete as rows do.
    created[0].reason = "changed"
    created[0].save(update_fields=["reason"])
    assert ScheduledVisit.objects.get(pk=created[0].pk).reason == "changed"


def test_rows_create_refuses_a_duplicate_as_bulk_create_does(jasmine: Participant) -> None:
    from django.db import IntegrityError

    visits = _visits(jasmine)
    duplicates = _new_copies(visits, jasmine)
    for duplicate, visit in zip(duplicates, visits, strict=True):
        duplicate.occurrence = visit.occurrence  # unique_visit_occurrence
    before = ScheduledVisit.objects.count()

    with pytest.raises(IntegrityError), transaction.atomic():
        bulkwrite.rows_create(duplicates, ScheduledVisit)

    assert ScheduledVisit.objects.count() == before
    assert all(row.pk is None for row in duplicates)


def test_rows_create_under_the_threshold_and_with_keys_is_bulk_create(
    jasmine: Participant,
) -> None:
    few = _new_copies(_visits(jasmine)[: bulkwrite.COPY_FROM_ROWS - 1], jasmine)
    with CaptureQueriesContext(connection) as queries:
        bulkwrite.rows_create(few, ScheduledVisit)
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    assert all(row.pk for row in few)
    assert bulkwrite.rows_create([], ScheduledVisit) == []


def test_rows_update_prepares_values_of_another_type_as_bulk_update_does(
    import_seed: Any, update_path: str
) -> None:
    mine, django, ours, theirs = _twins(import_seed)
    fields = ["booked_date", "ical_sequence", "status"]
    for visits in (ours, theirs):
        for i, visit in enumerate(visits):
            # A datetime in a date column, a string in an integer one, a choice's member in a
            # text one: Django's preparation, not the value as it is.
            visit.booked_date = dt.datetime(2026, 5, 1, 23, 30, tzinfo=dt.UTC) + dt.timedelta(
                days=i
            )
            visit.ical_sequence = str(40 + i)
            visit.status = ScheduledVisit.Status.MISSED

    rows_update(ours, ScheduledVisit, fields)
    ScheduledVisit.objects.bulk_update(theirs, fields)

    written = [tuple(r[f] for f in fields) for r in _stored(mine)]
    assert written == [tuple(r[f] for f in fields) for r in _stored(django)]
    assert written[:2] == [(D(2026, 5, 1), 40, "missed"), (D(2026, 5, 2), 41, "missed")]

    # What goes to the driver: a plain value as it is, anything else as Django prepares it.
    booked = ScheduledVisit._meta.get_field("booked_date")
    sequence = ScheduledVisit._meta.get_field("ical_sequence")
    ours[0].booked_date, ours[1].booked_date = D(2026, 6, 1), None
    ours[0].ical_sequence = 7
    # The datetime left in the third: Postgres's driver takes the date, SQLite's its text.
    prepared = booked.get_db_prep_save(ours[2].booked_date, connection)
    assert prepared == {"postgresql": D(2026, 5, 3), "sqlite": "2026-05-03"}[connection.vendor]
    assert bulkwrite._column(booked, ours[:3]) == [D(2026, 6, 1), None, prepared]
    assert type(bulkwrite._column(booked, ours[:3])[2]) is type(prepared)
    assert bulkwrite._column(sequence, ours[:2]) == [7, 41]


def test_keys_delete_with_history_records_what_simple_history_records_on_delete(
    import_seed: Any, django_user_model: Any
) -> None:
    version = import_seed("002")
    mine = _enrolled(version, "J-001", day1=D(2026, 3, 2))
    theirs = _enrolled(version, "J-002", day1=D(2026, 3, 2))
    user = django_user_model.objects.create_user("coordinator")

    def procedures(participant: Participant) -> list[ScheduledProcedure]:
        return list(
            ScheduledProcedure.objects.filter(visit__participant=participant).order_by("id")[:5]
        )

    def deleted_history(participant: Participant) -> list[tuple[Any, ...]]:
        return list(
            ScheduledProcedure.history.filter(visit__participant=participant, history_type="-")
            .order_by("id")
            .values_list(
                "visit__occurrence",
                "procedure_id",
                "status",
                "history_change_reason",
                "history_user_id",
            )
        )

    ours, others = procedures(mine), procedures(theirs)
    with CaptureQueriesContext(connection) as queries:
        assert (
            keys_delete_with_history(
                ScheduledProcedure, [p.pk for p in ours], by=user, reason="amended"
            )
            == 5
        )
    for procedure in others:
        procedure._change_reason = "amended"  # type: ignore[attr-defined]
        procedure._history_user = user  # type: ignore[attr-defined]
        procedure.delete()

    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT", "DELETE"]
    assert not ScheduledProcedure.objects.filter(pk__in=[p.pk for p in ours]).exists()
    assert len(deleted_history(mine)) == 5
    assert deleted_history(mine) == deleted_history(theirs)
    assert deleted_history(mine)[0][3:] == ("amended", user.pk)
    assert keys_delete_with_history(ScheduledProcedure, [], by=user, reason="amended") == 0

    # A row others point at (a visit's procedures, holds, reminders) is not deleted this way.
    visit = ScheduledVisit.objects.filter(participant=mine).earliest("id")
    with pytest.raises(ValueError, match="ScheduledVisit rows are pointed at by"):
        keys_delete_with_history(ScheduledVisit, [visit.pk], by=user, reason="amended")
    assert ScheduledVisit.objects.filter(pk=visit.pk).exists()


def test_keys_update_with_history_writes_what_update_with_history_writes(
    import_seed: Any, django_user_model: Any
) -> None:
    """By keys and values, without model instances: the same rows, the same history rows
    (who, why, type), in one UPDATE and one INSERT."""
    version = import_seed("002")
    mine = _enrolled(version, "J-001", day1=D(2026, 3, 2))
    theirs = _enrolled(version, "J-002", day1=D(2026, 3, 2))
    user = django_user_model.objects.create_user("coordinator")
    other = ProcedureDefinition.objects.filter(version=version).order_by("-order")[0]

    def procedures(participant: Participant) -> list[ScheduledProcedure]:
        """One procedure of each of four visits that do not carry `other` (a visit carries a
        procedure once)."""
        carrying = set(
            ScheduledProcedure.objects.filter(procedure=other).values_list("visit_id", flat=True)
        )
        first: dict[int, ScheduledProcedure] = {}
        for row in ScheduledProcedure.objects.filter(visit__participant=participant).order_by("id"):
            if row.visit_id not in carrying:
                first.setdefault(row.visit_id, row)
        return list(first.values())[:4]

    def state(chosen: list[ScheduledProcedure]) -> list[tuple[Any, ...]]:
        rows = list(ScheduledProcedure.objects.filter(pk__in=[p.pk for p in chosen]).order_by("id"))
        history = ScheduledProcedure.history.filter(
            id__in=[p.pk for p in rows], history_type="~"
        ).order_by("id")
        return [(p.procedure_id, p.status, p.not_done_reason) for p in rows] + list(
            history.values_list(
                "procedure_id", "status", "history_change_reason", "history_user_id"
            )
        )

    ours, others = procedures(mine), procedures(theirs)
    with CaptureQueriesContext(connection) as queries:
        updated = keys_update_with_history(
            ScheduledProcedure,
            [p.pk for p in ours],
            {"procedure": [other.pk] * 4, "status": ["done"] * 3 + ["planned"]},
            by=user,
            reason="amended",
        )
    assert updated == 4
    for n, procedure in enumerate(others):
        procedure.procedure = other
        procedure.status = "done" if n < 3 else "planned"
    update_with_history(
        others, ScheduledProcedure, ["procedure", "status"], by=user, reason="amended"
    )

    # SQLite counts the rows a statement starting WITH changed with a query of its own.
    update = {"postgresql": ["UPDATE"], "sqlite": ["WITH", "SELECT"]}[connection.vendor]
    assert [q["sql"].split()[0] for q in queries.captured_queries] == [*update, "INSERT"]
    assert state(ours) == state(others)
    assert state(ours)[0] == (other.pk, "done", "")
    assert state(ours)[4:] == [(other.pk, "done", "amended", user.pk)] * 3 + [
        (other.pk, "planned", "amended", user.pk)
    ]
    assert keys_update_with_history(ScheduledProcedure, [], {}, by=user, reason="x") == 0


def _reminders_of(participant: Participant) -> list[dict[str, Any]]:
    """The participant's reminders as stored, but for their keys and when they were added."""
    from scheduler.models import Reminder

    return [
        {k: v for k, v in row.items() if k not in ("id", "created_at")}
        for row in Reminder.objects.filter(participant=participant)
        .order_by("due_at", "rule_code")
        .values()
    ]


def test_rows_add_new_writes_what_bulk_create_ignoring_conflicts_writes(
    import_seed: Any,
) -> None:
    """New reminders, one of them for a moment a stored row already holds: that row stays as
    it is, the others go in with Django's defaults and preparation, in one statement."""
    from scheduler.models import Reminder

    version = import_seed("002")
    mine = _enrolled(version, "J-001", day1=D(2026, 3, 2))
    held = Reminder.objects.filter(participant=mine).order_by("id").first()
    assert held is not None
    visit = ScheduledVisit.objects.filter(participant=mine).order_by("id")[3]
    at = dt.datetime(2026, 7, 1, 7, 30, tzinfo=dt.UTC)

    def rows() -> list[Reminder]:
        return [
            Reminder(
                participant=mine,
                visit=visit,
                target_key=f"visit:{visit.pk}",
                rule_code="R1",
                event="before_visit",
                channel="email",
                audience="participant",
                due_at=at,
                next_attempt_at=at,
                last_error='l\'erreur "citée"\tet\nla suite \\',
            ),
            Reminder(  # the held row's moment: not written
                participant=mine,
                target_key=held.target_key,
                rule_code=held.rule_code,
                event=held.event,
                channel=held.channel,
                audience=held.audience,
                due_at=held.due_at,
                next_attempt_at=held.due_at,
                attempts=9,
            ),
            Reminder(
                participant=mine,
                target_key="participant:x",
                rule_code="R2",
                event="welcome",
                channel="sms",
                audience="participant",
                due_at=at + dt.timedelta(minutes=1),
                next_attempt_at=at,
                status=Reminder.Status.FAILED,
                ical_sequence=3,
            ),
        ]

    before = _reminders_of(mine)
    outcomes = []
    for write in (
        lambda objs: rows_add_new(objs, Reminder),
        lambda objs: Reminder.objects.bulk_create(objs, ignore_conflicts=True),
    ):
        with transaction.atomic():
            with CaptureQueriesContext(connection) as queries:
                write(rows())
            outcomes.append((_reminders_of(mine), [q["sql"] for q in queries.captured_queries]))
            assert Reminder.objects.filter(created_at__isnull=True).count() == 0
            transaction.set_rollback(True)

    (ours, statements), (djangos, _) = outcomes
    assert ours == djangos
    assert len(statements) == 1
    # On Postgres one array a column, whatever the number of rows; SQLite keeps Django's.
    assert ("FROM unnest(" in statements[0]) == (connection.vendor == "postgresql")
    assert (
        statements[0].endswith("ON CONFLICT DO NOTHING")
        if connection.vendor == "postgresql"
        else statements[0].startswith("INSERT OR IGNORE")
    )
    assert len(ours) == len(before) + 2
    assert Reminder.objects.get(pk=held.pk).attempts == held.attempts
    added = [row for row in ours if row["rule_code"] in ("R1", "R2")]
    assert [
        (r["rule_code"], r["status"], r["attempts"], r["ical_sequence"], r["last_error"])
        for r in added
    ] == [
        ("R1", "pending", 0, None, 'l\'erreur "citée"\tet\nla suite \\'),
        ("R2", "failed", 0, 3, ""),
    ]


@pytest.fixture(params=["copy", "instances"])
def create_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """`values_create` and `values_add_new` write with COPY on Postgres from their thresholds
    on, and through model instances below them (and on SQLite): each test taking this runs
    both."""
    copy = request.param == "copy"
    monkeypatch.setattr(bulkwrite, "COPY_FROM_ROWS", 1 if copy else 10**9)
    monkeypatch.setattr(bulkwrite, "COPY_UPDATE_FROM_ROWS", 1 if copy else 10**9)
    return str(request.param)


GIVEN = [
    "participant",
    "protocol_version",
    "unscheduled_reason",
    "actual_start",
    "actual_date",
    *VISIT_FIELDS,
]


def _given(copies: list[ScheduledVisit]) -> list[tuple[Any, ...]]:
    """The values of `copies` as `values_create` takes them: relations by key."""
    attnames = [field.attname for field in bulkwrite._given_fields(ScheduledVisit, GIVEN)]
    return [tuple(getattr(copy, attname) for attname in attnames) for copy in copies]


def test_values_create_writes_what_bulk_create_writes(import_seed: Any, create_path: str) -> None:
    """The same rows as Django's `bulk_create` of the same instances: the values given (NULLs,
    instants and text COPY must escape among them), and the defaults of the rest (a UUID of
    its own for each, version 1, sequence 0)."""
    mine, theirs, ours, others = _twins(import_seed)

    with CaptureQueriesContext(connection) as queries:
        keys = bulkwrite.values_create(ScheduledVisit, GIVEN, _given(_new_copies(ours, mine)))
    expected = ScheduledVisit.objects.bulk_create(_new_copies(others, theirs))

    assert len(keys) == len(expected) == 54
    created = list(ScheduledVisit.objects.filter(pk__in=keys))
    assert sorted(keys) == sorted(row.pk for row in created)
    assert _values(created) == _values(expected)
    assert {row.participant_id for row in created} == {mine.pk}
    uids = {row.ical_uid for row in created}
    assert len(uids) == 54 and not uids & {row.ical_uid for row in expected}
    assert {(row.version, row.ical_sequence) for row in created} == {
        (visit.version, visit.ical_sequence) for visit in ours
    }
    # In the order given: row i's key is keys[i].
    by_key = {row.pk: row for row in created}
    assert [by_key[key].occurrence for key in keys] == [visit.occurrence + 5000 for visit in ours]
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    if connection.vendor == "postgresql" and create_path == "copy":
        assert statements == ["SELECT", "COPY"]
    else:
        assert set(statements) == {"INSERT"}


def test_values_create_defaults_the_fields_not_given(
    jasmine: Participant, create_path: str
) -> None:
    visit = _visits(jasmine)[0]
    [key] = bulkwrite.values_create(
        ScheduledVisit,
        ["participant", "visit_definition", "occurrence", "protocol_version"]
        + ["target_date", "window_start", "window_end"],
        [
            (
                jasmine.pk,
                visit.visit_definition_id,
                9001,
                visit.protocol_version_id,
                D(2027, 1, 4),
                D(2027, 1, 1),
                D(2027, 1, 8),
            )
        ],
    )
    stored = ScheduledVisit.objects.get(pk=key)
    assert (stored.status, stored.reason, stored.version, stored.ical_sequence) == (
        "planned",
        "",
        1,
        0,
    )
    assert (stored.booked_start, stored.deviation_days, stored.estimated) == (None, None, False)
    assert stored.ical_uid is not None and stored.ical_uid != visit.ical_uid


def test_values_create_with_history_records_who_and_why(
    jasmine: Participant, django_user_model: Any, create_path: str
) -> None:
    coordinator = django_user_model.objects.create_user("coordinator")
    visits = _visits(jasmine)[:3]
    ScheduledProcedure.objects.filter(visit__in=visits).delete()
    procedure = ProcedureDefinition.objects.filter(version=jasmine.protocol_version).first()
    assert procedure is not None
    keys = bulkwrite.values_create_with_history(
        ScheduledProcedure,
        ["visit", "procedure"],
        [(visit.pk, procedure.pk) for visit in visits],
        by=coordinator,
        reason="added by hand",
    )
    history = ScheduledProcedure.history.filter(id__in=keys).order_by("id")
    assert [(h.id, h.visit_id, h.status, h.history_type) for h in history] == [
        (key, visit.pk, "planned", "+") for key, visit in zip(keys, visits, strict=True)
    ]
    assert {(h.history_user_id, h.history_change_reason) for h in history} == {
        (coordinator.pk, "added by hand")
    }
    assert (
        bulkwrite.values_create_with_history(
            ScheduledProcedure, ["visit"], [], by=coordinator, reason="x"
        )
        == []
    )


def test_values_create_refuses_a_duplicate_and_writes_nothing(
    jasmine: Participant, create_path: str
) -> None:
    from django.db import IntegrityError

    visits = _visits(jasmine)
    rows = _given(_new_copies(visits, jasmine))
    occurrence = GIVEN.index("occurrence")
    rows[-1] = (*rows[-1][:occurrence], visits[-1].occurrence, *rows[-1][occurrence + 1 :])
    before = ScheduledVisit.objects.count()

    with pytest.raises(IntegrityError), transaction.atomic():
        bulkwrite.values_create(ScheduledVisit, GIVEN, rows)

    assert ScheduledVisit.objects.count() == before


@pytest.mark.parametrize(
    ("model_name", "fields", "message"),
    [
        ("ScheduledVisit", ["id", "participant"], "ScheduledVisit.id cannot be given as a value"),
        ("ScheduledVisit", ["participant", "participant_id"], "a field named twice"),
        ("ScheduledVisit", ["procedures"], "ScheduledVisit.procedures cannot be given as a value"),
        ("Reminder", ["participant", "created_at"], "Reminder.created_at is stamped when written"),
    ],
)
def test_values_create_refuses_fields_it_cannot_write(
    jasmine: Participant, create_path: str, model_name: str, fields: list[str], message: str
) -> None:
    from scheduler import models

    model = getattr(models, model_name)
    before = model.objects.count()
    with pytest.raises(ValueError, match=message):
        bulkwrite.values_create(model, fields, [(1, jasmine.pk)] * 30)
    with pytest.raises(ValueError, match=message):
        bulkwrite.values_add_new(model, fields, [(1, jasmine.pk)] * 300)
    assert model.objects.count() == before


def test_values_create_refuses_a_row_of_the_wrong_length(
    jasmine: Participant, create_path: str
) -> None:
    visits = _visits(jasmine)
    rows: list[tuple[Any, ...]] = _given(_new_copies(visits, jasmine))
    rows[7] = rows[7][:-1]
    before = ScheduledVisit.objects.count()
    with pytest.raises(ValueError, match="ScheduledVisit: row 7 has 17 values for 18 fields"):
        bulkwrite.values_create(ScheduledVisit, GIVEN, rows)
    assert ScheduledVisit.objects.count() == before


def test_values_add_new_writes_what_rows_add_new_writes(import_seed: Any, create_path: str) -> None:
    """Reminders as values: one for a moment a stored row holds is left out, the rest go in
    with the model's defaults, exactly as `rows_add_new` of the same instances writes them."""
    from scheduler.models import Reminder

    version = import_seed("002")
    mine = _enrolled(version, "J-001", day1=D(2026, 3, 2))
    held = Reminder.objects.filter(participant=mine).order_by("id").first()
    assert held is not None
    visit = ScheduledVisit.objects.filter(participant=mine).order_by("id")[3]
    at = dt.datetime(2026, 7, 1, 7, 30, tzinfo=dt.UTC)
    fields = ["participant", "visit", "target_key", "rule_code", "event", "channel"]
    fields += ["audience", "due_at", "next_attempt_at", "last_error"]
    rows = [
        (mine.pk, visit.pk, f"visit:{visit.pk}", "R1", "before_visit", "email", "participant")
        + (at, at, 'l\'erreur "citée"\tet\nla suite \\'),
        (mine.pk, None, held.target_key, held.rule_code, held.event, held.channel)
        + (held.audience, held.due_at, held.due_at, ""),
        (mine.pk, None, "participant:x", "R2", "welcome", "sms", "participant")
        + (at + dt.timedelta(minutes=1), at, ""),
    ]

    before = _reminders_of(mine)
    outcomes = []
    for write in (
        lambda: bulkwrite.values_add_new(Reminder, fields, rows),
        lambda: rows_add_new(bulkwrite._instances(Reminder, fields, rows), Reminder),
    ):
        with transaction.atomic():
            write()
            outcomes.append(_reminders_of(mine))
            assert Reminder.objects.filter(created_at__isnull=True).count() == 0
            transaction.set_rollback(True)

    ours, theirs = outcomes
    assert ours == theirs
    assert len(ours) == len(before) + 2
    added = [row for row in ours if row["rule_code"] in ("R1", "R2")]
    assert [
        (r["rule_code"], r["visit_id"], r["status"], r["attempts"], r["ical_sequence"])
        for r in added
    ] == [("R1", visit.pk, "pending", 0, None), ("R2", None, "pending", 0, None)]
    assert added[0]["last_error"] == 'l\'erreur "citée"\tet\nla suite \\'
    bulkwrite.values_add_new(Reminder, fields, [])  # nothing to write: no statement
