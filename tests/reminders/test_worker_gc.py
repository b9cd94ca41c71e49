"""A worker's start-up objects are out of the garbage collector's sight (scheduler/tasks.py):
a full collection otherwise walks all of them every few batches of reminders."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery.signals import worker_process_init, worker_ready

import scheduler.tasks  # noqa: F401 - connects the receivers


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process goes on as it was


@pytest.mark.parametrize("signal", [worker_ready, worker_process_init], ids=lambda s: s.name)
def test_a_started_worker_or_pool_child_freezes_what_it_loaded(unfrozen: None, signal) -> None:
    assert gc.get_freeze_count() == 0
    loaded = len(gc.get_objects())

    signal.send(sender=None)

    # Everything that survived the collection is frozen; the oldest generation is empty.
    assert gc.get_freeze_count() > loaded // 2
    assert gc.get_objects(generation=2) == []
