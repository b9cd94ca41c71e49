"""The web server as deployed (docker-compose's `web` command, which Kubernetes and the image
share): a streamed response may run far longer than gunicorn's worker timeout.

gunicorn's default sync worker reports to its master only between requests; the master kills
it once a single response outlasts `timeout`, and the client gets a cut-off body (a sponsor
monitor's visit export stopped after 30 s). config/gunicorn.py runs threaded workers, whose
main loop reports while the threads stream.
"""

from __future__ import annotations

import http.client
import os
import runpy
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import slow_stream_urls

ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT_SECONDS = 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployed_web_command() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return list(compose["services"]["web"]["command"])


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[int]:
    """gunicorn as compose starts it, on a free loopback port, with a one-second worker timeout
    and /slow-stream/ added to the app's URLs; yields the port."""
    command = deployed_web_command()
    assert command[:3] == ["gunicorn", "config.wsgi:application", "--bind=0.0.0.0:8000"]
    port = _free_port()
    argv = [
        str(Path(sys.executable).parent / "gunicorn"),
        *command[1:2],
        f"--bind=127.0.0.1:{port}",
        *command[3:],
        f"--timeout={WORKER_TIMEOUT_SECONDS}",  # after --config: the command line wins
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
    }
    env.update(
        DEBUG="true",
        DJANGO_SETTINGS_MODULE="tests.slow_stream_site",
        VAR_DIR=str(tmp_path),
        HOME=str(tmp_path),  # where gunicorn would put a control socket (it must not)
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(  # noqa: S603 - gunicorn with compose's own arguments
        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start listening"
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    startup = (tmp_path / "gunicorn.log").read_text()
    assert "Using worker: gthread" in startup
    assert "Control socket" not in startup  # no gunicornc way in (config/gunicorn.py)


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
