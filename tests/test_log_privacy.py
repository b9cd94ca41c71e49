"""No log line carries contact details or health data, even when the database refuses a row.

The requests below make the database refuse a participant row through the real request stack
(test client, Django's 500 handling, the LOGGING configuration of config/settings.py), and the
test reads what the configured handlers wrote. On Postgres the driver's message quotes the
whole row (`DETAIL:  Failing row contains (…)`) or the key (`Key (…)=(…)`); on SQLite it names
the columns. Either way the log keeps the error's type and the schema names, never its text.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from participants.models import Participant
from tests.factories import SiteFactory, participant_for
from trials.models import ProtocolVersion, Site, Trial, TrialSite

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_log_privacy")]

D = dt.date
# What must never reach a log: the contact details and the birth date of the refused row.
# Participant fields, spread as keyword arguments alongside typed parameters.
SECRETS: dict[str, Any] = {
    "email": "jane.doe@example.org",
    "phone": "+1 301 555 0199",
    "guardian_name": "Mary Ann Doe",
    "guardian_email": "mary.doe@example.org",
    "guardian_phone": "+1 301 555 0142",
}
BIRTH_DATE = D(2009, 4, 17)
STUDY_ID = "NIH-CC-LEAK-7"
WITHHELD = "database error text withheld from the log (it can quote row values)"


def _row_without_a_protocol_version(request: HttpRequest) -> HttpResponse:
    # What the admin's "Add participant" did before it called the services.
    with transaction.atomic():
        Participant.objects.create(
            trial=Trial.objects.get(),
            site=Site.objects.get(code="nih-cc"),
            study_id=STUDY_ID,
            birth_date=BIRTH_DATE,
            timezone="America/New_York",
            **SECRETS,
        )
    return HttpResponse("saved")


def _duplicate_study_id(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        Participant.objects.create(
            trial=Trial.objects.get(),
            site=Site.objects.get(code="nih-cc"),
            study_id=STUDY_ID,
            protocol_version=ProtocolVersion.objects.get(),
            birth_date=BIRTH_DATE,
            timezone="America/New_York",
            **SECRETS,
        )
    return HttpResponse("saved")


urlpatterns = [
    path("not-null/", _row_without_a_protocol_version),
    path("duplicate/", _duplicate_study_id),
]


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the configured handlers write, wherever a record is logged from."""
    output = io.StringIO()
    handlers = {
        handler
        for name in ("", "django", "django.request", "django.server")
        for handler in logging.getLogger(name).handlers
        # LOGGING's handlers, not pytest's own capture handlers.
        if isinstance(handler, logging.StreamHandler)
        and any(type(f).__module__ == "config.logging" for f in handler.filters)
    }
    previous = [(handler, handler.setStream(output)) for handler in handlers]
    yield output
    for handler, stream in previous:
        if stream is not None:
            handler.setStream(stream)


@pytest.fixture
def niams(import_seed) -> ProtocolVersion:
    version = import_seed("000")
    TrialSite.objects.create(trial=version.trial, site=SiteFactory.create(code="nih-cc"))
    return version


def exception_lines(log: str) -> list[str]:
    """The lines of a logged traceback that are not frames: the exceptions and their links."""
    return [
        line
        for line in log.splitlines()[1:]
        if line and not line.startswith(" ") and line != "Traceback (most recent call last):"
    ]


def without_timestamp(line: str) -> str:
    return line.split(" ", 2)[2]


def assert_nothing_personal(log: str) -> None:
    leaked = [
        value for value in [*SECRETS.values(), BIRTH_DATE.isoformat(), STUDY_ID] if value in log
    ]
    assert leaked == []


def driver_error(sqlite: str, postgres: str, postgres_details: str) -> str:
    if connection.vendor == "postgresql":
        return f"psycopg.errors.{postgres}: {WITHHELD}; {postgres_details}"
    return f"sqlite3.IntegrityError: {WITHHELD}; {sqlite}"


def django_error(sqlite: str, postgres_details: str) -> str:
    details = postgres_details if connection.vendor == "postgresql" else sqlite
    return f"django.db.utils.IntegrityError: {WITHHELD}; {details}"


CAUSE = "The above exception was the direct cause of the following exception:"


def test_refused_row_is_logged_without_its_values(niams, log_output) -> None:
    response = Client(raise_request_exception=False).post("/not-null/")

    log = log_output.getvalue()
    assert response.status_code == 500
    assert without_timestamp(log.splitlines()[0]) == (
        "ERROR django.request Internal Server Error: /not-null/"
    )
    postgres = "SQLSTATE 23502, table participants_participant, column protocol_version_id"
    assert exception_lines(log) == [
        driver_error("SQLITE_CONSTRAINT_NOTNULL", "NotNullViolation", postgres),
        CAUSE,
        django_error("SQLITE_CONSTRAINT_NOTNULL", postgres),
    ]
    assert_nothing_personal(log)


