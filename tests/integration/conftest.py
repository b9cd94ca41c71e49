from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from django.conf import settings


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The Celery broker (the real Redis in these tests), for looking at and cleaning queues."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()
