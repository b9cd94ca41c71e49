"""/api/v1/webhooks/: a site system's own subscriptions, one test per door."""

from __future__ import annotations

import pytest
import time_machine
from rest_framework.test import APIClient

from scheduler.models import Membership, WebhookSubscription
from scheduler.webhooks import webhook_subscription_create
from tests.webhooks.conftest import SETUP_AT, World

pytestmark = pytest.mark.django_db
URL = "https://ehr.berlin.example/hooks"


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(SETUP_AT, tick=False):
        yield


def client_of(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(type(user).objects.get(pk=user.pk))
    return client


def create(world: World, key: str = "key-1", **body):
    return client_of(world.system).post(
        "/api/v1/webhooks/",
        {
            "trial": "niams-ani-vascular",
            "sites": ["berlin"],
            "url": URL,
            "events": ["visit.booked", "visit.cancelled"],
            **body,
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def not_found(detail: str) -> dict:
    return {
        "type": "/api/v1/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": detail,
        "errors": [],
    }


def test_webhook_api_creates_and_shows_the_secret_once(world) -> None:
    response = create(world)
    assert response.status_code == 201
    subscription = WebhookSubscription.objects.get()
    body = response.json()
    secret = body.pop("secret")
    assert secret.startswith("whsec_")
    assert body == {
        "id": subscription.pk,
        "trial": "niams-ani-vascular",
        "sites": ["berlin"],
        "url": URL,
        "events": ["visit.booked", "visit.cancelled"],
        "description": "",
        "active": True,
        "created_at": "2026-01-10T12:00:00Z",
        "updated_at": "2026-01-10T12:00:00Z",
        "disabled_at": None,
        "etag": response["ETag"],
    }
    assert response["Location"] == f"/api/v1/webhooks/{subscription.pk}/"
    # Reads never show it; the database holds it only encrypted.
    read = client_of(world.system).get(f"/api/v1/webhooks/{subscription.pk}/")
    assert read.json() == body
    assert secret not in subscription.secret_encrypted
    listed = client_of(world.system).get("/api/v1/webhooks/")
    assert listed.json()["results"] == [body]


def test_webhook_api_replay_creates_one_and_returns_the_same_body(world) -> None:
    first, again = create(world), create(world)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again["Idempotent-Replayed"] == "true"
    assert WebhookSubscription.objects.count() == 1


def test_webhook_api_hides_other_systems_subscriptions(world, django_user_model) -> None:
    other = django_user_model.objects.create_user("other-ehr")
    Membership.objects.create(
        user=other, trial=world.trial, site=world.berlin, role=Membership.Role.SITE_SYSTEM
    )
    theirs, _secret = webhook_subscription_create(
        owner=other,
        trial=world.trial,
        sites=[world.berlin],
        url=URL,
        events=["visit.done"],
        by=other,
    )
    mine = client_of(world.system)
    assert mine.get("/api/v1/webhooks/").json()["results"] == []
    response = mine.get(f"/api/v1/webhooks/{theirs.pk}/")
    assert (response.status_code, response.json()) == (
        404,
        not_found("no such webhook subscription"),
    )
    response = mine.post(
        f"/api/v1/webhooks/{theirs.pk}/disable/",
        HTTP_IF_MATCH='"anything"',
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_active


def test_webhook_api_refuses_sites_outside_the_callers(world) -> None:
    response = create(world, sites=["berlin", "tokyo"])
    assert (response.status_code, response.json()) == (
        400,
        {
            "type": "/api/v1/problems/invalid-input",
            "title": "Invalid input",
            "status": 400,
            "detail": "1 field(s) are invalid",
            "errors": [{"field": "sites", "message": "no such site: tokyo"}],
        },
    )
    assert WebhookSubscription.objects.count() == 0


def test_webhook_api_requires_a_site_system(world, django_user_model) -> None:
    coordinator = django_user_model.objects.create_user("coordinator")
    Membership.objects.create(
        user=coordinator, trial=world.trial, site=world.berlin, role=Membership.Role.COORDINATOR
    )
    response = client_of(coordinator).post(
        "/api/v1/webhooks/",
        {"trial": "niams-ani-vascular", "sites": ["berlin"], "url": URL, "events": ["visit.done"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert (response.status_code, response.json()["detail"]) == (
        403,
        "only a site system subscribes to webhooks",
    )
    assert client_of(coordinator).get("/api/v1/webhooks/").json()["results"] == []


def test_webhook_api_refuses_plain_http(world) -> None:
    response = create(world, url="http://ehr.berlin.example/hooks")
    assert (response.status_code, response.json()["errors"]) == (
        422,
        [{"field": "url", "message": "events are only sent over https"}],
    )


def test_webhook_api_disables_with_if_match(world) -> None:
    created = create(world)
    pk = created.json()["id"]
    client = client_of(world.system)
    stale = client.post(
        f"/api/v1/webhooks/{pk}/disable/", HTTP_IF_MATCH='"stale"', HTTP_IDEMPOTENCY_KEY="d-0"
    )
    assert stale.status_code == 412
    done = client.post(
        f"/api/v1/webhooks/{pk}/disable/",
        HTTP_IF_MATCH=created["ETag"],
        HTTP_IDEMPOTENCY_KEY="d-1",
    )
    assert (done.status_code, done.json()["active"], done.json()["disabled_at"]) == (
        200,
        False,
        "2026-01-10T12:00:00Z",
    )
    assert client.get(f"/api/v1/webhooks/{pk}/").json()["active"] is False


def test_webhook_api_list_query_count_does_not_grow(world, django_assert_num_queries) -> None:
    def subscribe_n(n: int) -> None:
        for _ in range(n):
            webhook_subscription_create(
                owner=world.system,
                trial=world.trial,
                sites=[world.berlin],
                url=URL,
                events=["visit.done"],
                by=world.system,
            )

    subscribe_n(2)
    client = client_of(world.system)  # a fresh user object, as each real request has
    with django_assert_num_queries(3):  # memberships, the page, its sites
        assert len(client.get("/api/v1/webhooks/").json()["results"]) == 2
    subscribe_n(20)
    client = client_of(world.system)
    with django_assert_num_queries(3):
        assert len(client.get("/api/v1/webhooks/").json()["results"]) == 22
