"""docker-compose.yml and the commands it runs (no Docker engine runs here)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
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
        "backup",
        "beat",
        "invite-worker",
        "migrate",
        "postgres",
        "proxy",
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
        "control,celery,reminders",
    ]
    assert services["beat"]["command"][:4] == ["celery", "--app", "config", "beat"]


def test_compose_gives_every_long_running_service_a_health_check() -> None:
    services = compose()["services"]

    assert sorted(name for name, s in services.items() if "healthcheck" in s) == [
        "backup",
        "beat",
        "invite-worker",
        "postgres",
        "proxy",
        "redis",
        "web",
        "webhook-worker",
        "worker",
    ]
    for name in ("web", "worker", "invite-worker", "webhook-worker", "beat"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name


def test_compose_points_the_app_at_postgres_and_redis() -> None:
    environment = compose()["services"]["web"]["environment"]

    # No password in the URL: it comes from the secret file. The app's own role, not the owner.
    assert environment["DATABASE_URL"] == "postgres://scheduler_app@postgres:5432/scheduler"
    assert environment["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_app_password"
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["SECRET_KEY_FILE"] == "/run/secrets/secret_key"


def test_compose_migrates_as_the_owner_and_runs_the_app_as_its_own_role() -> None:
    from scheduler.appendonly.grants import APP_ROLE

    services = compose()["services"]
    postgres = services["postgres"]
    init_script = (DEPLOY / "postgres-init" / "10-app-role.sh").read_text(encoding="utf-8")
    owner = postgres["environment"]["POSTGRES_USER"]
    app_services = sorted(
        name for name, s in services.items() if s.get("image") == "trial-visit-scheduler:latest"
    )
    connects_as = {
        name: (
            services[name]["environment"]["DATABASE_URL"].split("//", 1)[1].split("@", 1)[0],
            services[name]["environment"]["DATABASE_PASSWORD_FILE"],
            "postgres_password" in services[name]["secrets"],
        )
        for name in app_services
    }

    # Only `migrate` holds the owner's password; every other process is the app's role, which
    # the init script creates with the password compose mounts, and post_migrate grants.
    assert (owner, APP_ROLE) == ("scheduler", "scheduler_app")
    assert connects_as == {
        name: (APP_ROLE, "/run/secrets/postgres_app_password", False)
        for name in app_services
        if name != "migrate"
    } | {"migrate": (owner, "/run/secrets/postgres_password", True)}
    assert "migrate" in app_services and "web" in app_services and "beat" in app_services
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert postgres["volumes"][1] == "./deploy/postgres-init:/docker-entrypoint-initdb.d:ro"
    assert postgres["secrets"] == ["postgres_password", "postgres_app_password"]
    assert f'APP_DB_ROLE="${{APP_DB_ROLE:-{APP_ROLE}}}"' in init_script
    assert (
        'APP_DB_PASSWORD_FILE="${APP_DB_PASSWORD_FILE:-/run/secrets/postgres_app_password}"'
        in init_script
    )
    assert os.access(DEPLOY / "postgres-init" / "10-app-role.sh", os.X_OK)


def _development_key_refusal() -> str:
    from django.core.exceptions import ImproperlyConfigured

    from config.startup import require_secret_key

    with pytest.raises(ImproperlyConfigured) as caught:
        require_secret_key()
    return f"refusing to start: {caught.value}"


# The signal is sent as Celery would, but without a worker: Celery's own Django fixup, also
# connected to it, warns that it got none. Not this test's subject.
@pytest.mark.filterwarnings("ignore::celery.exceptions.FixupWarning")
@pytest.mark.parametrize("signal_name", ["worker_init", "beat_init"])
def test_celery_startup_refuses_the_development_key_outside_debug(signal_name: str) -> None:
    from celery import signals

    signal = getattr(signals, signal_name)

    with pytest.raises(SystemExit) as refused:
        signal.send(sender=None)
    with override_settings(SECRET_KEY="k" * 50, DEBUG=False):
        with_a_key = signal.send(sender=None)
    with override_settings(DEBUG=True):
        on_a_laptop = signal.send(sender=None)

    assert str(refused.value) == _development_key_refusal()
    assert [response for _, response in with_a_key + on_a_laptop if response is not None] == []


@pytest.mark.parametrize(
    "command",
    [["worker", "--pool", "solo", "--without-mingle", "--without-gossip"], ["beat"]],
    ids=["worker", "beat"],
)
def test_a_celery_process_without_its_secret_key_exits(command: list[str], tmp_path: Path) -> None:
    # The development key and DEBUG off, as a deployment that forgot SECRET_KEY_FILE; the
    # laptop's folder broker under tmp_path, so nothing needs Redis.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SECRET_KEY", "SECRET_KEY_FILE", "DEBUG", "REDIS_URL", "DATABASE_URL"}
    }
    result = subprocess.run(
        [sys.executable, "-m", "celery", "--app", "config", *command, "--loglevel", "WARNING"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**env, "VAR_DIR": str(tmp_path)},
    )

    # beat hands its stderr to its logger, which puts "[time: WARNING/MainProcess] " first.
    last_line = re.sub(r"^\[[^]]*\] ", "", result.stderr.splitlines()[-1])

    assert (result.returncode, last_line) == (1, _development_key_refusal())


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


def interpolate(environment: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` filled from `env`, as
    `docker compose config` would (a missing required name raises KeyError)."""

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator is None:
            return ""
        if operator == ":-":
            return word
        raise KeyError(f"{name}: {word}")

    return {
        key: re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)
        for key, value in environment.items()
    }


