from __future__ import annotations

import datetime as dt
import io
import logging
from base64 import b32encode

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from participants.models import Participant
from scheduler.models import ScheduledVisit, WebhookDelivery, WebhookSubscription
from scheduler.outbox import receivers
from scheduler.outbox.sweep import reminders_sweep
from scheduler.outbox.webhooks import secret_decrypt, signed_headers
from tests.conftest import PROTOCOL_DIR
from trials.models import ProtocolVersion, Site, SiteResource, Trial


@pytest.mark.django_db
def test_load_demo_loads_every_protocol_gives_calendars_a_past_and_a_next_and_runs_once() -> None:
    # One load for all of it: each load imports every seed protocol and writes every calendar.
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    counts = (Participant.objects.count(), ScheduledVisit.objects.count())

    assert ProtocolVersion.objects.count() == len(list(PROTOCOL_DIR.glob("*.yaml")))
    assert sorted(Trial.objects.values_list("code", flat=True)) == [
        "ani-lupus-nephritis",
        "ani-pediatric-sle",
        "ani-vitiligo-nbuvb",
        "jasmine-myositis",
        "lavender-cle",
        "niams-ani-vascular",
        "tsukuba-early-ani",
    ]
    assert {
        trial.code: trial.participants.filter(status="enrolled").count()
        for trial in Trial.objects.all()
    } == dict.fromkeys(Trial.objects.values_list("code", flat=True), 3)
    # Calendars have a past and a next booking.
    statuses = set(ScheduledVisit.objects.values_list("status", flat=True))
    assert statuses == {"planned", "booked", "done"}
    enrolled = Participant.objects.filter(status="enrolled")
    assert ScheduledVisit.objects.filter(status="booked").count() == enrolled.count()
    # The screening log has a candidate in each state; none of them has a calendar yet.
    assert dict(
        Participant.objects.exclude(status="enrolled").values_list("study_id", "status")
    ) == {"NIH-CC-S01": "screening", "NIH-CC-S02": "screening", "NIH-CC-S03": "screen_failed"}

    # The demo sites keep their calendars (public holidays come from their countries, not
    # rows), and every demo booking above went through the capacity check against them.
    assert {
        site.code: (
            site.opening_hours.count(),
            sorted(site.resources.values_list("name", flat=True)),
            sorted(site.staff_shifts.values_list("kind", "weekday", "count")),
        )
        for site in Site.objects.all()
    } == {
        "berlin": (0, [], []),
        "nih-cc": (
            5,
            ["CAVI 1", "Chair 1", "Chair 2", "Chair 3", "Chair 4", "PET/CT 1"],
            [("infusion nurse", day, 4) for day in range(5)],
        ),
        "tsukuba": (5, [], []),
    }

    # A second load changes nothing.
    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    assert (Participant.objects.count(), ScheduledVisit.objects.count()) == counts
    assert SiteResource.objects.count() == 6


@pytest.fixture
def demo_with_webhooks(settings, tmp_path, monkeypatch):
    """load_demo as `make run` runs it: DEBUG, so plain http to this machine is allowed; the
    deliveries reach the demo receiver through Django's test client instead of a socket to
    127.0.0.1:8000 (where no server runs during the tests)."""
    settings.VAR_DIR = tmp_path
    settings.DEBUG = True
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = True
    receiver = Client()

    def post(url: str, *, data: bytes, headers: dict[str, str]) -> receivers.Answer:
        path = url.removeprefix("http://127.0.0.1:8000")
        response = receiver.post(path, data, content_type="application/json", headers=headers)
        return receivers.Answer(response.status_code, response.headers.get("Retry-After"))

    monkeypatch.setattr("scheduler.outbox.receivers.post", post)
    output = io.StringIO()
    call_command("load_demo", stdout=output)
    return output.getvalue()


