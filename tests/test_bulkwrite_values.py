"""Unusual values through the bulk writers (`scheduler.bulkwrite`) on Postgres, on both sides of
every threshold where they change how they write: `rows_update`/`keys_update` from arrays
(`unnest`) below COPY_UPDATE_FROM_ROWS rows and from a temporary table filled with `COPY` from
there on; `rows_create` with Django's `bulk_create` below COPY_FROM_ROWS rows and `COPY` from
there on; `rows_add_new` from arrays. Each value must be stored exactly as the ORM's own
`save()` / `bulk_update()` / `bulk_create()` store it, and the history rows must be the ones
simple_history writes (who, why, when, what).

Values: text with tab, newline, carriage return, backslash, the two characters `\\N`, `\\.` on
a line of its own, quotes, array syntax, "NULL", emoji and other non-BMP characters, 2,000
characters, the empty string; NUL (refused alike); aware datetimes given in Asia/Tokyo,
America/St_Johns (half-hour offset, and local mean time with seconds before 1935), around
New York's DST gap and fold; dates from 0001-01-01 to 9999-12-31; decimals that round; JSON;
times; history reasons of every kind, NULL among them.

Postgres only (COPY): run with DATABASE_URL pointing at Postgres, on pytest-django's test
database.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from participants.models import Participant
from scheduler import bulkwrite
from scheduler.models import Reminder, ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.services import (
    participant_enroll,
    participant_withdraw,
    site_move_to_version,
    visit_book,
)
from tests.conftest import seed_path
from tests.factories import SiteFactory, participant_for
from trials.models import ProtocolVersion
from trials.services import protocol_import

pytestmark = pytest.mark.integration

D = dt.date
NOW = dt.datetime(2026, 12, 31, 12, 0, tzinfo=dt.UTC)
TOKYO = ZoneInfo("Asia/Tokyo")
ST_JOHNS = ZoneInfo("America/St_Johns")
NEW_YORK = ZoneInfo("America/New_York")

TEXTS = [
    "tab\there",
    "newline\nthere",
    "carriage\rreturn",
    "crlf\r\n",
    "back\\slash",
    "\\N",
    "\\\\N",
    "before\n\\.\nafter",
    "\\.",
    "\\",
    "\\\\",
    "'single' \"double\" `back`",
    '"',
    "NULL",
    "null",
    "{braces}",
    "a,b",
    " leading and trailing ",
    "\b\f\v\x7f",
    "line\u2028separator",
    "emoji 🧪💉 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, 日本語",
    "%s %(name)s %% ?",
    "x" * 2000,
    "",
]

INSTANTS = [
    dt.datetime(2026, 4, 1, 9, 30, tzinfo=TOKYO),
    dt.datetime(2026, 4, 1, 9, 30, tzinfo=ST_JOHNS),  # -02:30 (daylight time)
    dt.datetime(2026, 1, 1, 9, 30, tzinfo=ST_JOHNS),  # -03:30
    dt.datetime(2026, 3, 8, 2, 30, tzinfo=NEW_YORK),  # in the spring-forward gap
    dt.datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK),  # the fall-back fold, first time
    dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK),  # ...and second
    dt.datetime(1900, 1, 1, 0, 0, tzinfo=ST_JOHNS),  # local mean time, -03:30:52
    dt.datetime(1880, 1, 1, 0, 0, tzinfo=TOKYO),  # local mean time, +09:18:59
    dt.datetime(2200, 12, 31, 23, 59, 59, 999999, tzinfo=TOKYO),
    dt.datetime(2026, 4, 1, 9, 30, 0, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 4, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
]
# What each is, in UTC (what Postgres stores and Django reads back).
INSTANTS_UTC = [
    "2026-04-01T00:30:00+00:00",
    "2026-04-01T12:00:00+00:00",
    "2026-01-01T13:00:00+00:00",
    "2026-03-08T07:30:00+00:00",
    "2026-11-01T05:30:00+00:00",
    "2026-11-01T06:30:00+00:00",
    "1900-01-01T03:30:52+00:00",
    "1879-12-31T14:41:01+00:00",
    "2200-12-31T14:59:59.999999+00:00",
    "2026-04-01T09:30:00.123456+00:00",
    "2026-04-01T03:45:00+00:00",
]
DATES = [D(1900, 1, 1), D(2200, 12, 31), D(1, 1, 1), D(9999, 12, 31), D(2024, 2, 29)]


@pytest.fixture(autouse=True)
def frozen_clock() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(params=["arrays", "copy"])
def update_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Updates from arrays (under COPY_UPDATE_FROM_ROWS rows) or from a COPY'd table."""
    monkeypatch.setattr(bulkwrite, "COPY_UPDATE_FROM_ROWS", 1 if request.param == "copy" else 10**9)
    return str(request.param)