def _compose_default(value: str) -> str:
    """The default of a compose `${NAME:-default}` value."""
    return value.split(":-", 1)[1].rstrip("}")


@pytest.mark.django_db
def test_compose_web_health_check_passes_with_the_readme_env(client) -> None:
    probe = compose()["services"]["web"]["healthcheck"]["test"][-1]
    url = probe.split("urlopen('", 1)[1].split("'", 1)[0]
    host, path = url.removeprefix("http://").split("/", 1)
    environment = interpolate(compose()["services"]["web"]["environment"], _readme_env())
    allowed = environment["ALLOWED_HOSTS"].split(",")

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


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_health_endpoints_answer_nothing_but_get_and_head(client, path: str) -> None:
    with override_settings(ALLOWED_HOSTS=["scheduler.example.org"]):
        response = client.post(path, HTTP_HOST="127.0.0.1:8000")

    assert response.status_code == 400


def test_the_liveness_probe_answers_any_host_and_reads_nothing(client) -> None:
    # No django_db mark: any database access here would raise.
    with override_settings(ALLOWED_HOSTS=["scheduler.example.org"]):
        probed = client.get("/livez", HTTP_HOST="10.0.0.7:8000")
        headed = client.head("/livez", HTTP_HOST="10.0.0.7:8000")

    assert (probed.status_code, probed.json()) == (200, {"process": "ok"})
    assert headed.status_code == 200


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
        "'scheduler.send_reminders', 'scheduler.send_webhook']"
    )


def test_every_routed_queue_has_a_worker_in_compose_and_on_the_laptop() -> None:
    from django.conf import settings

    routed = (
        {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
        | set(settings.OUTBOX_QUEUES.values())
        | {"celery"}
    )
    services = compose()["services"]
    in_compose = set()
    for service in services.values():
        command = service.get("command") or []
        if command[3:4] == ["worker"]:
            in_compose |= set(command[command.index("--queues") + 1].split(","))
    procfile = (ROOT / "Procfile.dev").read_text(encoding="utf-8")
    laptop = set(procfile.split("--queues ", 1)[1].split(" ", 1)[0].split(","))

    assert sorted(routed) == ["celery", "control", "invites", "reminders", "webhooks"]
    assert in_compose == routed
    assert laptop == routed


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    # No Docker engine runs here: the file is checked against the Compose specification's JSON
    # schema (compose_spec.json, Apache-2.0, from docker-compose 1.29.2) instead.
    import jsonschema

    schema = json.loads((ROOT / "tests" / "compose_spec.json").read_text(encoding="utf-8"))

    errors = sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(compose())
    )

    assert errors == []


