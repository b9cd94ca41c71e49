from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client

from trials.models import ProtocolVersion
from trials.protocol_file import ProtocolDocument, parse_protocol
from trials.services import protocol_import

pytest_plugins = ["tests.review_summary"]

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "seeds" / "protocols"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Property-based tests ask for as many examples as their claim deserves; `make test` (and CI)
# runs at most this many each, so the suite stays short. PROPERTY_MAX_EXAMPLES=100000 runs
# them in full.
PROPERTY_MAX_EXAMPLES = int(os.environ.get("PROPERTY_MAX_EXAMPLES", "100"))


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


# The tests that share one thing outside the test process run on one pytest-xdist worker, one
# after another (`make test` runs two workers, `--dist loadgroup`), each kind in a group of its
# own so that the kinds run beside each other: the real Redis broker and Celery workers
# ("integration"), live servers and Chromium ("browser"), the release gates' caches (mypy,
# import-linter, the advisory database under var/: "gates"). Each worker has its own test
# database and its own Redis cache database already; the Celery workers of integration tests
# consume queues of their own.
SHARED_OUTSIDE = ("integration", "browser", "gates")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in SHARED_OUTSIDE:
            if item.get_closest_marker(name):
                item.add_marker(pytest.mark.xdist_group(name))
                break


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """The production hasher (its hashes start `pbkdf2_sha256$` the same) with 1,000 rounds
    instead of Django's 1,000,000: a user, a client secret or a password sign-in cost a test
    0.2 s each, hundreds of times a suite. Hashes carry their rounds, so either hasher checks
    the other's; nothing in a test depends on the count."""

    iterations = 1_000


def pytest_configure(config: pytest.Config) -> None:
    # With REDIS_URL the cache is a Redis database, and clearing a cache (the API tests do)
    # flushes its whole database: each xdist worker gets its own, the next ones after it.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    from django.conf import settings

    settings.PASSWORD_HASHERS = [
        f"{__name__}.QuickPBKDF2PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]
    cache = settings.CACHES["default"]
    if worker.startswith("gw") and cache["BACKEND"].endswith("RedisCache"):
        base, _, db = str(cache["LOCATION"]).rpartition("/")
        cache["LOCATION"] = f"{base}/{int(db or 0) + int(worker[2:])}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Locally a missing service skips with a reason; in CI it is a failure, so integration and
    # browser tests can never silently stop running.
    missing = _missing_requirements(item)
    if missing is None:
        return
    if IN_CI:
        pytest.fail(f"{missing} (CI=true: these tests must run, not skip)")
    pytest.skip(missing)


def otp_login(client: Client, user: Any) -> Client:
    """Sign `user` in on a test client as having given a second factor in this session (what
    scheduler/security.py requires of unblinded roles and user managers): a confirmed TOTP
    device, and the session keys django-otp's login and our sign-in leave."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from scheduler.security import HAS_DEVICE_SESSION_KEY

    client.force_login(user)
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="test app", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session[HAS_DEVICE_SESSION_KEY] = True
    session.save()
    return client


def sign_in(client: Client, user: Any) -> Client:
    """Sign `user` in on a test client as a person would: with a second factor where their
    roles require one (scheduler.security.second_factor_required), else with the password."""
    from scheduler.security import second_factor_required

    # A fresh copy: `user` may carry memberships cached before the test granted another.
    if second_factor_required(type(user)._default_manager.get(pk=user.pk)):
        return otp_login(client, user)
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def sessions_outlive_time_travel(settings: Any) -> None:
    """Signed-in test clients last two weeks of travelled time (Django's default session age):
    many tests sign in, then move the clock by days. tests/test_logins.py checks the idle limit
    of SESSION_IDLE_MINUTES, and tests/test_deploy.py the deployment's setting."""
    settings.SESSION_COOKIE_AGE = 14 * 24 * 3600
    # ...without a session write in the first request after each jump, which the query-count
    # tests would otherwise count.
    settings.SESSION_REFRESH_SECONDS = 14 * 24 * 3600


@pytest.fixture
def admin_client(db: None, admin_user: Any) -> Client:
    """pytest-django's admin_client, signed in with a second factor: a superuser manages users,
    and user managers must give one (scheduler/security.py)."""
    return otp_login(Client(), admin_user)


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
def each_test_starts_in_the_default_language() -> Iterator[None]:
    """The active language is per thread, and a request (the language middleware, a Japanese
    reader's page) leaves it active after the response: an xdist worker then ran the next
    test in Japanese, and a test comparing an English refusal failed only in some orders."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def published_snapshots_start_empty() -> None:
    """Each test starts with no snapshot or catalog of a published version in memory: on SQLite
    a rolled back test's ids come back, and a frozen clock repeats publication instants, so a
    version of the same seed file in an earlier test would otherwise change this test's query
    counts."""
    from scheduler import selectors

    selectors._published_snapshots.clear()
    selectors._published_catalogs.clear()


@pytest.fixture(autouse=True)
def celery_runs_tasks_inline(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tasks enqueued after commit run inline in the test process, sending into Django's
    test mailbox, except in integration tests, which run a real worker over Redis."""
    from django.conf import settings

    from config.celery import app

    integration = request.node.get_closest_marker("integration") is not None
    previous = (app.conf.task_always_eager, app.conf.task_default_queue, settings.OUTBOX_QUEUES)
    app.conf.task_always_eager = not integration
    if integration:
        # Anything an integration test enqueues (invites after an enrollment, say) goes to a
        # queue of its own, deleted afterwards, so no developer's worker ever acts on ids from
        # the test database: the default queue and the outbox's invite and reminder queues.
        throwaway = f"test-throwaway-{uuid.uuid4().hex[:12]}"
        app.conf.task_default_queue = throwaway
        settings.OUTBOX_QUEUES = {**previous[2], "invite": throwaway, "reminder": throwaway}
    yield
    if integration:
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).delete(app.conf.task_default_queue)
    app.conf.task_always_eager, app.conf.task_default_queue, settings.OUTBOX_QUEUES = previous
