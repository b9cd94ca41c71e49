"""A real Celery worker, over real Redis, writing to the real Postgres test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from scheduler.models import WorkerHeartbeat
from scheduler.tasks import heartbeat

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_heartbeat_task_runs_on_a_real_worker_through_redis() -> None:
    queue = f"test-{uuid.uuid4().hex[:12]}"
    database = connection.settings_dict
    env = {
        **os.environ,
        # The test process's development key: a worker refuses it outside DEBUG.
        "DEBUG": "true",
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        ),
    }
    worker = subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
        [
            sys.executable,
            "-m",
            "celery",
            "--app",
            "config",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queue,
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        heartbeat.apply_async(queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not WorkerHeartbeat.objects.exists():
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.2)

        assert list(WorkerHeartbeat.objects.values_list("name", flat=True)) == ["worker"]
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.mark.integration
def test_integration_runs_on_postgres() -> None:
    assert connection.vendor == "postgresql"