# --- the deployment a hospital's IT reviews: one published proxy, secrets as files, backups ---

DEPLOY = ROOT / "deploy"


def test_compose_publishes_nothing_but_the_tls_proxy() -> None:
    services = compose()["services"]

    published = {name: s["ports"] for name, s in services.items() if "ports" in s}

    assert published == {"proxy": ["80:80", "443:443", "443:443/udp"]}
    assert [name for name, s in services.items() if "network_mode" in s or "expose" in s] == []
    assert services["proxy"]["image"].split(":")[0] == "caddy"  # the official image
    assert services["proxy"]["volumes"][0] == "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro"


def test_compose_keeps_postgres_and_redis_on_a_network_with_no_way_in_or_out() -> None:
    spec = compose()
    networks = {name: s["networks"] for name, s in spec["services"].items()}

    assert spec["networks"] == {"edge": {}, "backend": {"internal": True}, "egress": {}}
    assert networks == {
        "proxy": ["edge"],
        "postgres": ["backend"],
        "redis": ["backend"],
        "backup": ["backend"],
        "migrate": ["backend"],
        "web": ["backend", "edge"],
        "worker": ["backend", "egress"],
        "invite-worker": ["backend", "egress"],
        "webhook-worker": ["backend", "egress"],
        "beat": ["backend"],
    }


SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|KEY|EMAIL_URL")


def test_compose_passes_every_secret_as_a_file_never_in_the_environment() -> None:
    spec = compose()
    declared = spec["secrets"]
    findings = []
    for name, service in spec["services"].items():
        environment = service.get("environment", {})
        mounted = set(service.get("secrets", []))
        for key, value in environment.items():
            if key.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                if value != f"/run/secrets/{secret}" or secret not in mounted:
                    findings.append(f"{name}: {key}={value} is not a secret it mounts")
            elif SECRET_WORDS.search(key):
                findings.append(f"{name}: {key} holds a secret in the environment")
            elif re.search(r"://[^/@]*:[^/@]*@", str(value)):
                findings.append(f"{name}: {key} has a password in its URL")

    assert findings == []
    assert declared == {
        name: {"file": f"./secrets/{name}"}
        for name in (
            "secret_key",
            "postgres_password",
            "postgres_app_password",
            "email_url",
            "twilio_auth_token",
        )
    }
    assert spec["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == (
        "/run/secrets/postgres_password"
    )
    assert spec["services"]["backup"]["environment"]["PGPASSWORD_FILE"] == (
        "/run/secrets/postgres_password"
    )


def test_the_readme_creates_exactly_the_secret_files_compose_mounts(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("# --- secrets ---\n", 1)[1].split("\n# --- end secrets ---", 1)[0]

    subprocess.run(["sh", "-eu", "-c", block], cwd=tmp_path, check=True, timeout=60)
    secrets = tmp_path / "secrets"
    created = {path.name: path for path in secrets.iterdir()}

    assert {f"./secrets/{name}" for name in created} == {
        declared["file"] for declared in compose()["secrets"].values()
    }
    # The directory keeps other host users out; the files stay readable by the containers'
    # users (the app's uid 10001, Postgres's 999), which compose cannot chown them to.
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    assert {
        name: oct(path.stat().st_mode & 0o777) for name, path in created.items()
    } == dict.fromkeys(created, "0o444")
    assert len(created["secret_key"].read_text().strip()) >= 50
    assert len(created["postgres_password"].read_text().strip()) >= 32
    assert len(created["postgres_app_password"].read_text().strip()) >= 32
    assert created["postgres_app_password"].read_text() != created["postgres_password"].read_text()


def test_compose_backup_service_runs_the_backup_script_on_a_schedule() -> None:
    backup = compose()["services"]["backup"]

    assert backup["image"] == compose()["services"]["postgres"]["image"]
    assert backup["volumes"] == ["./deploy:/deploy:ro", "backups:/backups"]
    assert backup["command"][-1] == (
        'while :; do sh /deploy/backup.sh || echo "backup failed" >&2; '
        'sleep "$$BACKUP_INTERVAL_SECONDS"; done'
    )
    assert (backup["environment"]["PGDATABASE"], backup["environment"]["BACKUP_DIR"]) == (
        "scheduler",
        "/backups",
    )
    for script in ("backup.sh", "restore.sh"):
        assert os.access(DEPLOY / script, os.X_OK), script


def caddy_binary() -> str:
    """The caddy binary; the test skips without it, and fails in CI (CI=true)."""
    caddy = shutil.which("caddy")
    if caddy is None:
        message = "caddy is not installed (Debian: apt-get install caddy)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{message}; CI=true: the Caddyfile must be checked")
        pytest.skip(message)
    return caddy


