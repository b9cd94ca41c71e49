"""The API's shared cache (throttle counts) and the pruning of Idempotency-Key records."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.conf import settings

from config.celery import app
from scheduler.api.idempotency import idempotency_prune
from scheduler.api.models import IdempotencyRecord
from scheduler.api.tasks import prune_idempotency_records
from tests.api.conftest import NOW, World
from tests.outages import configured


def _record(world: World, key: str, created: dt.datetime) -> IdempotencyRecord:
    with time_machine.travel(created, tick=False):
        return IdempotencyRecord.objects.create(
            user=world.users["coordinator"],
            key=key,
            method="POST",
            path="/api/v1/participants/",
            request_sha256="0" * 64,
            status_code=201,
            response_body={},
        )


@pytest.mark.django_db
def test_records_older_than_seven_days_are_pruned(world: World) -> None:
    _record(world, "old", NOW - dt.timedelta(days=7, seconds=1))
    _record(world, "week", NOW - dt.timedelta(days=7) + dt.timedelta(seconds=1))
    _record(world, "new", NOW)

    assert idempotency_prune(batch=1) == 1
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new", "week"]


@pytest.mark.django_db
def test_the_prune_task_runs_daily_in_utc(world: World) -> None:
    _record(world, "old", NOW - dt.timedelta(days=30))

    prune_idempotency_records.delay()

    entry: dict[str, Any] = settings.CELERY_BEAT_SCHEDULE["api-idempotency-prune"]
    assert entry["task"] == "scheduler.api.idempotency_prune" in app.tasks
    assert (entry["schedule"].hour, entry["schedule"].minute) == ({3}, {15})
    assert settings.CELERY_TIMEZONE == "UTC"
    assert IdempotencyRecord.objects.count() == 0


def _caches(**env: str) -> dict:
    return configured("CACHES", **env)["default"]  # type: ignore[no-any-return]


def test_the_throttle_cache_is_redis_when_redis_url_is_set() -> None:
    redis = "django.core.cache.backends.redis.RedisCache"
    # Its own database, next to the broker's: clearing the cache flushes only that one.
    # A server that does not answer within half a second counts as away (redis-py would wait
    # 5 s; tests/api/test_cache_away.py shows what the API does then).
    timeouts = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    assert _caches(REDIS_URL="redis://127.0.0.1:6379/0") == {
        "BACKEND": redis,
        "LOCATION": "redis://127.0.0.1:6379/1",
        "KEY_PREFIX": "scheduler",
        "OPTIONS": timeouts,
    }
    assert _caches(REDIS_URL="rediss://:pw@redis.internal:6380")["LOCATION"] == (
        "rediss://:pw@redis.internal:6380/1"
    )
    assert _caches(REDIS_URL="redis://r:6379/0", CACHE_REDIS_URL="redis://c:6379/5") == {
        "BACKEND": redis,
        "LOCATION": "redis://c:6379/5",
        "KEY_PREFIX": "scheduler",
        "OPTIONS": timeouts,
    }
    assert _caches() == {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
