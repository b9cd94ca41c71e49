"""Schemathesis against the live schema: every operation, bounded and seeded.

The schema is read from /api/v1/schema/ through the WSGI app itself, and every generated
request (valid and invalid) goes through the same app, authenticated as the Berlin
coordinator's OAuth2 token, with path ids pointing at the Berlin participant and visit so
the requests reach data. What is checked: no 5xx, and each response's status, content type
and body are the ones the schema declares for that operation.

SCHEMATHESIS_MAX_EXAMPLES (default 5) bounds the valid and the invalid examples per operation;
derandomized, so a failure is reproduced by running the test again.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler.api.throttling import CredentialRateThrottle
from tests.api.conftest import World

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5"))


def _coordinator_token(world: World) -> str:
    """An OAuth2 client-credentials token acting as the Berlin coordinator (a person's
    session would need CSRF tokens for every POST)."""
    from oauth2_provider.models import Application
    from rest_framework.test import APIClient

    from tests.api.test_auth import _basic

    user = world.users["coordinator"]
    application = Application.objects.create(
        name="schemathesis",
        user=user,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret="schemathesis-secret",  # noqa: S106 - a test fixture
        hash_client_secret=True,
    )
    response = APIClient().post(
        "/api/v1/oauth/token/",
        {"grant_type": "client_credentials", "scope": "read write"},
        HTTP_AUTHORIZATION=_basic(application.client_id, "schemathesis-secret"),
    )
    assert response.status_code == 200, response.content
    return str(response.json()["access_token"])


@pytest.fixture
def api_schema(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from django.core.wsgi import get_wsgi_application

    # Django's WSGI app as config/wsgi.py builds it, without its start-up refusal of the
    # development key (which the test suite runs with).
    application = get_wsgi_application()

    # Thousands of requests in a minute: the credential's budget is not under test here.
    monkeypatch.setattr(CredentialRateThrottle, "THROTTLE_RATES", {"credential": "1000000/min"})
    headers = {"Authorization": f"Bearer {_coordinator_token(world)}"}
    # The WSGI app closes the database connection after each request, which would end the
    # test's transaction (on Postgres); Django's own test client disconnects it the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield (
            schemathesis.openapi.from_wsgi(
                "/api/v1/schema/?format=json", application, headers=headers
            ),
            headers,
        )
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _path_parameters(world: World, path: str) -> dict[str, Any]:
    """Ids of the Berlin coordinator's own objects, so requests reach data, not only 404s."""
    if path.startswith("/api/v1/participants/{id}/"):
        return {"id": world.people["BERLIN-001"].pk}
    if path.startswith("/api/v1/visits/{id}/"):
        return {"id": world.visit("BERLIN-001", "V2").pk}
    if "{code}" in path and path.startswith("/api/v1/trials/"):
        return {"code": "niams-ani-vascular"}
    if "{code}" in path and path.startswith("/api/v1/sites/"):
        return {"code": "berlin"}
    return {}


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _runner(
    strategy: Any, label: str, headers: dict[str, str], cases: Counter[str], failures: list[str]
) -> Any:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        cases[label.split(" [")[0]] += 1
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 - every failure is listed
            failures.append(f"{label}: {str(exc)[:1500]}")

    return run


# Schemathesis's own pytest plugin (schema.parametrize / from_fixture) does not run under
# pytest 9 yet (it sets a private attribute pytest no longer has), so the operations are
# driven through its Hypothesis strategies: the same generators and the same checks.
@pytest.mark.schemathesis
@pytest.mark.django_db
def test_api_conforms_to_its_schema(world: World, api_schema: Any) -> None:
    schema, headers = api_schema
    cases: Counter[str] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=_path_parameters(world, operation.path)
            )
            run = _runner(strategy, f"{label} [{mode.value}]", headers, cases, failures)
            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # No invalid request exists for it (every parameter is a free string).
                assert mode == GenerationMode.NEGATIVE, label
    print(
        f"\nschemathesis: {sum(cases.values())} cases over {len(cases)} operations "
        f"(up to {MAX_EXAMPLES} valid and {MAX_EXAMPLES} invalid each), "
        f"{len(failures)} failures"
    )
    for failure in failures:
        print(failure)
    assert failures == []