def _caddy_adapt(**env: str) -> dict:
    """deploy/Caddyfile adapted to Caddy's JSON config by the caddy binary (no server runs)."""
    result = subprocess.run(
        [caddy_binary(), "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
    )
    return json.loads(result.stdout)


def _site(config: dict) -> tuple[list[str], list[dict]]:
    (server,) = config["apps"]["http"]["servers"].values()
    (route,) = server["routes"]
    return route["match"][0]["host"], route["handle"][0]["routes"][0]["handle"]


def test_caddyfile_proxies_the_site_to_gunicorn_with_automatic_https() -> None:
    config = _caddy_adapt(SITE_ADDRESS="scheduler.example.org")
    hosts, handlers = _site(config)
    gunicorn_bind = compose()["services"]["web"]["command"][2]

    assert hosts == ["scheduler.example.org"]
    assert config["apps"]["http"]["servers"]["srv0"]["listen"] == [":443"]
    assert [handler["handler"] for handler in handlers] == ["request_body", "reverse_proxy"]
    assert handlers[1]["upstreams"] == [{"dial": "web:8000"}]
    assert gunicorn_bind == "--bind=0.0.0.0:8000"
    assert handlers[1]["health_checks"]["active"]["uri"] == "/livez"
    # Automatic HTTPS from a public CA: no issuer is pinned; no access log, no header set here.
    assert "tls" not in config["apps"]
    assert "logging" not in config
    assert config["admin"] == {"listen": "127.0.0.1:2019"}


def test_caddyfile_uses_its_local_ca_for_an_intranet_name_or_localhost() -> None:
    intranet = _caddy_adapt(SITE_ADDRESS="scheduler.hospital.internal", TLS_MODE="internal")
    local = _caddy_adapt()

    assert intranet["apps"]["tls"]["automation"]["policies"] == [
        {"subjects": ["scheduler.hospital.internal"], "issuers": [{"module": "internal"}]}
    ]
    # localhost needs no setting: Caddy issues it from the local CA by itself.
    assert _site(local)[0] == ["localhost"]
    assert "tls" not in local["apps"]


def test_caddy_health_check_reads_the_admin_api_the_caddyfile_opens() -> None:
    probe = compose()["services"]["proxy"]["healthcheck"]["test"]
    admin = _caddy_adapt(SITE_ADDRESS="scheduler.example.org")["admin"]["listen"]

    # A GET (busybox wget in the alpine image): the admin API answers /config/ to GET only.
    assert probe == ["CMD", "wget", "-q", "-O", "/dev/null", f"http://{admin}/config/"]


def test_the_app_reads_every_secret_compose_mounts_from_its_file(tmp_path: Path) -> None:
    environment = interpolate(compose()["x-app"]["environment"], _readme_env())
    values = {
        "secret_key": "k" * 60,
        "postgres_app_password": "pg-pass word",
        "email_url": "smtp+tls://visits%40example.org:mail-pass@smtp.example.org:587",
        "twilio_auth_token": "twilio-token",
    }
    for name, value in values.items():
        # As `echo … > file` writes it: the trailing newline is not part of the secret.
        (tmp_path / name).write_text(value + "\n", encoding="utf-8")
    files = {
        key: str(tmp_path / value.removeprefix("/run/secrets/"))
        for key, value in environment.items()
        if key.endswith("_FILE")
    }
    code = (
        "import json; from django.conf import settings as s; print(json.dumps(["
        "s.SECRET_KEY, s.DATABASES['default']['PASSWORD'], s.DATABASES['default']['USER'], "
        "s.DATABASES['default']['HOST'], s.EMAIL_HOST_PASSWORD, s.EMAIL_HOST, "
        "s.TWILIO_AUTH_TOKEN, s.ALLOWED_HOSTS, s.SECURE_PROXY_SSL_HEADER]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "VAR_DIR": str(tmp_path / "var"),
            **{key: value for key, value in environment.items() if not key.endswith("_FILE")},
            **files,
        },
    )

    assert sorted(files) == [
        "DATABASE_PASSWORD_FILE",
        "EMAIL_URL_FILE",
        "SECRET_KEY_FILE",
        "TWILIO_AUTH_TOKEN_FILE",
    ]
    assert json.loads(result.stdout) == [
        "k" * 60,
        "pg-pass word",
        "scheduler_app",
        "postgres",
        "mail-pass",
        "smtp.example.org",
        "twilio-token",
        ["scheduler.example.org"],
        ["HTTP_X_FORWARDED_PROTO", "https"],
    ]


