"""What every face answers while the database is away (a restart, a failover, a dropped
connection): 503 Service Unavailable with Retry-After, never a 500.

A database error of the "operational" kind means the request could not be carried out for
now: the connection is refused, lost or timed out, or the server cancelled the statement or
chose it as a deadlock's victim. Trying again later is the right thing for a person and for a
site system alike, and a 503 with Retry-After says exactly that (many HTTP clients and
proxies retry it; few retry a 500). A change sent when the connection was lost during the
commit may or may not have been written, so the words say to look before repeating it.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
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


def database_away(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is the database being unavailable for now."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return False
