"""The web server as deployed (docker-compose's `web` command, which Kubernetes and the image
share), alone and behind the deployment's Caddy.

- A streamed response may run far longer than gunicorn's worker timeout. gunicorn's default
  sync worker reports to its master only between requests; the master kills it once a single
  response outlasts `timeout`, and the client gets a cut-off body (a sponsor monitor's visit
  export stopped after 30 s). config/gunicorn.py runs threaded workers, whose main loop reports
  while the threads stream.
- With the database away, what reaches a person or a site system through the proxy is the
  app's 503 (a page, an API problem, both with Retry-After), not the proxy's own bare 503:
  the proxy's health check asks /livez, which reads nothing.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import runpy
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import slow_stream_urls
from tests.outages import closed_port
from tests.test_deploy import caddy_binary

ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT_SECONDS = 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployed_web_command() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return list(compose["services"]["web"]["command"])


@contextlib.contextmanager
def deployed_web(tmp_path: Path, env: dict[str, str], *options: str) -> Iterator[int]:
    """gunicorn as compose starts it, on a free loopback port, with `env` over this process's
    environment (without its DATABASE_URL, REDIS_URL and SECRET_KEY) and `options` after
    compose's own; yields the port once it listens."""
    command = deployed_web_command()
    assert command[:3] == ["gunicorn", "config.wsgi:application", "--bind=0.0.0.0:8000"]
    port = _free_port()
    argv = [
        str(Path(sys.executable).parent / "gunicorn"),
        *command[1:2],
        f"--bind=127.0.0.1:{port}",
        *command[3:],
        *options,  # after --config: the command line wins
    ]
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CACHE_REDIS_URL"}
    }
    environment.update(
        VAR_DIR=str(tmp_path),
        HOME=str(tmp_path),  # where gunicorn would put a control socket (it must not)
        **env,
    )
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("wb")
    server = subprocess.Popen(  # noqa: S603 - gunicorn with compose's own arguments
        argv, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_listening(port, server, log_path)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    startup = log_path.read_text()
    assert "Using worker: gthread" in startup
    assert "Control socket" not in startup  # no gunicornc way in (config/gunicorn.py)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}: {log.read_text()}"
            time.sleep(0.1)


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[int]:
    """The deployed gunicorn with a one-second worker timeout and /slow-stream/ added to the
    app's URLs; yields the port."""
    env = {"DEBUG": "true", "DJANGO_SETTINGS_MODULE": "tests.slow_stream_site"}
    with deployed_web(tmp_path, env, f"--timeout={WORKER_TIMEOUT_SECONDS}") as port:
        yield port


def test_a_response_streams_whole_for_longer_than_the_worker_timeout(web_server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", web_server, timeout=30)
    started = time.monotonic()
    connection.request("GET", "/slow-stream/", headers={"Host": "127.0.0.1"})
    response = connection.getresponse()
    # A cut-off chunked body raises IncompleteRead here (what the sync worker did).
    body = response.read().decode()
    elapsed = time.monotonic() - started
    connection.close()

    assert response.status == 200
    assert body == "".join(f"line {n}\n" for n in range(slow_stream_urls.LINES))
    # The response really outlasted the worker timeout, three times over.
    assert elapsed >= slow_stream_urls.LINES * slow_stream_urls.PAUSE_SECONDS
    assert slow_stream_urls.LINES * slow_stream_urls.PAUSE_SECONDS >= 3 * WORKER_TIMEOUT_SECONDS


def test_a_worker_freezes_what_it_loaded_before_its_first_request(web_server: int) -> None:
    """config/gunicorn.py's `post_worker_init`: the URLconf, the views and the framework
    (more than 100,000 objects) are in the permanent generation the garbage collector never
    walks, so a full collection stops a worker for milliseconds rather than about 130 ms."""
    connection = http.client.HTTPConnection("127.0.0.1", web_server, timeout=30)
    connection.request("GET", "/gc-frozen/", headers={"Host": "127.0.0.1"})
    response = connection.getresponse()
    frozen = json.loads(response.read())["frozen"]
    connection.close()
    assert response.status == 200
    assert frozen > 100_000


def test_compose_gives_a_stopping_web_server_its_graceful_timeout() -> None:
    """Docker kills a container 10 s after asking it to stop unless told otherwise; gunicorn
    lets running requests finish for longer than that."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    grace = compose["services"]["web"]["stop_grace_period"]
    assert grace.endswith("s")
    graceful = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))["graceful_timeout"]
    assert int(grace.removesuffix("s")) > graceful == 30


def test_compose_kubernetes_and_the_image_start_the_web_server_alike() -> None:
    command = deployed_web_command()
    assert command == [
        "gunicorn",
        "config.wsgi:application",
        "--bind=0.0.0.0:8000",
        "--config=config/gunicorn.py",
    ]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    assert yaml.safe_load(cmd.removeprefix("CMD ")) == command


# ----------------------------------------------------------------------------------------
# Behind the deployment's Caddy, with the database away


@contextlib.contextmanager
def deployed_proxy(
    tmp_path: Path, upstream: tuple[int, Path], health_uri: str | None = None
) -> Iterator[int]:
    """Caddy running deploy/Caddyfile in front of gunicorn (its port and access log), with TLS
    from its local CA on a free loopback port; yields that port once Caddy's first active
    health check has reached gunicorn. What the test changes in the file: the upstream's
    address, the ports (and the admin API off: nothing here reads it), `health_uri` when
    given."""
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text(encoding="utf-8")
    assert "reverse_proxy web:8000 {" in caddyfile and "admin 127.0.0.1:2019" in caddyfile
    port, http_port = _free_port(), _free_port()
    upstream_port, upstream_log = upstream
    caddyfile = caddyfile.replace(
        "reverse_proxy web:8000 {", f"reverse_proxy 127.0.0.1:{upstream_port} {{"
    ).replace(
        "admin 127.0.0.1:2019",
        f"admin off\n\thttp_port {http_port}\n\thttps_port {port}\n\tskip_install_trust",
    )
    if health_uri is not None:
        assert "health_uri /livez" in caddyfile
        caddyfile = caddyfile.replace("health_uri /livez", f"health_uri {health_uri}")
    config = tmp_path / "Caddyfile"
    config.write_text(caddyfile, encoding="utf-8")
    log_path = tmp_path / "caddy.log"
    log = log_path.open("wb")
    proxy = subprocess.Popen(  # noqa: S603 - caddy with the deployment's file
        [caddy_binary(), "run", "--config", str(config), "--adapter", "caddyfile"],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "SITE_ADDRESS": f"localhost:{port}",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(port, proxy, log_path)
        # Caddy checks every upstream once as it starts, then every 15 s; wait for that first
        # check to reach gunicorn, so what the client gets does not depend on who came first.
        # An upstream is healthy until a check fails; a failed one is logged, and taken out
        # of service right after.
        _wait_for(upstream_log, f'"GET {health_uri or "/livez"} ', log_path)
        if health_uri is not None:
            _wait_for(log_path, '"msg":"status code out of tolerances"', log_path)
            time.sleep(0.2)
        yield port
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        log.close()


def _wait_for(log: Path, line: str, shown: Path) -> None:
    deadline = time.monotonic() + 30
    while line not in log.read_text():
        assert time.monotonic() < deadline, shown.read_text()
        time.sleep(0.05)


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # Caddy's local CA, made for this test
    connection = http.client.HTTPSConnection("localhost", port, timeout=30, context=context)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture
def web_without_database(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The deployed gunicorn as a deployment configures it (DEBUG off, a secret key), whose
    database refuses every connection (a Postgres restart, a failover); yields its port and
    its log, with access lines (which the deployment does not write) to see the proxy's
    health checks arrive."""
    env = {
        "DEBUG": "false",
        "SECRET_KEY": "test-" + "k" * 60,
        "ALLOWED_HOSTS": "localhost",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/scheduler",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    web = tmp_path / "web"
    web.mkdir()
    with deployed_web(web, env, "--access-logfile=-") as port:
        yield port, web / "gunicorn.log"


def test_with_the_database_away_the_proxy_passes_on_the_apps_503(
    web_without_database: tuple[int, Path], tmp_path: Path
) -> None:
    with deployed_proxy(tmp_path, web_without_database) as port:
        sign_in = _get(port, "/admin/login/", {"Accept-Language": "en"})
        feed = _get(port, "/feeds/site/" + "f" * 43 + ".ics", {"Accept-Language": "en"})
        api = _get(port, "/api/v1/sites/", {"Authorization": "Bearer " + "t" * 40})
        live = _get(port, "/livez", {})
        health = _get(port, "/healthz", {})

    # A calendar app polling a feed, and anything else that reads the database.
    status, headers, body = feed
    assert (status, headers["retry-after"]) == (503, "30")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"<h1>Temporarily unavailable</h1>" in body
    status, headers, body = api
    assert (status, headers["retry-after"], headers["content-type"]) == (
        503,
        "30",
        "application/problem+json",
    )
    assert json.loads(body)["type"] == "/api/v1/problems/unavailable"
    assert (live[0], json.loads(live[2])) == (200, {"process": "ok"})
    # The sign-in page reads nothing from the database: it still shows.
    assert (sign_in[0], b"<form" in sign_in[2]) == (200, True)
    assert (health[0], json.loads(health[2])) == (503, {"database": "unavailable"})


def test_a_proxy_checking_the_database_would_answer_its_own_bare_503(
    web_without_database: tuple[int, Path], tmp_path: Path
) -> None:
    """Why the health check asks /livez: the same proxy asking /healthz takes the only web
    process out of service, and what the client gets says nothing and asks nothing."""
    with deployed_proxy(tmp_path, web_without_database, health_uri="/healthz") as port:
        status, headers, body = _get(port, "/api/v1/sites/", {"Authorization": "Bearer x"})

    assert (status, headers["server"], body) == (503, "Caddy", b"")
    assert "retry-after" not in headers