def test_backup_health_check_fails_without_a_recent_dump(tmp_path: Path) -> None:
    probe = compose()["services"]["backup"]["healthcheck"]["test"]
    # Compose turns `$$` into `$`; the dumps are in tmp_path instead of the volume.
    command = probe[1].replace("$$", "$").replace("/backups", str(tmp_path))
    env = {"PATH": os.environ["PATH"], "BACKUP_INTERVAL_SECONDS": "86400"}

    def healthy() -> bool:
        return subprocess.run(["sh", "-c", command], env=env, check=False).returncode == 0

    dump = tmp_path / "scheduler-20260301T020000Z.dump"
    states = [healthy()]
    dump.write_bytes(b"dump")
    states.append(healthy())
    os.utime(dump, (dump.stat().st_atime, dump.stat().st_mtime - 2 * 86400 - 60))
    states.append(healthy())

    assert probe[0] == "CMD-SHELL"
    assert states == [False, True, False]


# ----------------------------------------------------------------------------------------
# Production settings (config/settings.py): what a deployment's environment gives, read in a
# fresh interpreter as gunicorn would, since settings are read once at start-up.

PRODUCTION_PROBE = """
import json, django
from django.conf import settings
django.setup()
from django.core import checks
from django.test import Client
found = [
    m.id for m in checks.run_checks(include_deployment_checks=True)
    if m.level >= checks.WARNING and not m.is_silenced()
]
client = Client()
plain = client.get("/admin/login/", HTTP_HOST="scheduler.example.org")
probe = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
proxied = client.get(
    "/admin/login/", HTTP_HOST="scheduler.example.org", HTTP_X_FORWARDED_PROTO="https"
)
print(json.dumps({
    "warnings": found,
    "plain": [plain.status_code, plain.get("Location")],
    "probe_redirected": probe.status_code in (301, 302),
    "proxied": proxied.status_code,
    "hsts": proxied.get("Strict-Transport-Security"),
    "csp": proxied.get("Content-Security-Policy"),
    "cookies": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE,
                settings.SESSION_COOKIE_SAMESITE, settings.CSRF_COOKIE_SAMESITE],
    "session": [settings.SESSION_COOKIE_AGE, settings.SESSION_EXPIRE_AT_BROWSER_CLOSE],
    "proxy": [list(settings.SECURE_PROXY_SSL_HEADER), settings.USE_X_FORWARDED_HOST],
    "secret_key": settings.SECRET_KEY,
}))
"""


