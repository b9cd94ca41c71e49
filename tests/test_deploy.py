"""docker-compose.yml and the commands it runs (no Docker engine runs here)."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import time_machine
import yaml
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from django.utils.module_loading import import_string

from scheduler.models import WorkerHeartbeat
from scheduler.tasks import heartbeat

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_runs_postgres_redis_web_one_worker_and_exactly_one_beat() -> None:
    services = compose()["services"]

    assert sorted(services) == [
        "beat",
        "migrate",
        "postgres",
        "redis",
        "web",
        "webhook-worker",
        "worker",
    ]
    assert services["webhook-worker"]["command"][:6] == [
        "celery",
        "--app",
        "config",
        "worker",
        "--queues",
        "webhooks",
    ]
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
        "webhook-worker",
        "worker",
    ]
    for name in ("web", "worker", "webhook-worker", "beat"):
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


def _readme_env() -> dict[str, str]:
    """The `.env` the README tells a site to write for docker-compose."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("cat > .env <<'ENV'\n", 1)[1].split("\nENV\n", 1)[0]
    return dict(line.split("=", 1) for line in block.splitlines())


def _compose_default(value: str) -> str:
    """The default of a compose `${NAME:-default}` value."""
    return value.split(":-", 1)[1].rstrip("}")


@pytest.mark.django_db
def test_compose_web_health_check_passes_with_the_readme_env(client) -> None:
    probe = compose()["services"]["web"]["healthcheck"]["test"][-1]
    url = probe.split("urlopen('", 1)[1].split("'", 1)[0]
    host, path = url.removeprefix("http://").split("/", 1)
    allowed = _readme_env()["ALLOWED_HOSTS"].split(",")

    with override_settings(ALLOWED_HOSTS=allowed):
        probed = client.get(f"/{path}", HTTP_HOST=host)
        other_page = client.get("/admin/login/", HTTP_HOST=host)

    assert (allowed, host, path) == (["scheduler.example.org"], "127.0.0.1:8000", "healthz")
    assert (probed.status_code, probed.json()) == (
        200,
        {"database": "ok", "worker_heartbeat_age_seconds": None},
    )
    # Only the health endpoint is exempt: every other page still refuses an unlisted Host.
    assert other_page.status_code == 400


def test_health_endpoint_answers_nothing_but_get_and_head(client) -> None:
    with override_settings(ALLOWED_HOSTS=["scheduler.example.org"]):
        response = client.post("/healthz", HTTP_HOST="127.0.0.1:8000")

    assert response.status_code == 400


def test_compose_default_backends_import() -> None:
    environment = compose()["x-app"]["environment"]

    backend = import_string(_compose_default(environment["SMS_BACKEND"]))

    assert backend.__module__ == "scheduler.outbox.sms"


def test_a_web_process_knows_the_tasks_the_outbox_enqueues_by_name() -> None:
    # A fresh interpreter, as gunicorn starts one: the outbox names tasks instead of importing
    # them, so the app's startup must register them or the first enrollment fails.
    code = (
        "import django; django.setup(); from celery import current_app; "
        "print(sorted(n for n in current_app.tasks if n.startswith('scheduler.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )

    assert result.stdout.strip() == (
        "['scheduler.heartbeat', 'scheduler.reminders_sweep', 'scheduler.send_reminder', "
        "'scheduler.send_webhook']"
    )


def test_every_routed_queue_has_a_worker_in_compose_and_on_the_laptop() -> None:
    from django.conf import settings

    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {"celery"}
    services = compose()["services"]
    in_compose = set()
    for service in services.values():
        command = service.get("command") or []
        if command[3:4] == ["worker"]:
            in_compose |= set(command[command.index("--queues") + 1].split(","))
    procfile = (ROOT / "Procfile.dev").read_text(encoding="utf-8")
    laptop = set(procfile.split("--queues ", 1)[1].split(" ", 1)[0].split(","))

    assert sorted(routed) == ["celery", "control", "webhooks"]
    assert in_compose == routed
    assert laptop == routed


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    # No Docker engine runs here: the file is checked against the Compose specification's JSON
    # schema (compose_spec.json, Apache-2.0, from docker-compose 1.29.2) instead.
    import json

    import jsonschema

    schema = json.loads((ROOT / "tests" / "compose_spec.json").read_text(encoding="utf-8"))

    errors = sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(compose())
    )

    assert errors == []
