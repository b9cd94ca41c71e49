"""Log filters: capability tokens, and what a database quotes from a refused row, never reach
the logs."""

from __future__ import annotations

import logging
import re
import sqlite3
import traceback
from collections.abc import Mapping
from typing import Any

FEED_TOKEN = re.compile(r"(/feeds/(?:participant|site)/)[A-Za-z0-9_-]+")


class RedactFeedTokens(logging.Filter):
    """Replace the token in any feed URL a log record mentions (Django's "Not Found: /feeds/…",
    the development server's request lines) with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/feeds/" in message:
            record.msg = FEED_TOKEN.sub(r"\1<token>", message)
            record.args = None
        return True


# What replaces the text of a database error: drivers quote the refused row or key in it
# (Postgres: "DETAIL:  Failing row contains (…)", "Key (email)=(…)"; "invalid input syntax for
# type date: …"), and a participant row holds contact details, a birth date, a guardian's name.
DB_ERROR_TEXT = "database error text withheld from the log (it can quote row values)"
WITHHELD = "<withheld>"
# Each stops at the end of its line, a real newline or the "\n" of an exception's repr().
_LINE_REST = r"(?:(?!\\n)[^\n])*"
DB_DETAILS = [
    (re.compile(r"DETAIL:" + _LINE_REST), f"DETAIL: {WITHHELD}"),
    (re.compile(r"Failing row contains \(" + _LINE_REST), f"Failing row contains ({WITHHELD})"),
    (re.compile(r"Key \(([^)\n]*)\)=\(" + _LINE_REST), rf"Key (\1)=({WITHHELD})"),
    # Where the server points at the error: the statement's line, which Django's psycopg
    # backend sends with its values in it ("LINE 1: … = 'jane@…' and 1 = 'abc'::int"), and the
    # CONTEXT a COPY or a JSON error gives ("COPY t, line 3, column email: "…"").
    (re.compile(r"LINE (\d+): " + _LINE_REST), rf"LINE \1: {WITHHELD}"),
    (re.compile(r"CONTEXT:" + _LINE_REST), f"CONTEXT: {WITHHELD}"),
    # The value a type refused, quoted in the message itself: 'invalid input syntax for type
    # date: "…"', 'invalid input value for enum e: "…"', 'date/time field value out of range:
    # "…"', 'malformed array literal: "…"', 'value "…" is out of range for type integer'.
    (
        # Bounded: an unbounded run before the colon is quadratic on a line that repeats
        # "for type " (2 s for 64 KiB).
        re.compile(r'((?:for type|for enum) [^:"\n]{1,200}|out of range|literal): "' + _LINE_REST),
        rf"\1: {WITHHELD}",
    ),
    (re.compile(r'\bvalue "' + _LINE_REST), f"value {WITHHELD}"),
]
QUERY_WITHHELD = "(%.3f) query withheld from the log (its parameters are row values); alias=%s"


def is_database_error(exc: BaseException) -> bool:
    """Django's database errors and the driver errors they wrap (sqlite3, psycopg)."""
    from django.db import Error as DjangoDatabaseError

    driver = type(exc).__module__.split(".")[0]
    return isinstance(exc, DjangoDatabaseError | sqlite3.Error) or driver in {"psycopg", "psycopg2"}


def database_error_summary(exc: BaseException) -> str:
    """What a log may say of a database error: that it happened, and the schema names involved
    (SQLSTATE, table, column, constraint), never a value. Django re-raises a driver error as
    its own type `from` it, so the driver's details are read from the cause."""
    driver = exc
    while not _has_driver_details(driver) and driver.__cause__ is not None:
        driver = driver.__cause__
    parts = []
    diag = getattr(driver, "diag", None)
    if diag is not None and getattr(diag, "sqlstate", None):
        parts.append(f"SQLSTATE {diag.sqlstate}")
        parts += [
            f"{label} {value}"
            for label, value in (
                ("table", diag.table_name),
                ("column", diag.column_name),
                ("constraint", diag.constraint_name),
            )
            if value
        ]
    elif getattr(driver, "sqlite_errorname", None):
        parts.append(driver.sqlite_errorname)  # type: ignore[attr-defined]
    return "; ".join([DB_ERROR_TEXT, ", ".join(parts)]) if parts else DB_ERROR_TEXT