def _run_with(environment: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    # Only what a deployment sets, not the test run's own DATABASE_URL, DEBUG or CI.
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**keep, "DJANGO_SETTINGS_MODULE": "config.settings", **environment},
    )


def _secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")  # as `echo … > file` writes it
    return str(path)


def test_check_deploy_finds_nothing_in_the_production_configuration(tmp_path) -> None:
    from tests.review_summary import record

    key = "k" * 20 + "-production-secret-0123456789-abcdefghij"
    result = _run_with(
        {
            "SECRET_KEY_FILE": _secret_file(tmp_path, "secret_key", key),
            "ALLOWED_HOSTS": "scheduler.example.org",
            "VAR_DIR": str(tmp_path),
        },
        PRODUCTION_PROBE,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    record("deploy-check warnings", len(seen["warnings"]))

    assert seen["warnings"] == []
    # Plain HTTP goes to HTTPS, but for the health probe (by IP, over plain HTTP).
    assert seen["plain"] == [301, "https://scheduler.example.org/admin/login/"]
    assert seen["probe_redirected"] is False
    assert seen["proxied"] == 200
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    # (django-csp writes the directives in no fixed order.)
    assert sorted(seen["csp"].split("; ")) == [
        "base-uri 'none'",
        "connect-src 'self'",
        "default-src 'self'",
        "font-src 'self' data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "img-src 'self' data:",
        "object-src 'none'",
        "script-src 'self' 'unsafe-hashes' 'sha256-aSx1rCOUfYYqn4Vxng+jS5F6gK1RQbKxVjGd2feTgnM='",
        "style-src 'self' 'unsafe-inline'",
    ]
    assert seen["cookies"] == [True, True, "Lax", "Lax"]
    assert seen["session"] == [1800, True]
    assert seen["proxy"] == [["HTTP_X_FORWARDED_PROTO", "https"], True]
    assert seen["secret_key"] == key


def test_secrets_come_from_files_without_their_trailing_newline(tmp_path) -> None:
    result = _run_with(
        {
            "SECRET_KEY_FILE": _secret_file(tmp_path, "secret_key", "s" * 60),
            "DATABASE_URL_FILE": _secret_file(
                tmp_path, "database_url", "postgres://scheduler@postgres:5432/scheduler"
            ),
            "DATABASE_PASSWORD_FILE": _secret_file(tmp_path, "postgres_password", "pg-pw-42"),
            "REDIS_URL_FILE": _secret_file(tmp_path, "redis_url", "redis://redis:6379/0"),
            "TWILIO_AUTH_TOKEN_FILE": _secret_file(tmp_path, "twilio", "tw-token"),
            "ALLOWED_HOSTS": "scheduler.example.org",
            "VAR_DIR": str(tmp_path),
        },
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECRET_KEY, {k: s.DATABASES['default'][k] for k in "
        "('ENGINE', 'NAME', 'USER', 'PASSWORD', 'HOST')}, s.CELERY_BROKER_URL, "
        "s.TWILIO_AUTH_TOKEN]))",
    )
    assert result.returncode == 0, result.stderr

    assert json.loads(result.stdout) == [
        "s" * 60,
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "scheduler",
            "USER": "scheduler",
            "PASSWORD": "pg-pw-42",
            "HOST": "postgres",
        },
        "redis://redis:6379/0",
        "tw-token",
    ]


def test_the_web_app_refuses_to_start_without_a_secret_key_outside_debug(tmp_path) -> None:
    start = "import config.wsgi; print('started')"

    refused = _run_with({"VAR_DIR": str(tmp_path)}, start)
    empty = _run_with({"VAR_DIR": str(tmp_path), "SECRET_KEY": ""}, start)
    debug = _run_with({"VAR_DIR": str(tmp_path), "DEBUG": "true"}, start)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set: set SECRET_KEY "
        "(or SECRET_KEY_FILE, a file holding it) to a long random value, e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`; only DEBUG=true runs "
        "with the development key."
    )
    assert empty.returncode == 1
    assert (debug.returncode, debug.stdout) == (0, "started\n")
