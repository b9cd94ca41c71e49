"""A real webhook receiver on 127.0.0.1 (the outside world), and a NIAMS world to send from.

The receiver is an HTTP server in a thread that verifies each request the way a site
system would: with the Standard Webhooks library and with an HMAC written here from the
spec, independently of ours. It can be told to fail the first attempts of every message, and
it de-duplicates by webhook-id, as the spec asks receivers to.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import time_machine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from participants.models import Participant
from scheduler.models import Membership, ScheduledVisit
from scheduler.webhooks import EVENT_TYPES, webhook_subscription_create
from tests.factories import SiteFactory, participant_for
from trials.models import Site, Trial

UTC = dt.UTC
# Registered at Berlin and Tokyo on 2026-01-10 (Day 1 on 2026-02-02), not yet enrolled.
SETUP_AT = dt.datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def spec_signature_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The spec's signature check, written from its text: v1,<base64 HMAC-SHA256 of
    "<webhook-id>.<webhook-timestamp>.<body>"> under the base64 key after "whsec_"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig) for sig in headers["webhook-signature"].split())


@dataclass
class Attempt:
    webhook_id: str
    timestamp: str
    body: bytes
    answered: int


@dataclass
class Receiver:
    url: str
    secret: str = ""
    fail_first: int = 0  # answer 500 to this many attempts of each message
    # True: the receiver stores the event, then fails to answer (its answer is lost), so the
    # retries bring it again and only the webhook-id keeps it from being taken twice.
    fails_after_storing: bool = False
    answer: int = 204
    retry_after: str | None = None  # a Retry-After header on every answer, if set
    attempts: list[Attempt] = field(default_factory=list)
    accepted: dict[str, Any] = field(default_factory=dict)  # webhook-id -> payload
    duplicates: Counter[str] = field(default_factory=Counter)
    refused_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            webhook_id = headers.get("webhook-id", "")
            tries = sum(1 for a in self.attempts if a.webhook_id == webhook_id) + 1
            status = self._answer(headers, body, webhook_id, tries)
            self.attempts.append(
                Attempt(webhook_id, headers.get("webhook-timestamp", ""), body, status)
            )
            return status

    def _answer(self, headers: dict[str, str], body: bytes, webhook_id: str, tries: int) -> int:
        failing = tries <= self.fail_first
        if failing and not self.fails_after_storing:
            return 500
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.refused_signatures += 1
            return 400
        if not spec_signature_valid(self.secret, headers, body):
            self.refused_signatures += 1
            return 400
        if webhook_id in self.accepted:
            self.duplicates[webhook_id] += 1
        elif self.answer < 300:
            self.accepted[webhook_id] = payload
        return 500 if failing else self.answer

    def payloads(self) -> list[Any]:
        return list(self.accepted.values())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = holder["receiver"].handle(headers, body)
            self.send_response(status)
            if holder["receiver"].retry_after is not None:
                self.send_header("Retry-After", holder["receiver"].retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    holder["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks")
    try:
        yield holder["receiver"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class World:
    trial: Trial
    berlin: Site
    tokyo: Site
    system: Any  # the Berlin site system's machine user
    people: dict[str, Participant]

    def visit(self, study_id: str, code: str) -> ScheduledVisit:
        return ScheduledVisit.objects.select_related("visit_definition").get(
            participant=self.people[study_id], visit_definition__code=code, occurrence=1
        )


@pytest.fixture(autouse=True)
def loopback_allowed(settings) -> None:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = True


@pytest.fixture
def world(import_seed, django_user_model) -> World:
    """NIAMS (blinded) at Berlin and Tokyo, a participant in screening at each, and a site
    system acting for NIAMS at Berlin only."""
    with time_machine.travel(SETUP_AT, tick=False):
        version = import_seed("000")
        berlin = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
        tokyo = SiteFactory.create(code="tokyo", timezone="Asia/Tokyo", country="JP")
        people = {
            study_id: participant_for(
                version,
                anchors={"day1": dt.date(2026, 2, 2)},
                site=site,
                study_id=study_id,
                email=f"{study_id.lower()}@example.org",
                phone="+49 30 1234567",
                guardian_name="",
            )
            for site, study_id in ((berlin, "BERLIN-001"), (tokyo, "TOKYO-001"))
        }
        system = django_user_model.objects.create_user("berlin-ehr")
        Membership.objects.create(
            user=system, trial=version.trial, site=berlin, role=Membership.Role.SITE_SYSTEM
        )
    return World(version.trial, berlin, tokyo, system, people)


def subscribe(world: World, receiver: Receiver, events: tuple[str, ...] = EVENT_TYPES) -> Any:
    with time_machine.travel(SETUP_AT, tick=False):
        subscription, secret = webhook_subscription_create(
            owner=world.system,
            trial=world.trial,
            sites=[world.berlin],
            url=receiver.url,
            events=events,
            by=world.system,
        )
    receiver.secret = secret
    return subscription


def body_of(attempt: Attempt) -> Any:
    return json.loads(attempt.body)