def _has_driver_details(exc: BaseException) -> bool:
    return getattr(exc, "diag", None) is not None or hasattr(exc, "sqlite_errorname")


def withhold_database_details(text: str) -> str:
    for pattern, replacement in DB_DETAILS:
        text = pattern.sub(replacement, text)
    return text


def _exception_chain(exc: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return chain


def _scrubbed_traceback(exc_info: tuple[Any, Any, Any]) -> tuple[str, bool]:
    """The formatted traceback with database errors' text withheld, and whether it differs."""
    original = "".join(traceback.format_exception(*exc_info))
    text = original
    for exc in _exception_chain(exc_info[1]):
        if is_database_error(exc):
            quoted = "".join(traceback.format_exception_only(type(exc), exc))
            name = f"{type(exc).__module__}.{type(exc).__qualname__}"
            text = text.replace(quoted, f"{name}: {database_error_summary(exc)}\n")
    text = withhold_database_details(text)
    return text.rstrip("\n"), text != original


class ScrubDatabaseErrors(logging.Filter):
    """Keep what a database quotes from a refused row out of every log line.

    On a record, in this order: a database error passed as an argument becomes its summary
    (`database_error_summary`); DETAIL lines, "Failing row contains (…)" and "Key (…)=(…)" left
    in the message are withheld; the traceback is formatted here with every database error's
    text replaced by its summary, and the record keeps only that text (`exc_text`), not the
    exception, so no handler or formatter after this one can format the original. Django's own
    query log (`django.db.backends`, DEBUG only) keeps its timing but not its SQL, which has the
    values interpolated. Every handler in LOGGING lists this filter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.db.backends") and hasattr(record, "sql"):
            record.msg = QUERY_WITHHELD
            record.args = (getattr(record, "duration", 0.0), getattr(record, "alias", ""))
            record.sql = record.params = WITHHELD  # type: ignore[attr-defined]
            return True
        record.args = _scrubbed_args(record.args)
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = _without_quoted_errors(
                record.msg, record.args, record.exc_info[1]
            )
            # Celery's failure record repeats its context (the exception's repr and the whole
            # traceback, as text) in `data`, which a structured formatter would print.
            data = getattr(record, "data", None)
            if isinstance(data, Mapping):
                _, quoted = _without_quoted_errors(None, dict(data), record.exc_info[1])
                record.data = {  # type: ignore[attr-defined]
                    key: withhold_database_details(value) if isinstance(value, str) else value
                    for key, value in quoted.items()
                }
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call; logging reports it itself
            message = None
        if message is not None:
            scrubbed = withhold_database_details(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            text, changed = _scrubbed_traceback(record.exc_info)
            if changed:
                record.exc_text, record.exc_info = text, None
        elif record.exc_text:
            record.exc_text = withhold_database_details(record.exc_text)
        return True


def _scrubbed_args(args: Any) -> Any:
    def scrub(value: Any) -> Any:
        if isinstance(value, BaseException) and is_database_error(value):
            return database_error_summary(value)
        return value

    if isinstance(args, tuple):
        return tuple(scrub(value) for value in args)
    if isinstance(args, Mapping):
        return {key: scrub(value) for key, value in args.items()}
    return args


def _without_quoted_errors(msg: Any, args: Any, exc: BaseException) -> tuple[Any, Any]:
    """The message and arguments with the text of each database error in `exc`'s chain, as
    str() or repr() gives it, replaced by its summary: a worker's failure line quotes the
    exception it logs ("Task … raised unexpected: DataError('…')"), whatever the error says."""
    quoted: dict[str, str] = {}
    for error in _exception_chain(exc):
        if is_database_error(error):
            summary = database_error_summary(error)
            for text in (repr(error), str(error)):
                if text:
                    quoted[text] = summary

    def scrub(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for text, summary in quoted.items():
            value = value.replace(text, summary)
        return value

    if not quoted:
        return msg, args
    if isinstance(args, tuple):
        args = tuple(scrub(value) for value in args)
    elif isinstance(args, Mapping):
        args = {key: scrub(value) for key, value in args.items()}
    return scrub(msg), args