def test_duplicate_key_is_logged_without_the_key(niams, log_output) -> None:
    participant_for(
        niams, anchors={"day1": D(2026, 2, 2)}, site=Site.objects.get(), study_id=STUDY_ID
    )

    response = Client(raise_request_exception=False).post("/duplicate/")

    log = log_output.getvalue()
    assert response.status_code == 500
    postgres = (
        "SQLSTATE 23505, table participants_participant, constraint unique_study_id_per_trial"
    )
    assert exception_lines(log) == [
        driver_error("SQLITE_CONSTRAINT_UNIQUE", "UniqueViolation", postgres),
        CAUSE,
        django_error("SQLITE_CONSTRAINT_UNIQUE", postgres),
    ]
    assert_nothing_personal(log)


def test_database_error_passed_as_an_argument_is_replaced_by_its_summary(niams, log_output) -> None:
    try:
        with transaction.atomic():
            Participant.objects.create(
                trial=niams.trial,
                site=Site.objects.create(code="x", name="X", timezone="UTC", country="US"),
                study_id=STUDY_ID,
                birth_date=BIRTH_DATE,
                timezone="UTC",
                **SECRETS,
            )
    except IntegrityError as refusal:
        logging.getLogger("scheduler.outbox").error("participant not saved: %s", refusal)

    details = (
        "SQLSTATE 23502, table participants_participant, column protocol_version_id"
        if connection.vendor == "postgresql"
        else "SQLITE_CONSTRAINT_NOTNULL"
    )
    assert [without_timestamp(line) for line in log_output.getvalue().splitlines()] == [
        f"ERROR scheduler.outbox participant not saved: {WITHHELD}; {details}"
    ]


@pytest.mark.parametrize(
    ("message", "scrubbed"),
    [
        # psycopg's text, as str() gives it and as a worker's "raised unexpected: %r" repr.
        (
            'null value in column "protocol_version_id" violates not-null constraint\n'
            "DETAIL:  Failing row contains (7, NIH-CC-LEAK-7, 2009-04-17, jane.doe@example.org)."
            "\nCONTEXT: x",
            'null value in column "protocol_version_id" violates not-null constraint\n'
            "DETAIL: <withheld>\nCONTEXT: <withheld>",
        ),
        (
            'IntegrityError(\'duplicate key value violates unique constraint "u"\\n'
            "DETAIL:  Key (trial_id, study_id)=(1, NIH-CC-LEAK-7) already exists.')",
            # Values can hold quotes, so the rest of the line goes, closing quote included.
            'IntegrityError(\'duplicate key value violates unique constraint "u"\\n'
            "DETAIL: <withheld>",
        ),
        (
            "Failing row contains (7, jane.doe@example.org, (nested), 2009-04-17).",
            "Failing row contains (<withheld>)",
        ),
        (
            "Key (email)=(jane.doe@example.org) already exists.",
            "Key (email)=(<withheld>)",
        ),
        # A type's refusal quotes the value, and the statement's line quotes the others
        # (Django's psycopg backend binds on the client: values are in the SQL text).
        (
            'DataError(\'invalid input syntax for type date: "NIH-CC-LEAK-7"\\n'
            "LINE 1: ...= 'jane.doe@example.org' AND \"birth_date\" = 'NIH-CC-LEAK-7'\\n"
            "                 ^')",
            "DataError('invalid input syntax for type date: <withheld>\\n"
            "LINE 1: <withheld>\\n                 ^')",
        ),
        (
            'invalid input value for enum status: "Mary Ann Doe"',
            "invalid input value for enum status: <withheld>",
        ),
        (
            'date/time field value out of range: "2009-04-17 99:00"',
            "date/time field value out of range: <withheld>",
        ),
        (
            'malformed array literal: "{jane.doe@example.org"',
            "malformed array literal: <withheld>",
        ),
        (
            'value "3015550199" is out of range for type integer',
            "value <withheld>",
        ),
        (
            'invalid input syntax for type json\nCONTEXT:  JSON data, line 1: {"email": "jane',
            "invalid input syntax for type json\nCONTEXT: <withheld>",
        ),
    ],
)
def test_database_details_quoted_in_a_message_are_withheld(
    log_output, message: str, scrubbed: str
) -> None:
    logging.getLogger("celery.app.trace").error("Task failed: %(exc)s", {"exc": message})

    assert (
        log_output.getvalue().split(" ", 2)[2]
        == f"ERROR celery.app.trace Task failed: {scrubbed}\n"
    )


