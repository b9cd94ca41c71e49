"""The API's JSON in and out: DRF's parser and renderer, answering with a 400 (or the escaped
text) what they would let through as a 500, or store as something the client did not send."""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import parsers, renderers, serializers
from rest_framework.exceptions import ParseError, ValidationError


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser (NaN and Infinity refused), refusing also a number too large for a
    float (`1e999`, which Python reads as infinity and a text field stored as "inf"), and
    nesting deeper than Python's json module recurses (`[[[…` a few thousand deep, 10 KB): a
    RecursionError, which DRF does not catch."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=_refuse_constant,
                parse_float=_finite,
            )
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def refuse_numbers_for_text(serializer: serializers.BaseSerializer[Any], data: Any) -> None:
    """Refuse a JSON number where `serializer` takes text: DRF's CharField (and a ChoiceField
    of text choices) turns 1001 into "1001" and 1e2 into "100.0", so a client's bug is stored
    as text nobody sent. A 400 naming each such field, as DRF names its own errors."""
    errors = _numbers_for_text(serializer, data)
    if errors:
        raise ValidationError(errors)


def _numbers_for_text(field: serializers.Field[Any, Any, Any, Any], data: Any) -> Any:
    if isinstance(field, serializers.ListSerializer | serializers.ListField):
        if not isinstance(data, list) or field.child is None:
            return None
        items = [_numbers_for_text(field.child, item) or {} for item in data]
        return items if any(items) else None
    if isinstance(field, serializers.DictField):
        if not isinstance(data, Mapping) or field.child is None:
            return None
        values = {
            key: e for key, value in data.items() if (e := _numbers_for_text(field.child, value))
        }
        return values or None
    if isinstance(field, serializers.Serializer):
        if not isinstance(data, Mapping):
            return None
        found = {
            name: errors
            for name, child in field.fields.items()
            if not child.read_only
            and name in data
            and (errors := _numbers_for_text(child, data[name]))
        }
        return found or None
    takes_text = isinstance(field, serializers.CharField) or (
        isinstance(field, serializers.ChoiceField)
        and all(isinstance(choice, str) for choice in field.choices)
    )
    if takes_text and isinstance(data, int | float) and not isinstance(data, bool):
        return ["Must be a string (in quotes), not a number."]
    return None


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
