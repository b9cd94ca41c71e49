"""Cursor pagination for every list of the API.

A list is in the order its view declares (`ordering`, a unique and unchanging key: `id`, or a
trial's or site's `code`), so paging through it while it changes shows every row once: a
visit booked or moved between two pages keeps its place. Cursors are opaque to clients but
not signed, so what one carries is checked before it reaches a query: a cursor this API did
not give, or a `page_size` that is not a whole number from 1 up, is a 400 naming the
parameter, never a 500 or a silently ignored value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor as Position
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

# The longest position a cursor of ours carries: an id, or a code (at most 40 characters).
LONGEST_POSITION = 100
# What every list takes besides its filters (`format`: DRF's json/api renderer choice).
PAGING = frozenset({"cursor", "page_size", "format"})


def refuse_unknown_parameters(request: Request, allowed: Iterable[str]) -> None:
    """A query parameter this endpoint does not take, or one given twice, is a 400 naming it:
    a typo (`sites=tokyo`) would otherwise be the unfiltered list, and of `site=a&site=b`
    only the last counted."""
    allowed = frozenset(allowed)
    errors: dict[str, list[str]] = {}
    for name in request.query_params:
        if name not in allowed:
            takes = ", ".join(sorted(allowed))
            errors[name] = [f"not a parameter of this endpoint, which takes: {takes}"]
        elif len(request.query_params.getlist(name)) > 1:
            errors[name] = ["given more than once: give it once"]
    if errors:
        raise ValidationError(errors)


class Cursor(CursorPagination):
    """Opaque cursors: stable under inserts, and no COUNT(*) over a site's whole history."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("id",)
    invalid_cursor_message = (
        "not a cursor this list gave: use the `next` or `previous` link of the page before"
    )

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        filters = getattr(view, "query_serializer", None)
        refuse_unknown_parameters(request, PAGING | set(filters().fields if filters else ()))
        return super().paginate_queryset(queryset, request, view)

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        return tuple(getattr(view, "ordering", None) or self.ordering)

    def get_page_size(self, request: Request) -> int:
        given = request.query_params.get(self.page_size_query_param)
        if given is None:
            return self.page_size
        digits = given.lstrip("0")
        if not given.isascii() or not given.isdigit() or not digits:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"must be a whole number from 1 to {self.max_page_size} (larger is "
                        f"taken as {self.max_page_size})"
                    ]
                }
            )
        # Compared as text first: int() of thousands of digits is refused (a 500 otherwise).
        return self.max_page_size if len(digits) > 6 else min(int(digits), self.max_page_size)

    def decode_cursor(self, request: Request) -> Position | None:
        try:
            cursor = super().decode_cursor(request)
        except NotFound as error:
            raise ValidationError(
                {self.cursor_query_param: [self.invalid_cursor_message]}
            ) from error
        if cursor is None or cursor.position is None:
            return cursor
        position = str(cursor.position)  # as decoded: text (the stubs say int)
        by_id = self.ordering[0].lstrip("-") in ("id", "pk")
        if (
            len(position) > LONGEST_POSITION
            or "\x00" in position
            or (by_id and not (position.isascii() and position.isdigit()))
        ):
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})
        return cursor