def test_query_logging_never_writes_the_values_of_a_row(niams, log_output, settings) -> None:
    database_logger = logging.getLogger("django.db.backends")
    previous = database_logger.level
    database_logger.setLevel(logging.DEBUG)
    try:
        with connection.execute_wrapper(lambda execute, *args: execute(*args)):
            connection.force_debug_cursor = True
            participant_for(
                niams, anchors={"day1": D(2026, 2, 2)}, site=Site.objects.get(), **SECRETS
            )
    finally:
        connection.force_debug_cursor = False
        database_logger.setLevel(previous)

    log = log_output.getvalue()
    assert SECRETS["email"] not in log
    assert {without_timestamp(line).split(")", 1)[1] for line in log.splitlines()} >= {
        " query withheld from the log (its parameters are row values); alias=default"
    }


def test_a_celery_worker_log_file_gets_the_same_filters(tmp_path) -> None:
    # A worker sets up its own handlers (--logfile) and fires these signals; the handler it
    # made must scrub like Django's own.
    from celery.signals import after_setup_logger

    from config.celery import app

    worker_logger = logging.getLogger("tests.worker-root")
    worker_logger.propagate = False
    log_file = tmp_path / "worker.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    worker_logger.addHandler(handler)
    try:
        after_setup_logger.send(sender=app, logger=worker_logger, loglevel=logging.INFO)
        worker_logger.error(
            "Task raised unexpected: %s",
            "IntegrityError('null value\\nDETAIL:  Failing row contains (jane.doe@example.org).')",
        )
    finally:
        worker_logger.removeHandler(handler)
        handler.close()

    assert log_file.read_text(encoding="utf-8") == (
        "Task raised unexpected: IntegrityError('null value\\nDETAIL: <withheld>\n"
    )


def test_a_failed_tasks_line_never_quotes_its_database_error(niams, log_output) -> None:
    """A worker logs a failed task with the exception's repr in the line itself ("Task …
    raised unexpected: DataError('…')"), and the error can say anything: here the statement's
    line with a participant's values, which neither DETAIL nor Key patterns catch."""
    from config.celery import app

    @app.task(name="tests.log_privacy.read_by_birth_date", shared=False)
    def read_by_birth_date() -> None:
        # A value the database refuses, next to a contact detail in the same statement.
        Participant.objects.extra(  # noqa: S610 - the values are parameters
            where=["email = %s AND birth_date = %s::date"],
            params=[SECRETS["email"], STUDY_ID],
        ).count()

    read_by_birth_date.apply()

    log = log_output.getvalue()
    [failure] = [line for line in log.splitlines() if "raised unexpected" in line]
    assert without_timestamp(failure).startswith(
        "ERROR celery.app.trace Task tests.log_privacy.read_by_birth_date["
    )
    if connection.vendor == "postgresql":
        summary = "SQLSTATE 22007"  # invalid_datetime_format
        assert failure.endswith(f"raised unexpected: {WITHHELD}; {summary}")
    assert "LINE" not in log
    assert_nothing_personal(log)
    assert SECRETS["email"] not in log


def test_a_failed_tasks_context_for_structured_logs_is_scrubbed_too(niams) -> None:
    """Celery logs a failure with its context twice: as the message's arguments and as the
    record's `data` (the exception's repr and the whole traceback, as text), which a JSON
    formatter would print. Both lose what the database quoted."""
    from config.logging import ScrubDatabaseErrors

    try:
        Participant.objects.extra(  # noqa: S610 - the values are parameters
            where=["email = %s AND birth_date = %s::date"], params=[SECRETS["email"], STUDY_ID]
        ).count()
    except Exception as error:  # noqa: BLE001 - the database's refusal, whatever its kind
        refusal = error
    context = {
        "name": "tests.task",
        "exc": repr(refusal),
        "traceback": "".join(traceback.format_exception(refusal)),
        "args": "()",
    }
    record = logging.LogRecord(
        "celery.app.trace", logging.ERROR, __file__, 1, "Task %(name)s raised: %(exc)s",
        (context,), (type(refusal), refusal, refusal.__traceback__),
    )  # fmt: skip
    record.__dict__["data"] = dict(context)  # as Celery passes it: extra={"data": context}

    ScrubDatabaseErrors().filter(record)

    data = record.__dict__["data"]
    text = f"{record.getMessage()} {data}"
    assert STUDY_ID not in text
    assert SECRETS["email"] not in text
    assert data["args"] == "()"
    assert WITHHELD in data["exc"]
