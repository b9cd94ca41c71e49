"""Webhook subscriptions in the admin: created with the secret shown once, never shown again,
disabled by an action; their failed and dead deliveries listed with the reminders."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from simple_history.utils import get_history_model_for_model

from scheduler.models import Membership, Reminder, WebhookSubscription
from scheduler.outbox.webhooks import secret_decrypt
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.webhooks.conftest import SETUP_AT, Receiver, World, subscribe

pytestmark = pytest.mark.django_db
ADD_URL = "/admin/scheduler/webhooksubscription/"


@pytest.fixture
def manager(django_user_model, world: World):
    """Manages users (and so subscriptions); also a coordinator at Berlin, to read its outbox."""
    user = django_user_model.objects.create_superuser("manager", "m@example.org", "pw")
    Membership.objects.create(
        user=user, trial=world.trial, site=world.berlin, role=Membership.Role.COORDINATOR
    )
    return user


def test_webhook_admin_shows_the_secret_once(client, world: World, manager) -> None:
    sign_in(client, manager)
    with time_machine.travel(SETUP_AT, tick=False):
        response = client.post(
            f"{ADD_URL}add/",
            {
                "owner": world.system.pk,
                "trial": world.trial.pk,
                "sites": [world.berlin.pk],
                "url": "https://ehr.berlin.example/hooks",
                "events": ["visit.booked", "visit.done"],
                "description": "Berlin EHR",
            },
        )
    assert response.status_code == 200
    subscription = WebhookSubscription.objects.get()
    [shown] = re.findall(r'value="(whsec_[^"]+)"', response.content.decode())
    assert shown == secret_decrypt(subscription.secret_encrypted)
    assert (subscription.events, list(subscription.sites.all())) == (
        ["visit.booked", "visit.done"],
        [world.berlin],
    )
    for page in (
        ADD_URL,
        f"{ADD_URL}{subscription.pk}/change/",
        f"{ADD_URL}{subscription.pk}/history/",
    ):
        text = client.get(page).content.decode()
        assert (shown in text, subscription.secret_encrypted in text) == (False, False), page
    # Two entries: the row, then its sites (an audited many-to-many).
    assert [h.history_change_reason for h in subscription.history.all()] == ["subscribed"] * 2
    assert {h.history_user for h in subscription.history.all()} == {manager}
    assert not hasattr(subscription.history.first(), "secret_encrypted")


def test_webhook_admin_refuses_a_site_the_owner_does_not_serve(
    client, world: World, manager
) -> None:
    sign_in(client, manager)
    response = client.post(
        f"{ADD_URL}add/",
        {
            "owner": world.system.pk,
            "trial": world.trial.pk,
            "sites": [world.tokyo.pk],
            "url": "https://ehr.berlin.example/hooks",
            "events": ["visit.booked"],
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "sites": ["berlin-ehr does not act as a site system of niams-ani-vascular at tokyo"]
    }
    assert WebhookSubscription.objects.count() == 0


def test_webhook_admin_disables(client, world: World, manager, receiver: Receiver) -> None:
    subscription = subscribe(world, receiver)
    sign_in(client, manager)
    client.post(ADD_URL, {"action": "disable", "_selected_action": [subscription.pk]})
    subscription.refresh_from_db()
    assert subscription.is_active is False


def test_webhook_admin_lists_dead_deliveries_with_their_error(
    client, world: World, manager, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    receiver.answer = 404
    participant = world.people["BERLIN-001"]
    with (
        time_machine.travel(dt.datetime(2026, 1, 12, 9, tzinfo=dt.UTC), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        participant_enroll(participant=participant, on=dt.date(2026, 1, 12))
    dead = Reminder.objects.get(channel="webhook")
    assert dead.status == "dead"
    sign_in(client, manager)
    page = client.get("/admin/scheduler/reminder/", {"attention": "failed_or_dead"})
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [dead]
    assert "the receiver answered HTTP 404; it will not be retried" in page.content.decode()


def test_webhook_admin_retry_of_a_dead_delivery_is_audited(
    client, world: World, manager, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:
    subscribe(world, receiver)
    receiver.answer = 404
    with (
        time_machine.travel(dt.datetime(2026, 1, 12, 9, tzinfo=dt.UTC), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        participant_enroll(participant=world.people["BERLIN-001"], on=dt.date(2026, 1, 12))
    dead = Reminder.objects.get(channel="webhook")
    sign_in(client, manager)

    with time_machine.travel(dt.datetime(2026, 1, 12, 10, tzinfo=dt.UTC), tick=False):
        client.post(
            "/admin/scheduler/reminder/", {"action": "retry", "_selected_action": [dead.pk]}
        )

    dead.refresh_from_db()
    assert (dead.status, dead.attempts, dead.last_error) == ("pending", 0, "")
    assert [
        (h.history_user, h.history_change_reason, h.status)
        for h in get_history_model_for_model(Reminder).objects.filter(id=dead.pk)
    ] == [(manager, "retried from the admin", "pending")]
