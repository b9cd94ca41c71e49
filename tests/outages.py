"""Redis as it fails in production, for tests: a port nothing listens on (a stopped server) and
a server that takes connections and never answers (a failover behind a proxy, a partition, a
frozen process), and the settings as config/settings.py computes them for a deployment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from types import TracebackType
from typing import Any


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Blackhole:
    """127.0.0.1:<port> accepts connections and never sends a byte. Each connection is closed
    after `hold_seconds`, so code without a timeout fails then instead of hanging the test."""

    def __init__(self, hold_seconds: float = 15.0) -> None:
        self.hold_seconds = hold_seconds
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            timer = threading.Timer(self.hold_seconds, connection.close)
            timer.daemon = True
            timer.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._closing = True
        self.listener.close()


def configured(name: str, **env: str) -> Any:
    """Setting `name` as config/settings.py computes it in a fresh process whose environment
    is this one's without REDIS_URL and CACHE_REDIS_URL, plus `env` (JSON-able values)."""
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps(settings.{name}))"
    )
    environment = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CACHE_REDIS_URL")
    } | env
    environment["DJANGO_SETTINGS_MODULE"] = "config.settings"
    output = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, check=True
    )
    return json.loads(output.stdout.decode().strip().splitlines()[-1])
