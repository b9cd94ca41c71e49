"""docker-compose.yml and the commands it runs (no Docker engine runs here)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
import time_machine
import yaml
from django.core.management import CommandError, call_command
from django.utils import timezone

from scheduler.models import WorkerHeartbeat
from scheduler.tasks import heartbeat

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_runs_postgres_redis_web_one_worker_and_exactly_one_beat() -> None:
    services = compose()["services"]

    assert sorted(services) == ["beat", "migrate", "postgres", "redis", "web", "worker"]
    assert services["beat"]["deploy"] == {"replicas": 1}
    assert services["web"]["command"][:2] == ["gunicorn", "config.wsgi:application"]
    assert services["worker"]["command"][:6] == [
        "celery",
        "--app",
        "config",
        "worker",
        "--queues",
        "control,celery",
    ]
    assert services["beat"]["command"][:4] == ["celery", "--app", "config", "beat"]


def test_compose_gives_every_long_running_service_a_health_check() -> None:
    services = compose()["services"]

    assert sorted(name for name, s in services.items() if "healthcheck" in s) == [
        "beat",
        "postgres",
        "redis",
        "web",
        "worker",
    ]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name


def test_compose_points_the_app_at_postgres_and_redis() -> None:
    environment = compose()["services"]["web"]["environment"]

    assert environment["DATABASE_URL"] == (
        "postgres://scheduler:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"
        "@postgres:5432/scheduler"
    )
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY in .env}"


@pytest.mark.django_db
def test_heartbeat_check_fails_until_beat_has_reached_a_worker() -> None:
    with pytest.raises(CommandError) as caught:
        call_command("heartbeat_check")

    assert str(caught.value) == "no heartbeat yet: beat or the worker has not run"


@pytest.mark.django_db
@time_machine.travel(dt.datetime(2026, 3, 8, 7, 0, tzinfo=dt.UTC), tick=False)
def test_heartbeat_check_fails_when_the_heartbeat_is_stale() -> None:
    WorkerHeartbeat.objects.create(
        name="worker", beat_at=timezone.now() - dt.timedelta(seconds=400)
    )

    with pytest.raises(CommandError) as caught:
        call_command("heartbeat_check", "--max-age", "180")

    assert str(caught.value) == "last heartbeat 400 s ago (more than 180 s)"


@pytest.mark.django_db
@time_machine.travel(dt.datetime(2026, 3, 8, 7, 0, tzinfo=dt.UTC), tick=False)
def test_heartbeat_check_passes_right_after_the_heartbeat_task(client) -> None:
    heartbeat()
    stdout = io.StringIO()

    call_command("heartbeat_check", stdout=stdout)

    assert stdout.getvalue() == "heartbeat 0 s ago\n"
    assert client.get("/healthz").json() == {
        "database": "ok",
        "worker_heartbeat_age_seconds": 0,
    }