@pytest.fixture
def coordinator(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("coordinator")


def _enrolled(version: ProtocolVersion, study_id: str, **kwargs: Any) -> Participant:
    anchors = kwargs.pop("anchors", {"day1": D(2026, 3, 2)})
    participant = participant_for(
        version,
        anchors=anchors,
        birth_date=D(1980, 6, 15),
        weight_kg=Decimal("60"),
        study_id=study_id,
        **kwargs,
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


def _visits(participant: Participant) -> list[ScheduledVisit]:
    return list(participant.visits.order_by("id"))


def _column(model: Any, rows: list[Any], *names: str) -> list[Any]:
    stored = model.objects.filter(pk__in=[row.pk for row in rows]).order_by("id")
    if len(names) == 1:
        return list(stored.values_list(names[0], flat=True))
    return list(stored.values_list(*names))


def _iso(values: list[dt.datetime | None]) -> list[str | None]:
    return [None if v is None else v.isoformat() for v in values]


def _uses_copy(queries: CaptureQueriesContext) -> bool:
    return any(q["sql"].startswith("COPY ") for q in queries.captured_queries)


# ----------------------------------------------------------------------------------------
# Updates: arrays and COPY


def test_text_round_trips_through_rows_update(import_seed: Any, update_path: str) -> None:
    version = import_seed("002")
    visits = _visits(_enrolled(version, "J-001"))[: len(TEXTS)]
    reference = _visits(_enrolled(version, "J-002"))[: len(TEXTS)]
    for rows in (visits, reference):
        for visit, text in zip(rows, TEXTS, strict=True):
            visit.reason = text
    with CaptureQueriesContext(connection) as queries:
        assert bulkwrite.rows_update(visits, ScheduledVisit, ["reason"]) == len(TEXTS)
    ScheduledVisit.objects.bulk_update(reference, ["reason"])

    assert _uses_copy(queries) == (update_path == "copy")
    assert _column(ScheduledVisit, visits, "reason") == TEXTS
    assert _column(ScheduledVisit, reference, "reason") == TEXTS


@pytest.mark.parametrize(
    "rows", [bulkwrite.COPY_UPDATE_FROM_ROWS - 1, bulkwrite.COPY_UPDATE_FROM_ROWS]
)
def test_text_and_instants_round_trip_at_the_real_update_threshold(
    import_seed: Any, rows: int
) -> None:
    """199 rows from arrays, 200 from COPY: the same values stored."""
    assert bulkwrite.COPY_UPDATE_FROM_ROWS == 200
    version = import_seed("002")
    visits = [v for n in range(4) for v in _visits(_enrolled(version, f"J-{n:03d}"))][:rows]
    assert len(visits) == rows
    for i, visit in enumerate(visits):
        visit.reason = TEXTS[i % len(TEXTS)]
        visit.booked_start = INSTANTS[i % len(INSTANTS)]
        visit.booked_date = DATES[i % len(DATES)]
    with CaptureQueriesContext(connection) as queries:
        assert (
            bulkwrite.rows_update(visits, ScheduledVisit, ["reason", "booked_start", "booked_date"])
            == rows
        )
    assert _uses_copy(queries) == (rows >= 200)
    stored = _column(ScheduledVisit, visits, "reason", "booked_start", "booked_date")
    assert [(r, s.isoformat(), d) for r, s, d in stored] == [
        (TEXTS[i % len(TEXTS)], INSTANTS_UTC[i % len(INSTANTS)], DATES[i % len(DATES)])
        for i in range(rows)
    ]


def test_instants_and_dates_round_trip_through_rows_update(
    import_seed: Any, update_path: str
) -> None:
    version = import_seed("002")
    ours = _visits(_enrolled(version, "J-001"))[: len(INSTANTS)]
    saved = _visits(_enrolled(version, "J-002"))[: len(INSTANTS)]
    for rows in (ours, saved):
        for i, visit in enumerate(rows):
            visit.booked_start = INSTANTS[i]
            visit.actual_start = INSTANTS[-1 - i]
            visit.booked_date = DATES[i % len(DATES)]
            visit.actual_date = DATES[-1 - i % len(DATES)]
    fields = ["booked_start", "actual_start", "booked_date", "actual_date"]
    bulkwrite.rows_update(ours, ScheduledVisit, fields)
    for visit in saved:
        visit.save(update_fields=fields)

    def stored(rows: list[ScheduledVisit]) -> list[tuple[Any, ...]]:
        return [
            (b.isoformat(), a.isoformat(), bd, ad)
            for b, a, bd, ad in _column(ScheduledVisit, rows, *fields)
        ]

    assert stored(ours) == stored(saved)
    assert [row[0] for row in stored(ours)] == INSTANTS_UTC
    assert [row[1] for row in stored(ours)] == INSTANTS_UTC[::-1]
    assert [row[2] for row in stored(ours)] == [DATES[i % len(DATES)] for i in range(len(INSTANTS))]


def test_values_to_null_and_back_round_trip(import_seed: Any, update_path: str) -> None:
    """A column all NULL (the driver sees no value to tell its type by), then all set."""
    visits = _visits(_enrolled(import_seed("002"), "J-001"))[:4]
    fields = ["booked_start", "booked_date", "deviation_days"]
    for value in (None, INSTANTS[0]):
        for i, visit in enumerate(visits):
            visit.booked_start = value
            visit.booked_date = None if value is None else DATES[i]
            visit.deviation_days = None if value is None else -i
        bulkwrite.rows_update(visits, ScheduledVisit, fields)
        assert _column(ScheduledVisit, visits, *fields) == [
            (None, None, None) if value is None else (INSTANTS[0], DATES[i], -i) for i in range(4)
        ]


DOSES: list[Any] = [
    Decimal("0.01"),
    Decimal("123.45"),
    Decimal("0.005"),  # rounds half away from zero: 0.01
    Decimal("0.015"),
    Decimal("99999.99"),
    Decimal("-0.00"),
    Decimal("1E+2"),
    Decimal("12.5"),
    0.1,
    "7.25",
    3,
]
DOSES_STORED = [
    Decimal("0.01"),
    Decimal("123.45"),
    Decimal("0.01"),
    Decimal("0.02"),
    Decimal("99999.99"),
    Decimal("0.00"),
    Decimal("100.00"),
    Decimal("12.50"),
    Decimal("0.10"),
    Decimal("7.25"),
    Decimal("3.00"),
]


def test_decimals_and_flags_round_trip_through_rows_update(
    import_seed: Any, update_path: str
) -> None:
    version = import_seed("001")
    anchors = {"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)}
    ours, saved = (
        list(
            ScheduledMilestone.objects.filter(
                participant=_enrolled(version, study_id, anchors=anchors)
            ).order_by("id")[: len(DOSES)]
        )
        for study_id in ("T-001", "T-002")
    )
    assert len(ours) == len(DOSES)
    flags = ["", "x" * 300, *TEXTS[:9]]
    for rows in (ours, saved):
        for milestone, dose, flag in zip(rows, DOSES, flags, strict=True):
            milestone.dose_mg = dose
            milestone.flag = flag
    bulkwrite.rows_update(ours, ScheduledMilestone, ["dose_mg", "flag"])
    for milestone in saved:
        milestone.save(update_fields=["dose_mg", "flag"])

    assert _column(ScheduledMilestone, ours, "dose_mg") == DOSES_STORED
    assert _column(ScheduledMilestone, saved, "dose_mg") == DOSES_STORED
    assert _column(ScheduledMilestone, ours, "flag") == flags
    # One over the column's 300: refused, as save() refuses it, never cut.
    ours[0].flag = "y" * 301
    with pytest.raises(DataError), transaction.atomic():
        bulkwrite.rows_update(ours[:1], ScheduledMilestone, ["flag"])
    assert _column(ScheduledMilestone, ours[:1], "flag") == [""]


def test_json_times_and_decimals_of_participants_round_trip(
    import_seed: Any, update_path: str
) -> None:
    from django.db.models import JSONField, Value

    version = import_seed("002")
    ours, saved = _enrolled(version, "J-001"), _enrolled(version, "J-002")
    values: list[Any] = [
        ["sms", "email"],
        [],
        {"note": 'tab\t \\N "q" 🧪 \n\\.\n'},
        "NULL",
        0,
        True,
        [None],
        Value(None, JSONField()),  # JSON null, not SQL NULL
    ]
    fields = ["reminder_channels", "quiet_hours_start", "quiet_hours_end", "weight_kg"]
    for value in values:
        for participant in (ours, saved):
            participant.reminder_channels = value
            participant.quiet_hours_start = dt.time(22, 30, 15, 5)
            participant.quiet_hours_end = dt.time(0, 0)
            participant.weight_kg = Decimal("60.05")
        bulkwrite.rows_update([ours], Participant, fields)
        saved.save(update_fields=fields)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reminder_channels::text, quiet_hours_start, quiet_hours_end, weight_kg "
                "FROM participants_participant WHERE id = ANY(%s) ORDER BY id",
                [[ours.pk, saved.pk]],
            )
            mine, theirs = cursor.fetchall()
        assert mine == theirs, value
        assert mine[1:] == (dt.time(22, 30, 15, 5), dt.time(0, 0), Decimal("60.1"))


def test_nul_is_refused_alike(import_seed: Any, update_path: str) -> None:
    participant = _enrolled(import_seed("002"), "J-001")
    visits = _visits(participant)[:3]
    visits[1].reason = "a\x00b"
    writes = {
        "rows_update": lambda: bulkwrite.rows_update(visits, ScheduledVisit, ["reason"]),
        "bulk_update": lambda: ScheduledVisit.objects.bulk_update(visits, ["reason"]),
        "save": lambda: visits[1].save(update_fields=["reason"]),
    }
    for write in writes.values():
        with pytest.raises(DataError, match="NUL"), transaction.atomic():
            write()
    assert _column(ScheduledVisit, visits, "reason") == ["", "", ""]


def test_keys_update_writes_text_as_given(import_seed: Any, update_path: str) -> None:
    participant = _enrolled(import_seed("002"), "J-001")
    procedures = list(
        ScheduledProcedure.objects.filter(visit__participant=participant).order_by("id")[
            : len(TEXTS)
        ]
    )
    statuses = ["not_done" if text.strip() else "planned" for text in TEXTS]
    assert bulkwrite.keys_update(
        ScheduledProcedure,
        [p.pk for p in procedures],
        {"status": statuses, "not_done_reason": TEXTS},
    ) == len(TEXTS)
    assert _column(ScheduledProcedure, procedures, "status", "not_done_reason") == list(
        zip(statuses, TEXTS, strict=True)
    )


# ----------------------------------------------------------------------------------------
# New rows: bulk_create and COPY


def _unscheduled(template: list[ScheduledVisit], participant: Participant, n: int) -> list[Any]:
    rows = []
    for i in range(n):
        like = template[i % len(template)]
        rows.append(
            ScheduledVisit(
                participant=participant,
                protocol_version_id=like.protocol_version_id,
                visit_definition=None,
                occurrence=1,
                unscheduled_reason=TEXTS[i % len(TEXTS)] or "flare",
                reason=TEXTS[i % len(TEXTS)],
                target_date=like.target_date,
                window_start=like.window_start,
                window_end=like.window_end,
                booked_start=INSTANTS[i % len(INSTANTS)],
                actual_start=INSTANTS[(i + 3) % len(INSTANTS)],
                booked_date=DATES[i % len(DATES)],
                actual_date=DATES[(i + 1) % len(DATES)],
                deviation_days=-(2**31) if i % 5 == 0 else i,
            )
        )
    return rows


STORED_COLUMNS = [
    f.attname
    for f in ScheduledVisit._meta.concrete_fields
    if f.name not in ("id", "participant", "ical_uid")
]


@pytest.mark.parametrize("n", [bulkwrite.COPY_FROM_ROWS - 1, bulkwrite.COPY_FROM_ROWS, 60])
def test_rows_create_stores_what_bulk_create_stores(import_seed: Any, n: int) -> None:
    assert bulkwrite.COPY_FROM_ROWS == 20
    version = import_seed("002")
    mine, theirs = _enrolled(version, "J-001"), _enrolled(version, "J-002")
    template = _visits(mine)
    with CaptureQueriesContext(connection) as queries:
        created = bulkwrite.rows_create(_unscheduled(template, mine, n), ScheduledVisit)
    expected = ScheduledVisit.objects.bulk_create(_unscheduled(template, theirs, n))

    assert _uses_copy(queries) == (n >= 20)
    ours = _column(ScheduledVisit, created, *STORED_COLUMNS)
    assert ours == _column(ScheduledVisit, expected, *STORED_COLUMNS)
    at = STORED_COLUMNS.index
    assert [row[at("reason")] for row in ours] == [TEXTS[i % len(TEXTS)] for i in range(n)]
    assert [row[at("booked_start")].isoformat() for row in ours] == [
        INSTANTS_UTC[i % len(INSTANTS)] for i in range(n)
    ]
    assert [row[at("actual_date")] for row in ours] == [
        DATES[(i + 1) % len(DATES)] for i in range(n)
    ]
    assert ours[0][at("deviation_days")] == -(2**31)


@pytest.mark.parametrize("n", [len(DOSES), 2 * bulkwrite.COPY_FROM_ROWS + 2])
def test_rows_create_stores_decimals_and_flags_as_bulk_create_does(
    import_seed: Any, n: int
) -> None:
    version = import_seed("001")
    anchors = {"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)}
    mine, theirs = (_enrolled(version, s, anchors=anchors) for s in ("T-001", "T-002"))
    like = ScheduledMilestone.objects.filter(participant=mine).order_by("id")[0]

    def milestones(participant: Participant) -> list[ScheduledMilestone]:
        return [
            ScheduledMilestone(
                participant=participant,
                rule_id=like.rule_id,
                sequence=1000 + i,
                protocol_version_id=like.protocol_version_id,
                due_date=DATES[i % len(DATES)],
                dose_mg=DOSES[i % len(DOSES)],
                flag=TEXTS[i % 9],
            )
            for i in range(n)
        ]

    with CaptureQueriesContext(connection) as queries:
        created = bulkwrite.rows_create(milestones(mine), ScheduledMilestone)
    expected = ScheduledMilestone.objects.bulk_create(milestones(theirs))
    assert _uses_copy(queries) == (n >= 20)
    columns = ["sequence", "due_date", "dose_mg", "flag", "estimated", "status", "ical_sequence"]
    ours = _column(ScheduledMilestone, created, *columns)
    assert ours == _column(ScheduledMilestone, expected, *columns)
    assert ours == [
        (
            1000 + i,
            DATES[i % len(DATES)],
            DOSES_STORED[i % len(DOSES)],
            TEXTS[i % 9],
            False,
            "planned",
            0,
        )
        for i in range(n)
    ]


def test_rows_add_new_stores_what_bulk_create_ignoring_conflicts_stores(
    import_seed: Any,
) -> None:
    participant = _enrolled(import_seed("002"), "J-001")

    def reminders() -> list[Reminder]:
        return [
            Reminder(
                participant=participant,
                target_key=f"participant:{i}",
                rule_code="ODD",
                event="welcome",
                channel="email",
                audience="participant",
                due_at=INSTANTS[i % len(INSTANTS)],
                next_attempt_at=INSTANTS[(i + 1) % len(INSTANTS)],
                last_error=TEXTS[i % len(TEXTS)],
                provider_message_id=TEXTS[i % len(TEXTS)][:200],
            )
            for i in range(len(TEXTS))
        ]

    def stored() -> list[tuple[Any, ...]]:
        return [
            (key, due.isoformat(), attempt.isoformat(), error, message)
            for key, due, attempt, error, message in Reminder.objects.filter(rule_code="ODD")
            .order_by("target_key")
            .values_list(
                "target_key", "due_at", "next_attempt_at", "last_error", "provider_message_id"
            )
        ]

    outcomes = []
    for write in (
        lambda rows: bulkwrite.rows_add_new(rows, Reminder),
        lambda rows: Reminder.objects.bulk_create(rows, ignore_conflicts=True),
    ):
        with transaction.atomic():
            write(reminders())
            write(reminders())  # every one a conflict now: nothing more
            outcomes.append(stored())
            transaction.set_rollback(True)
    assert outcomes[0] == outcomes[1]
    assert sorted(row[3] for row in outcomes[0]) == sorted(TEXTS)
    assert len(outcomes[0]) == len(TEXTS)


# ----------------------------------------------------------------------------------------
# History rows: those simple_history writes

REASONS: list[str | None] = [*TEXTS, None]
HISTORY_COLUMNS = (
    "history_type",
    "history_change_reason",
    "history_user_id",
    "history_date",
    "reason",
    "version",
)


def _latest_history(participant: Participant, count: int) -> list[tuple[Any, ...]]:
    rows = ScheduledVisit.history.filter(participant=participant).order_by("-history_id")[:count]
    return sorted(rows.values_list("visit_definition_id", "occurrence", *HISTORY_COLUMNS))


def test_update_history_is_what_simple_history_writes(
    import_seed: Any, update_path: str, coordinator: Any
) -> None:
    from simple_history.utils import bulk_update_with_history

    version = import_seed("002")
    mine, theirs, saved = (_enrolled(version, f"J-00{n}") for n in (1, 2, 3))
    for reason in REASONS:
        for participant in (mine, theirs, saved):
            visits = _visits(participant)[:3]
            for visit in visits:
                visit.reason = reason or ""
                visit.version += 1
            visits[2]._change_reason = "its own: \t\\N"  # type: ignore[attr-defined]
            if participant is mine:
                bulkwrite.update_with_history(
                    visits,
                    ScheduledVisit,
                    ["reason", "version"],
                    by=coordinator,
                    reason=reason,  # type: ignore[arg-type]  # None too, as simple_history takes
                )
            elif participant is theirs:
                bulk_update_with_history(
                    visits,
                    ScheduledVisit,
                    ["reason", "version"],
                    default_user=coordinator,
                    default_change_reason=reason,
                )
            else:  # one at a time, as a service saves one visit
                for visit in visits:
                    visit._history_user = coordinator  # type: ignore[attr-defined]
                    if not hasattr(visit, "_change_reason"):
                        visit._change_reason = reason  # type: ignore[attr-defined]
                    visit.save(update_fields=["reason", "version"])
        written = _latest_history(mine, 3)
        assert written == _latest_history(theirs, 3), reason
        assert written == _latest_history(saved, 3), reason
        assert [row[2:] for row in written] == [
            ("~", reason, coordinator.pk, NOW, reason or "", version)
            for version in (written[0][-1], written[1][-1])
        ] + [("~", "its own: \t\\N", coordinator.pk, NOW, reason or "", written[2][-1])]


@pytest.mark.parametrize("n", [bulkwrite.COPY_FROM_ROWS - 1, bulkwrite.COPY_FROM_ROWS])
def test_create_history_is_what_simple_history_writes(
    import_seed: Any, coordinator: Any, n: int
) -> None:
    from simple_history.utils import bulk_create_with_history

    version = import_seed("002")
    mine, theirs = _enrolled(version, "J-001"), _enrolled(version, "J-002")
    template = _visits(mine)
    ours, others = _unscheduled(template, mine, n), _unscheduled(template, theirs, n)
    for i, (one, other) in enumerate(zip(ours, others, strict=True)):
        if i % 3 == 0:
            one._change_reason = other._change_reason = TEXTS[i % len(TEXTS)] or "own"  # type: ignore[attr-defined]
    reason = "created: tab\t nl\n \\N \\. 🧪"
    bulkwrite.create_with_history(ours, ScheduledVisit, by=coordinator, reason=reason)
    bulk_create_with_history(
        others, ScheduledVisit, default_user=coordinator, default_change_reason=reason
    )

    def history(participant: Participant) -> list[tuple[Any, ...]]:
        return list(
            ScheduledVisit.history.filter(participant=participant, history_type="+")
            .filter(visit_definition__isnull=True)
            .order_by("id")
            .values_list(*STORED_COLUMNS, *HISTORY_COLUMNS[:4])
        )

    assert history(mine) == history(theirs)
    assert [row[-4:] for row in history(mine)] == [
        ("+", (TEXTS[i % len(TEXTS)] or "own") if i % 3 == 0 else reason, coordinator.pk, NOW)
        for i in range(n)
    ]


def test_history_user_of_an_object_given_none(import_seed: Any, coordinator: Any) -> None:
    """An object whose `_history_user` is None (a system action's `_audited(obj, None, …)`)
    is recorded with no user, as simple_history records it, not with the call's `by`."""
    from simple_history.utils import bulk_update_with_history

    version = import_seed("002")
    mine, theirs = _enrolled(version, "J-001"), _enrolled(version, "J-002")
    for participant in (mine, theirs):
        [visit] = _visits(participant)[:1]
        visit._history_user = None  # type: ignore[attr-defined]
        if participant is mine:
            bulkwrite.update_with_history(
                [visit], ScheduledVisit, ["reason"], by=coordinator, reason="r"
            )
        else:
            bulk_update_with_history(
                [visit],
                ScheduledVisit,
                ["reason"],
                default_user=coordinator,
                default_change_reason="r",
            )
    users = [
        ScheduledVisit.history.filter(participant=p, history_type="~").values_list(
            "history_user_id", flat=True
        )[0]
        for p in (mine, theirs)
    ]
    assert users == [None, None]


def test_a_lazily_translated_reason_is_recorded_as_simple_history_records_it(
    import_seed: Any, update_path: str, coordinator: Any
) -> None:
    """A `gettext_lazy` reason is recorded as its text, as simple_history records it (the
    driver cannot adapt the lazy object itself)."""
    from django.utils.translation import gettext_lazy
    from simple_history.utils import bulk_update_with_history

    version = import_seed("002")
    mine, theirs = _enrolled(version, "J-001"), _enrolled(version, "J-002")
    bulk_update_with_history(
        _visits(theirs)[:2],
        ScheduledVisit,
        ["reason"],
        default_user=coordinator,
        default_change_reason=gettext_lazy("amended"),
    )
    bulkwrite.update_with_history(
        _visits(mine)[:2],
        ScheduledVisit,
        ["reason"],
        by=coordinator,
        reason=gettext_lazy("amended"),  # type: ignore[arg-type]
    )
    reasons = [
        list(
            ScheduledVisit.history.filter(participant=p, history_type="~").values_list(
                "history_change_reason", flat=True
            )
        )
        for p in (mine, theirs)
    ]
    assert reasons == [["amended", "amended"], ["amended", "amended"]]


# ----------------------------------------------------------------------------------------
# Services that write in bulk, with a person's reason

ODD_REASON = (
    "tab\there, newline\nthere, CR\r, backslash \\ and \\N, a line\n\\.\nof its own, "
    "'quotes' \"too\", emoji 🧪💉 𝔘, 日本語 — "
)
LONG_REASON = (ODD_REASON * 40)[:2000]


def test_withdrawal_reason_reaches_visits_and_their_history_whole(
    import_seed: Any, update_path: str, coordinator: Any
) -> None:
    participant = _enrolled(import_seed("002"), "J-001")
    assert len(LONG_REASON) == 2000
    closure = participant_withdraw(
        participant=participant, on=D(2026, 4, 1), by=coordinator, reason=LONG_REASON
    )
    cancelled = list(closure.cancelled_visits)
    assert len(cancelled) > 10
    why = f"withdrawn: {LONG_REASON}"
    assert set(_column(ScheduledVisit, cancelled, "status", "reason")) == {("cancelled", why)}
    history = ScheduledVisit.history.filter(
        id__in=[v.pk for v in cancelled], history_type="~", status="cancelled"
    ).values_list("history_change_reason", "history_user_id", "history_date", "reason")
    assert set(history) == {(why, coordinator.pk, NOW, why)}
    assert len(history) == len(cancelled)
    participant.refresh_from_db()
    assert participant.ended_reason == LONG_REASON
    assert (
        participant.history.order_by("-history_id").values_list("history_change_reason", flat=True)[
            0
        ]
        == LONG_REASON
    )


W28 = """\
  - code: W28
    name: Week 28 assessment
    epoch: POST
    anchor: day1
    offset_days: 196
    window: {before: 3, after: 3}
    duration_minutes: 60
    procedures: [LLDAS, SLEDAI]
milestones:
"""


def test_site_move_reason_reaches_every_history_row_whole(
    import_seed: Any, update_path: str, coordinator: Any
) -> None:
    v10 = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo")
    anchors = {"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)}
    movers = [_enrolled(v10, f"T-00{n}", anchors=anchors, site=site) for n in (1, 2)]
    text = seed_path("001").read_text(encoding="utf-8")
    v11 = protocol_import(
        text=text.replace('label: "1.0"', 'label: "1.1"').replace("milestones:\n", W28, 1),
        source="tsukuba-1.1.yaml",
    )
    reason = "amendment 1.1\t(ethics ref \\N-42)\nline two 🧪 \\."
    moved = site_move_to_version(
        site=site,
        version=v11,
        approved_on=D(2026, 4, 1),
        on=D(2026, 4, 1),
        by=coordinator,
        reason=reason,
    )
    assert sorted(moved) == ["T-001", "T-002"]
    for participant in movers:
        assert participant.history.order_by("-history_id").values_list(
            "history_change_reason", "history_user_id", "history_date", "protocol_version_id"
        )[0] == (reason, coordinator.pk, NOW, v11.pk)
    visit_history = set(
        ScheduledVisit.history.filter(participant__in=movers, protocol_version=v11).values_list(
            "history_change_reason", "history_user_id", "history_date"
        )
    )
    assert visit_history == {(f"moved to {v11}: {reason}", coordinator.pk, NOW)}


@pytest.mark.parametrize(
    ("reason", "named"),
    [
        ("transport arranged, see note: ", "V3 booked: transport arranged, see note: "),
        ("dose ratio 1:", "V3 booked: dose ratio 1:"),
        ("::", "V3 booked: ::"),
        ("", "V3 booked"),
        ("  ", "V3 booked:   "),
    ],
)
def test_booking_reason_reaches_the_history_of_visits_that_move_with_it_whole(
    import_seed: Any, coordinator: Any, reason: str, named: str
) -> None:
    """The visits that move with a booking record the change's name and the person's reason
    whole (it used to be `f"{code} {kind}: {reason}".rstrip(": ")`, which also cut colons
    and spaces off the end of the reason, and all of "::"); no reason, no colon."""
    participant = _enrolled(import_seed("000"), "P-001", anchors={"day1": D(2026, 2, 2)})
    v3 = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V3")
    v3c = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V3C")
    with time_machine.travel(dt.datetime(2026, 3, 3, 12, tzinfo=dt.UTC), tick=False):
        visit_book(
            visit=v3, local_date=D(2026, 3, 4), local_time=dt.time(9), by=coordinator, reason=reason
        )
    own, moved_with_it = (
        visit.history.order_by("-history_id").values_list("history_change_reason", flat=True)[0]
        for visit in (v3, v3c)
    )
    assert own == (reason or "booked")
    assert moved_with_it == named
