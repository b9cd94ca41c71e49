"""The API's JSON in and out: DRF's parser and renderer, answering with a 400 (or the escaped
text) what they would let through as a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers, renderers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, refusing nesting deeper than Python's json module recurses (`[[[…` a
    few thousand deep, 10 KB): a RecursionError, which DRF does not catch."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSONRenderer (UTF-8 text as it is), and escaped text for an answer that holds
    half a surrogate pair: a `\\ud800` a client sent parses into a str that UTF-8 cannot
    carry, and a message repeating it (an unknown choice, a field name) failed here, after
    the view, as an HTML 500. Escaped (`\\ud800`), the answer is valid JSON for every reader."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return _EscapingJSONRenderer().render(data, accepted_media_type, renderer_context)


class _EscapingJSONRenderer(renderers.JSONRenderer):
    ensure_ascii = True
