"""What a site's IT team configures must reach the app, KEDA and the README alike: the broker
checks a managed Redis's certificate, KEDA reaches the Redis the app does, the README's table
lists every variable settings.py reads, gunicorn keeps idle connections longer than the
proxies in front of it."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
SECRET_TEMPLATE = (KUBE / "secret.example.yaml").read_text(encoding="utf-8")


def _example_redis_url() -> str:
    """The managed Redis URL secret.example.yaml tells a site to put in `redis-url`."""
    found = re.findall(r"\((rediss?://[^)\s]+)\)", SECRET_TEMPLATE)
    assert len(found) == 1, found
    return found[0]


def _example_keda_address() -> str:
    """The address secret.example.yaml tells a site to put in scheduler-keda-redis."""
    found = re.findall(r"--from-literal=address=(\S+)", SECRET_TEMPLATE)
    assert len(found) == 1, found
    return found[0]


def test_the_broker_verifies_the_managed_redis_certificate(tmp_path: Path) -> None:
    """With the Redis URL secret.example.yaml documents (rediss://, a managed Redis), every
    Celery connection (web publishes, workers, beat) must verify the server's certificate.
    Given no ssl options, kombu logs a warning and connects with ssl_cert_reqs=CERT_NONE:
    the broker password and every task message travel over TLS that any machine in the path
    can intercept. (Django's Redis cache, through redis-py, does verify.)"""
    (tmp_path / "redis-url").write_text(_example_redis_url() + "\n", encoding="utf-8")
    (tmp_path / "secret-key").write_text("k" * 60 + "\n", encoding="utf-8")
    code = (
        "import json; from config.celery import app; c = app.connection_for_write(); "
        "print(json.dumps(int((c.ssl or {}).get('ssl_cert_reqs', -1)) "
        "if isinstance(c.ssl, dict) else -1))"
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
            "REDIS_URL_FILE": str(tmp_path / "redis-url"),
            "SECRET_KEY_FILE": str(tmp_path / "secret-key"),
        },
    )
    assert json.loads(result.stdout) == int(ssl.CERT_REQUIRED)


def test_keda_reaches_redis_the_way_the_app_does() -> None:
    """KEDA measures the same Redis the workers consume. secret.example.yaml's REDIS_URL is
    rediss:// on 6380, but its scheduler-keda-redis address is :6379 and no redis trigger
    sets enableTLS, so on that managed Redis every trigger fails and the workers never scale
    past one pod."""
    app = urlsplit(_example_redis_url())
    keda_host, _, keda_port = _example_keda_address().rpartition(":")
    assert (keda_host, int(keda_port)) == (app.hostname, app.port or 6379)
    tls = app.scheme == "rediss"
    documents = list(yaml.safe_load_all((KUBE / "keda.yaml").read_text(encoding="utf-8")))
    auth_tls = any(
        ref["parameter"] == "tls"
        for doc in documents
        if doc["kind"] == "TriggerAuthentication"
        for ref in doc["spec"]["secretTargetRef"]
    )
    for doc in documents:
        if doc["kind"] != "ScaledObject":
            continue
        for trigger in doc["spec"]["triggers"]:
            enabled = trigger["metadata"].get("enableTLS", "false") == "true" or auth_tls
            assert enabled == tls, (doc["metadata"]["name"], trigger["metadata"]["listName"])


def _variables_settings_reads() -> set[str]:
    text = (ROOT / "config" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r"\benv(?:\.[a-z_]+)?\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    names |= set(re.findall(r"Env\(\)\.[a-z_]+\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    # The three given to _Env(...) with their casts and defaults.
    names |= {"DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"}
    return names


def _variables_the_readme_table_lists() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_configuration_table_lists_every_variable_settings_reads() -> None:
    """A site's IT team configures from the README's table: a variable settings.py reads that
    the table leaves out (a webhook timeout, the broker's visibility timeout, where the
    outbox journal lives) is one they cannot know to set."""
    assert sorted(_variables_settings_reads() - _variables_the_readme_table_lists()) == []


# ingress-nginx's default upstream-keepalive-timeout: how long it keeps an idle connection to
# gunicorn (a controller setting, not the Ingress's).
INGRESS_NGINX_IDLE_SECONDS = 60


def test_gunicorn_keeps_idle_connections_longer_than_the_proxies_in_front_of_it() -> None:
    """Whichever side closes an idle keep-alive connection first must be the proxy: closed by
    gunicorn first, a proxy can send a request down it as it closes and answer 502."""
    import runpy

    from tests.test_deploy import _caddy_adapt

    gunicorn = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))["keepalive"]
    [server] = _caddy_adapt()["apps"]["http"]["servers"].values()
    [proxy] = [
        handler
        for route in server["routes"]
        for sub in route["handle"]
        for inner in sub.get("routes", [])
        for handler in inner["handle"]
        if handler["handler"] == "reverse_proxy"
    ]
    caddy_idle = proxy["transport"]["keep_alive"]["idle_timeout"] / 1e9  # nanoseconds
    assert (gunicorn, caddy_idle) == (75, 60)
    assert gunicorn > max(caddy_idle, INGRESS_NGINX_IDLE_SECONDS)
