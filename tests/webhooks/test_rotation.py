"""Rotating a subscription's signing secret: the new secret is shown once (API and admin);
for the grace period every delivery carries two signatures, under the new secret and the old
one, so a receiver verifying with either accepts it; afterwards only the new one signs.
Audited with who and why; the secrets never reach the audit trail."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from scheduler.models import Membership, Reminder, WebhookSubscription
from scheduler.outbox.webhooks import secret_decrypt, signing_secrets
from scheduler.webhooks import (
    webhook_subscription_disable,
    webhook_subscription_rotate_secret,
)
from tests.conftest import sign_in
from tests.webhooks.conftest import UTC, Receiver, World, subscribe
from tests.webhooks.test_api import client_of

pytestmark = pytest.mark.django_db
ROTATED_AT = dt.datetime(2026, 1, 11, 12, 0, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)


def rotate(subscription: WebhookSubscription, by, at: dt.datetime = ROTATED_AT) -> str:
    with time_machine.travel(at, tick=False):
        _subscription, secret = webhook_subscription_rotate_secret(
            subscription=subscription, by=by, reason="yearly rotation"
        )
    return secret


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """As a receiver checks it when it arrives (the library refuses old timestamps)."""
    sent = dt.datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    with time_machine.travel(sent, tick=False):
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
    return True


def delivered_at(world: World, receiver: Receiver, at: dt.datetime, capture) -> tuple[dict, bytes]:
    """Enroll BERLIN-001 at `at` (its participant.enrolled event goes out at once); the
    delivery's headers and body as the receiver got them."""
    with time_machine.travel(at, tick=False):
        enroll_at(world, capture)
    [attempt] = receiver.attempts
    headers = {
        "webhook-id": attempt.webhook_id,
        "webhook-timestamp": attempt.timestamp,
        "webhook-signature": receiver.last_signature,  # type: ignore[attr-defined]
    }
    return headers, attempt.body


def enroll_at(world: World, capture) -> None:
    from scheduler.services import participant_enroll

    participant = world.people["BERLIN-001"]
    with capture(execute=True):
        participant_enroll(
            participant=participant,
            on=dt.datetime.now(UTC).date(),
            arm=participant.protocol_version.arm_set.get(code="ANI"),
        )


