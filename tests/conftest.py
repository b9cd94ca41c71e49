from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trials.models import ProtocolVersion
from trials.protocol_file import ProtocolDocument, parse_protocol
from trials.services import protocol_import

pytest_plugins = ["tests.review_summary"]

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "seeds" / "protocols"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Property-based tests ask for as many examples as their claim deserves; `make test` (and CI)
# runs at most this many each, so the suite stays short. PROPERTY_MAX_EXAMPLES=100000 runs
# them in full.
PROPERTY_MAX_EXAMPLES = int(os.environ.get("PROPERTY_MAX_EXAMPLES", "400"))


def bounded(examples: int) -> int:
    """A property test's example count, capped by PROPERTY_MAX_EXAMPLES."""
    return min(examples, PROPERTY_MAX_EXAMPLES)


def seed_path(prefix: str) -> Path:
    matches = sorted(PROTOCOL_DIR.glob(f"{prefix}*.yaml"))
    assert len(matches) == 1, f"expected one seed protocol starting {prefix!r}, got {matches}"
    return matches[0]


def _missing_requirements(item: pytest.Item) -> str | None:
    if item.get_closest_marker("integration"):
        if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
            return "integration tests need DATABASE_URL pointing at Postgres"
        if not os.environ.get("REDIS_URL"):
            return "integration tests need REDIS_URL"
    if item.get_closest_marker("browser") and not Path("/usr/bin/chromium").exists():
        return "browser tests need Debian's chromium at /usr/bin/chromium"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Locally a missing service skips with a reason; in CI it is a failure, so integration and
    # browser tests can never silently stop running.
    missing = _missing_requirements(item)
    if missing is None:
        return
    if IN_CI:
        pytest.fail(f"{missing} (CI=true: these tests must run, not skip)")
    pytest.skip(missing)


@pytest.fixture(scope="session")
def seed_document() -> Callable[[str], ProtocolDocument]:
    cache: dict[str, ProtocolDocument] = {}

    def load(prefix: str) -> ProtocolDocument:
        if prefix not in cache:
            path = seed_path(prefix)
            cache[prefix] = parse_protocol(path.read_text(encoding="utf-8"), source=str(path))
        return cache[prefix]

    return load


@pytest.fixture
def import_seed(db: None) -> Callable[[str], ProtocolVersion]:
    def load(prefix: str) -> ProtocolVersion:
        path = seed_path(prefix)
        return protocol_import(text=path.read_text(encoding="utf-8"), source=path.name)

    return load


@pytest.fixture(autouse=True)
def celery_runs_tasks_inline(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tasks enqueued after commit run inline in the test process, sending into Django's
    test mailbox, except in integration tests, which run a real worker over Redis."""
    from config.celery import app

    integration = request.node.get_closest_marker("integration") is not None
    previous = (app.conf.task_always_eager, app.conf.task_default_queue)
    app.conf.task_always_eager = not integration
    if integration:
        # Anything an integration test enqueues without naming a queue (invites after an
        # enrollment, say) goes to a queue of its own, deleted afterwards, so no developer's
        # worker ever acts on ids from the test database.
        app.conf.task_default_queue = f"test-throwaway-{uuid.uuid4().hex[:12]}"
    yield
    if integration:
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).delete(app.conf.task_default_queue)
    app.conf.task_always_eager, app.conf.task_default_queue = previous
