"""What every face answers while the database is away (a restart, a failover, a dropped
connection): 503 Service Unavailable with Retry-After, never a 500.

Some database errors mean the request could not be carried out for now (`database_away`):
the connection is refused, lost or timed out, the server cancelled the statement or chose it
as a deadlock's victim, or it takes no writes for now (a failover's old primary). Trying
again later is the right thing for a person and for a site system alike, and a 503 with
Retry-After says exactly that (many HTTP clients and proxies retry it; few retry a 500). A
change sent when the connection was lost during the commit may or may not have been
written, so the words say to look before repeating it.
"""

from __future__ import annotations

import time

from django.db import InterfaceError, InternalError, OperationalError, connection
from django.utils.translation import gettext_lazy as _

# Long enough for a managed database's failover, short enough for a person.
RETRY_AFTER_SECONDS = 30

PAGE_TITLE = _("Temporarily unavailable")
PAGE_TEXT = _(
    "The scheduler cannot reach its database right now. Try again in a minute. If you had "
    "just saved a change, open the page again to see whether it was saved before you repeat "
    "it."
)
API_DETAIL = (
    "the database did not answer: try again after Retry-After seconds; a change sent now may "
    "or may not have been written, so read it back, or repeat it with the same "
    "Idempotency-Key, before sending it again"
)


# Postgres conditions that pass by themselves: the server going away or refusing new
# connections (class 08 and these), a transaction chosen as a deadlock's or a serialization's
# victim, a lock not granted in time, a statement cancelled by a timeout. Not "program limit
# exceeded" or a disk that is full: those need a person, and a client retrying after 30 s
# forever would not help.
TRANSIENT_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03", "57014"}
)
# SQLite's, for the laptop: another process holds the write lock.
TRANSIENT_SQLITE = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})
# "cannot execute INSERT in a read-only transaction": the server this connection reached takes
# no writes, which is what a managed database's failover looks like to a connection made
# before it (the old primary, back as a standby, while the name moves to the new one).
# Django raises it as an InternalError.
READ_ONLY_SQLSTATE = "25006"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the Postgres error behind a Django database error, if any."""
    return getattr(getattr(exc.__cause__, "diag", None), "sqlstate", None)


def read_only_server(exc: BaseException | None) -> bool:
    """Whether `exc` is the server refusing writes (READ_ONLY_SQLSTATE), as Django raises it."""
    return isinstance(exc, InternalError) and sqlstate(exc) == READ_ONLY_SQLSTATE


def database_away(exc: BaseException | None) -> bool:
    """Whether `exc` is the database being unavailable for now: a lost or refused connection,
    or a condition that passes by itself (TRANSIENT_SQLSTATES). Only the error itself counts,
    as Django raises it (its OperationalError or InterfaceError, the driver's error as the
    cause): another error raised while one of these was being handled is that other error."""
    if isinstance(exc, InterfaceError):
        return True  # the connection is closed or unusable
    if isinstance(exc, InternalError):
        return read_only_server(exc)
    if not isinstance(exc, OperationalError):
        return False
    sqlite_name = getattr(exc.__cause__, "sqlite_errorname", None)
    if sqlite_name is not None:
        return sqlite_name in TRANSIENT_SQLITE
    state = sqlstate(exc)
    if state is None:
        return True  # no answer from a server at all: refused, timed out, connection lost
    return state.startswith("08") or state in TRANSIENT_SQLSTATES


def let_go_of_a_read_only_server(exc: BaseException | None) -> None:
    """After `exc`: a connection whose server takes no writes is closed when the request ends,
    so the next request connects anew and finds the new primary.

    Django keeps a persistent connection (CONN_MAX_AGE) after an error as long as it still
    answers, and a read-only server answers: every write would fail for the rest of the
    connection's age, long after the failover."""
    if read_only_server(exc):
        connection.close_at = time.monotonic()