@pytest.fixture
def signatures(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """The receiver also keeps the last webhook-signature header it was sent."""
    handle = receiver.handle

    def keeping(headers: dict[str, str], body: bytes) -> int:
        receiver.last_signature = headers.get("webhook-signature", "")  # type: ignore[attr-defined]
        return handle(headers, body)

    monkeypatch.setattr(receiver, "handle", keeping)
    return receiver


def test_rotation_signs_with_both_secrets_during_the_grace_period(
    world: World, signatures: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscription = subscribe(world, signatures)
    old = signatures.secret
    new = rotate(subscription, world.system)
    signatures.secret = new  # the receiver has switched already: it verifies with the new

    headers, body = delivered_at(
        world, signatures, ROTATED_AT + 23 * HOUR, django_capture_on_commit_callbacks
    )

    assert new.startswith("whsec_") and new != old
    assert (verifies(new, headers, body), verifies(old, headers, body)) == (True, True)
    signature_new, signature_old = headers["webhook-signature"].split(" ")
    assert signature_new == Webhook(new).sign(
        headers["webhook-id"],
        dt.datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC),
        body,
    )
    assert signature_old.startswith("v1,") and signature_old != signature_new
    assert [a.answered for a in signatures.attempts] == [204]
    assert Reminder.objects.get(channel="webhook").status == "sent"


def test_rotation_a_receiver_still_on_the_old_secret_accepts_during_grace(
    world: World, signatures: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, signatures)  # the receiver keeps the old secret throughout
    rotate(WebhookSubscription.objects.get(), world.system)

    delivered_at(world, signatures, ROTATED_AT + HOUR, django_capture_on_commit_callbacks)

    assert [a.answered for a in signatures.attempts] == [204]
    assert signatures.refused_signatures == 0


def test_rotation_after_the_grace_period_only_the_new_secret_signs(
    world: World, signatures: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscription = subscribe(world, signatures)
    old = signatures.secret
    new = rotate(subscription, world.system)

    headers, body = delivered_at(
        world, signatures, ROTATED_AT + 24 * HOUR, django_capture_on_commit_callbacks
    )

    assert (verifies(new, headers, body), verifies(old, headers, body)) == (True, False)
    assert len(headers["webhook-signature"].split(" ")) == 1
    # The receiver still on the old secret refuses it (400: final, listed for coordinators).
    assert [a.answered for a in signatures.attempts] == [400]
    assert signatures.refused_signatures == 1


def test_rotation_grace_period_is_a_setting(world: World, receiver: Receiver, settings) -> None:
    settings.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS = 3600
    subscription = subscribe(world, receiver)
    new = rotate(subscription, world.system)
    stored = WebhookSubscription.objects.get().secret_encrypted

    assert signing_secrets(stored, now=ROTATED_AT + 59 * dt.timedelta(minutes=1)) == [
        new,
        receiver.secret,
    ]
    assert signing_secrets(stored, now=ROTATED_AT + HOUR) == [new]
    assert secret_decrypt(stored) == new


def test_rotation_twice_keeps_only_the_secret_just_replaced(
    world: World, receiver: Receiver
) -> None:
    subscription = subscribe(world, receiver)
    second = rotate(subscription, world.system)
    third = rotate(subscription, world.system, at=ROTATED_AT + HOUR)

    stored = WebhookSubscription.objects.get().secret_encrypted
    assert signing_secrets(stored, now=ROTATED_AT + 2 * HOUR) == [third, second]


def test_rotation_is_audited_without_the_secrets(world: World, receiver: Receiver) -> None:
    subscription = subscribe(world, receiver)
    new = rotate(subscription, world.system)

    entries = [
        (h.history_user, h.history_change_reason, h.history_type)
        for h in WebhookSubscription.history.order_by("history_id")
    ]
    assert entries == [
        (world.system, "subscribed", "+"),
        (world.system, "subscribed", "~"),  # its sites, recorded with the subscription
        (world.system, "yearly rotation", "~"),
    ]
    latest = WebhookSubscription.history.order_by("history_id").last()
    assert not hasattr(latest, "secret_encrypted")
    assert new not in str(latest.__dict__) and receiver.secret not in str(latest.__dict__)


def test_rotation_of_a_disabled_subscription_is_refused(world: World, receiver: Receiver) -> None:
    from django.core.exceptions import ValidationError

    subscription = subscribe(world, receiver)
    webhook_subscription_disable(subscription=subscription, by=world.system)
    before = WebhookSubscription.objects.get().secret_encrypted

    with pytest.raises(ValidationError) as refused:
        rotate(subscription, world.system)

    assert refused.value.message_dict == {
        "subscription": ["the subscription is disabled: create a new one instead"]
    }
    assert WebhookSubscription.objects.get().secret_encrypted == before


# ----------------------------------------------------------------------------------------
# The API: POST /api/v1/webhooks/{id}/rotate-secret/


def rotate_url(subscription: WebhookSubscription) -> str:
    return f"/api/v1/webhooks/{subscription.pk}/rotate-secret/"


def test_rotation_api_shows_the_new_secret_once_with_if_match(
    world: World, receiver: Receiver
) -> None:
    subscription = subscribe(world, receiver)
    client = client_of(world.system)
    with time_machine.travel(ROTATED_AT, tick=False):
        etag = client.get(f"/api/v1/webhooks/{subscription.pk}/")["ETag"]
        stale = client.post(
            rotate_url(subscription), {}, format="json",
            HTTP_IF_MATCH='"stale"', HTTP_IDEMPOTENCY_KEY="rotate-0",
        )  # fmt: skip
        response = client.post(
            rotate_url(subscription), {"reason": "the EHR moved"}, format="json",
            HTTP_IF_MATCH=etag, HTTP_IDEMPOTENCY_KEY="rotate-1",
        )  # fmt: skip
        replay = client.post(
            rotate_url(subscription), {"reason": "the EHR moved"}, format="json",
            HTTP_IF_MATCH=etag, HTTP_IDEMPOTENCY_KEY="rotate-1",
        )  # fmt: skip
        read = client.get(f"/api/v1/webhooks/{subscription.pk}/")

    assert stale.status_code == 412
    assert response.status_code == 200, response.content
    body = response.json()
    stored = WebhookSubscription.objects.get()
    assert body["secret"] == secret_decrypt(stored.secret_encrypted) != receiver.secret
    assert body["previous_secret_valid_until"] == "2026-01-12T12:00:00Z"
    assert body["etag"] == response["ETag"] != etag
    assert response["Cache-Control"] == "no-store"
    assert (replay.json(), replay["Idempotent-Replayed"]) == (body, "true")
    assert "secret" not in read.json()
    assert [h.history_change_reason for h in stored.history.order_by("history_id")] == [
        "subscribed",
        "subscribed",
        "the EHR moved",
    ]
    # The idempotency record keeps no secret.
    from scheduler.api.models import IdempotencyRecord

    record = IdempotencyRecord.objects.get(key="rotate-1")
    assert record.response_body["secret"] is None


def test_rotation_api_another_systems_subscription_is_a_404(
    world: World, receiver: Receiver, django_user_model
) -> None:
    subscription = subscribe(world, receiver)
    other = django_user_model.objects.create_user("other-ehr")
    Membership.objects.create(
        user=other, trial=world.trial, site=world.berlin, role=Membership.Role.SITE_SYSTEM
    )

    response = client_of(other).post(
        rotate_url(subscription), {}, format="json",
        HTTP_IF_MATCH='"x"', HTTP_IDEMPOTENCY_KEY="steal",
    )  # fmt: skip

    assert (response.status_code, response.json()["detail"]) == (
        404,
        "no such webhook subscription",
    )
    assert WebhookSubscription.objects.get().secret_encrypted == subscription.secret_encrypted


def test_rotation_api_of_a_disabled_subscription_is_refused(
    world: World, receiver: Receiver
) -> None:
    subscription = subscribe(world, receiver)
    webhook_subscription_disable(subscription=subscription, by=world.system)
    client = client_of(world.system)
    etag = client.get(f"/api/v1/webhooks/{subscription.pk}/")["ETag"]

    response = client.post(
        rotate_url(subscription), {}, format="json",
        HTTP_IF_MATCH=etag, HTTP_IDEMPOTENCY_KEY="rotate-disabled",
    )  # fmt: skip

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "subscription",
            "message": "the subscription is disabled: create a new one instead",
        }
    ]


