"""Idempotency-Key on POSTs that create or act: a retried request gets the first response.

The record is inserted before the work and completed after it, in one transaction, so on
Postgres a concurrent retry with the same key waits on the unique index until the first
commits, then replays its response; if the first failed, nothing of it remains and the retry
runs afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from scheduler.api.errors import Problem
from scheduler.api.models import IdempotencyRecord

HEADER = "Idempotency-Key"
KEPT_HEADERS = ("ETag", "Location")


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, cls=DjangoJSONEncoder)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _key(request: Request) -> str:
    key = request.headers.get(HEADER, "").strip()
    problem = ""
    if not key:
        problem = "this request creates or acts: send an Idempotency-Key header (a new UUID)"
    elif len(key) > 255 or not key.isascii() or not key.isprintable():
        problem = "an Idempotency-Key is at most 255 printable ASCII characters"
    if problem:
        raise Problem(problem, errors=[{"field": HEADER, "message": problem}])
    return key


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.request_sha256 != fingerprint:
        message = (
            f"this Idempotency-Key was first used for {record.method} {record.path} with "
            "another body; use a new key for a new request"
        )
        raise Problem(
            message,
            errors=[{"field": HEADER, "message": message}],
            status_code=422,
            problem_type="idempotency-key-reused",
        )
    headers = {**record.response_headers, "Idempotent-Replayed": "true"}
    return Response(record.response_body, status=record.status_code, headers=headers)


def idempotent(
    request: Request,
    act: Callable[[], Response],
    *,
    stored: Callable[[Any], Any] | None = None,
) -> Response:
    """Run `act` once per (user, Idempotency-Key); replay its response on a retry.

    `stored` is what of the response body is kept for a replay: a secret shown once (a feed's
    URL) is left out, so the database never holds it.
    """
    key = _key(request)
    fingerprint = _fingerprint(request)
    user: Any = request.user
    existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if existing is not None:
        return _replay(existing, fingerprint)
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                user=user,
                key=key,
                method=request.method or "",
                path=request.path[:500],
                request_sha256=fingerprint,
                status_code=0,
                response_body={},
            )
            response = act()
            record.status_code = response.status_code
            body = _plain(response.data)
            record.response_body = stored(body) if stored is not None else body
            record.response_headers = {h: response[h] for h in KEPT_HEADERS if h in response}
            record.save(update_fields=["status_code", "response_body", "response_headers"])
    except IntegrityError:
        # Another request with this key committed first (we waited on its row).
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    return response


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def idempotency_prune(*, now: dt.datetime | None = None, batch: int = 10_000) -> int:
    """Delete Idempotency-Key records older than settings.IDEMPOTENCY_KEEP_DAYS (7 by
    default); returns how many. A retry after that is a new request. Deleted in batches so
    a large backlog never holds one long lock."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.IDEMPOTENCY_KEEP_DAYS)
    deleted = 0
    while True:
        ids = list(
            IdempotencyRecord.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[
                :batch
            ]
        )
        if not ids:
            return deleted
        deleted += IdempotencyRecord.objects.filter(pk__in=ids).delete()[0]