@pytest.mark.django_db
def test_load_demo_makes_logins_per_role_and_one_subscription_and_keeps_both_when_run_again(
    demo_with_webhooks, django_capture_on_commit_callbacks, settings
) -> None:
    # One test for both, as `make run` loads: each load imports every protocol.
    passwords = (settings.VAR_DIR / "demo-logins.txt").read_text()
    call_command("load_demo", stdout=io.StringIO())

    # A login per role, and their passwords kept by the second load.
    roles = {
        user.username: sorted(
            (m.trial.code, m.site.code if m.site else None, m.role) for m in user.memberships.all()
        )
        for user in get_user_model().objects.exclude(username="admin")
    }
    assert len(roles) == 3 * 4 + Trial.objects.count() * 2
    assert roles["coordinator-tsukuba"] == [
        ("jasmine-myositis", "tsukuba", "coordinator"),
        ("tsukuba-early-ani", "tsukuba", "coordinator"),
    ]
    assert roles["monitor-niams-ani-vascular"] == [("niams-ani-vascular", None, "sponsor_monitor")]
    assert (settings.VAR_DIR / "demo-logins.txt").read_text() == passwords
    assert oct((settings.VAR_DIR / "demo-logins.txt").stat().st_mode & 0o777) == "0o600"
    password = dict(line.split(" ") for line in passwords.splitlines())["pharmacist-nih-cc"]
    assert f"user {'pharmacist-nih-cc':<36} password {password}" in demo_with_webhooks
    assert get_user_model().objects.get(username="pharmacist-nih-cc").check_password(password)
    assert get_user_model().objects.get(username="system-berlin").is_staff is False
    # The unblinded pharmacists (and the admin) sign in with a second factor: the key is printed.
    device = TOTPDevice.objects.get(user__username="pharmacist-nih-cc", confirmed=True)
    assert (
        f"user {'pharmacist-nih-cc':<36} two-factor key {b32encode(device.bin_key).decode()}"
        in demo_with_webhooks
    )
    assert sorted(TOTPDevice.objects.values_list("user__username", flat=True)) == [
        "admin",
        "pharmacist-berlin",
        "pharmacist-nih-cc",
        "pharmacist-tsukuba",
    ]

    # What beat and the worker do under make run: the sweep re-sends rows whose message was
    # not taken (here none was: the test's transaction never commits) after two minutes.
    later = timezone.now() + dt.timedelta(minutes=5)
    with time_machine.travel(later, tick=False), django_capture_on_commit_callbacks(execute=True):
        reminders_sweep()

    subscription = WebhookSubscription.objects.get()
    assert (
        subscription.owner.username,
        subscription.trial.code,
        [site.code for site in subscription.sites.all()],
        subscription.url,
        subscription.events,
        subscription.is_active,
    ) == (
        "system-berlin",
        "jasmine-myositis",
        ["berlin"],
        "http://127.0.0.1:8000/api/v1/demo/webhook-receiver/",
        list(WebhookSubscription.Event.values),
        True,
    )
    assert (
        f"Demo webhook subscription {subscription.pk}: system-berlin gets every "
        "jasmine-myositis event at berlin at http://127.0.0.1:8000/api/v1/demo/webhook-receiver/"
    ) in demo_with_webhooks
    # The demo participants come after the subscription: their enrollment and visits are its
    # first deliveries, and only Berlin's (BERLIN-003 of JASMINE).
    deliveries = WebhookDelivery.objects.select_related("reminder__participant")
    assert {d.reminder.participant.study_id for d in deliveries} == {"BERLIN-003"}
    # (Its Day 1 is three weeks ahead: enrolled, its next visit booked, none done yet.)
    assert {d.event_type for d in deliveries} == {"participant.enrolled", "visit.booked"}
    # ...delivered, and accepted by the demo receiver (it checked their signatures).
    assert {d.reminder.status for d in deliveries} == {"sent"}


@pytest.mark.django_db
def test_load_demo_without_loopback_http_makes_no_subscription(settings, tmp_path) -> None:
    settings.VAR_DIR = tmp_path
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = False
    output = io.StringIO()

    call_command("load_demo", stdout=output)

    assert not WebhookSubscription.objects.exists()
    assert "Demo webhook subscription: not created" in output.getvalue()


@pytest.mark.django_db
def test_demo_receiver_verifies_a_delivery_and_logs_only_its_type_and_id(
    demo_with_webhooks, client, caplog, settings
) -> None:
    delivery = WebhookDelivery.objects.filter(event_type="participant.enrolled").get()
    secret = secret_decrypt(delivery.subscription.secret_encrypted)
    now = timezone.now()
    body = delivery.body.encode()
    headers = signed_headers(
        secrets=[secret], message_id=delivery.message_id, timestamp=now, body=body
    )
    http_headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v
        for k, v in headers.items()
        if k.startswith("webhook-")
    }
    url = "/api/v1/demo/webhook-receiver/"

    with caplog.at_level(logging.INFO, logger="scheduler.api.demo"):
        accepted = client.post(url, body, content_type="application/json", **http_headers)
    forged = client.post(
        url,
        body.replace(b"BERLIN-003", b"BERLIN-009"),
        content_type="application/json",
        **http_headers,
    )

    settings.DEBUG = False
    without_debug = client.post(url, body, content_type="application/json", **http_headers)

    assert accepted.status_code == 204
    assert forged.status_code == 400
    assert without_debug.status_code == 404
    # The event type and id; never the payload (no study id, no date).
    assert [r.getMessage() for r in caplog.records if r.name == "scheduler.api.demo"] == [
        f"demo webhook receiver: participant.enrolled {delivery.message_id} verified",
        "demo webhook receiver: a delivery whose signature did not verify",
    ]