# ----------------------------------------------------------------------------------------
# The admin: a button on the subscription's page, a page that asks why, the secret once.


def test_rotation_admin_button_asks_why_and_shows_the_secret_once(
    client, world: World, receiver: Receiver, django_user_model
) -> None:
    manager = django_user_model.objects.create_superuser("manager", "m@example.org", "pw")
    subscription = subscribe(world, receiver)
    sign_in(client, manager)
    change_url = f"/admin/scheduler/webhooksubscription/{subscription.pk}/change/"
    url = f"/admin/scheduler/webhooksubscription/{subscription.pk}/rotate-secret/"

    page = client.get(change_url).content.decode()
    asked = client.get(url)
    unchanged = WebhookSubscription.objects.get().secret_encrypted
    with time_machine.travel(ROTATED_AT, tick=False):
        response = client.post(url, {"reason": "secret leaked"})

    assert f'href="{url}"' in page
    assert asked.status_code == 200
    assert unchanged == subscription.secret_encrypted
    assert response.status_code == 200
    [shown] = re.findall(r'value="(whsec_[^"]+)"', response.content.decode())
    stored = WebhookSubscription.objects.get()
    assert shown == secret_decrypt(stored.secret_encrypted) != receiver.secret
    assert "For the next 24 hours each delivery" in response.content.decode()
    assert [
        (h.history_user, h.history_change_reason) for h in stored.history.order_by("history_id")
    ] == [(world.system, "subscribed"), (world.system, "subscribed"), (manager, "secret leaked")]
    # Shown once: the subscription's page does not show it again.
    assert shown not in client.get(change_url).content.decode()


def test_rotation_admin_needs_a_reason_and_a_user_manager(
    client, world: World, receiver: Receiver, django_user_model
) -> None:
    subscription = subscribe(world, receiver)
    url = f"/admin/scheduler/webhooksubscription/{subscription.pk}/rotate-secret/"
    coordinator = django_user_model.objects.create_user("coord", is_staff=True)
    Membership.objects.create(
        user=coordinator, trial=world.trial, site=world.berlin, role=Membership.Role.COORDINATOR
    )
    manager = django_user_model.objects.create_superuser("manager", "m@example.org", "pw")

    sign_in(client, coordinator)
    forbidden = client.post(url, {"reason": "mine now"})
    sign_in(client, manager)
    blank = client.post(url, {"reason": "  "})

    assert forbidden.status_code == 403
    assert blank.status_code == 200
    assert "say why the secret is rotated" in blank.content.decode()
    assert WebhookSubscription.objects.get().secret_encrypted == subscription.secret_encrypted
