"""Adversarial review of the outbound webhooks: what a hospital's IT team or an attacker would
try against subscriptions and deliveries.

The receiver (the outside world) is a real server on 127.0.0.1, as in conftest.py: the
Standard Webhooks receiver from there, or a raw socket server here for the faults an HTTP
server library will not produce (a stalled or trickled answer, a reset, an endless body, a
redirect, a certificate nobody trusts). Each defect found here is mended; its test stays.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from simple_history.utils import get_history_model_for_model

from scheduler.models import Membership, Reminder, WebhookDelivery, WebhookSubscription
from scheduler.outbox.sweep import reminders_sweep
from scheduler.services import participant_enroll, visit_book, visit_record_done
from scheduler.webhooks import webhook_subscription_create
from tests.conftest import sign_in
from tests.webhooks.conftest import SETUP_AT, UTC, Receiver, World, subscribe
from tests.webhooks.test_api import client_of

pytestmark = pytest.mark.django_db
ENROLLED_AT = dt.datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
MINUTE = dt.timedelta(minutes=1)
NIAMS = "niams-ani-vascular"


# ----------------------------------------------------------------------------------------
# A raw receiver: each connection handled by `handle(conn, requests_seen)` in a thread.


@dataclass
class Raw:
    port: int
    requests: list[bytes] = field(default_factory=list)  # each request as it arrived
    errors: list[str] = field(default_factory=list)  # what broke on the receiver's side


def read_request(conn: socket.socket) -> bytes:
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def header(request: bytes, name: str) -> str:
    head = request.partition(b"\r\n\r\n")[0].decode()
    return next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if line.split(":", 1)[0].lower() == name
    )


@contextmanager
def raw_receiver(
    handle: Callable[[socket.socket, Raw], None], tls: ssl.SSLContext | None = None
) -> Iterator[Raw]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.05)
    stop = threading.Event()
    raw = Raw(port=server.getsockname()[1])

    def one(conn: socket.socket) -> None:
        try:
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            handle(conn, raw)
        except Exception as exc:  # noqa: BLE001 - the receiver's side of a fault
            raw.errors.append(type(exc).__name__)
        finally:
            with suppress(OSError):
                conn.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield raw
    finally:
        stop.set()
        thread.join(5)
        server.close()


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server certificate for 127.0.0.1 that no CA vouches for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def point_at(subscription: WebhookSubscription, url: str) -> None:
    subscription.url = url
    subscription.save(update_fields=["url"])


def enroll(world: World, capture, study_id: str = "BERLIN-001") -> float:
    """Enroll at ENROLLED_AT (its participant.enrolled goes out right after commit); returns
    how long the change and its first delivery took, in seconds."""
    participant = world.people[study_id]
    started = time.monotonic()
    with time_machine.travel(ENROLLED_AT, tick=False), capture(execute=True):
        participant_enroll(
            participant=participant,
            on=ENROLLED_AT.date(),
            arm=participant.protocol_version.arm_set.get(code="ANI"),
        )
    return time.monotonic() - started


def webhook_row() -> tuple[str, int, str]:
    return (
        Reminder.objects.filter(channel="webhook")
        .values_list("status", "attempts", "last_error")
        .get()
    )


@pytest.fixture
def short_timeouts(settings) -> None:
    settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 0.5
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 0.5


def post_subscription(world: World, url: str, key: str = "key-1"):
    with time_machine.travel(SETUP_AT, tick=False):
        return client_of(world.system).post(
            "/api/v1/webhooks/",
            {"trial": NIAMS, "sites": ["berlin"], "url": url, "events": ["visit.done"]},
            format="json",
            HTTP_IDEMPOTENCY_KEY=key,
        )


# ----------------------------------------------------------------------------------------
# URL validation


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://[::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/hooks",
        "https://10.0.0.5/hooks",
        "https://0.0.0.0/hooks",
    ],
)
def test_url_to_an_internal_address_is_refused(world: World, settings, url: str) -> None:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = False  # as deployed
    response = post_subscription(world, url)
    assert (
        response.status_code,
        [e["field"] for e in response.json().get("errors", [])],
        WebhookSubscription.objects.count(),
    ) == (422, ["url"], 0)


@pytest.mark.parametrize("url", ["https://ehr.example:99999/hooks", "https://☃.example/hooks"])
def test_url_the_http_client_cannot_parse_is_refused(world: World, settings, url: str) -> None:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = False
    response = post_subscription(world, url)
    assert (
        response.status_code in (400, 422),
        [e["field"] for e in response.json().get("errors", [])],
        WebhookSubscription.objects.count(),
    ) == (True, ["url"], 0)


def test_site_served_only_for_another_trial_is_refused_naming_the_field(
    world: World, import_seed
) -> None:
    with time_machine.travel(SETUP_AT, tick=False):
        jasmine = import_seed("002").trial
        Membership.objects.create(
            user=world.system, trial=jasmine, site=world.tokyo, role="site_system"
        )
        response = client_of(world.system).post(
            "/api/v1/webhooks/",
            {
                "trial": NIAMS,
                "sites": ["tokyo"],
                "url": "https://e.example/h",
                "events": ["visit.done"],
            },
            format="json",
            HTTP_IDEMPOTENCY_KEY="k",
        )
    assert (response.status_code, response.json()["errors"]) == (
        422,
        [
            {
                "field": "sites",
                "message": "berlin-ehr does not act as a site system of "
                "niams-ani-vascular at tokyo",
            }
        ],
    )
    assert WebhookSubscription.objects.count() == 0


# ----------------------------------------------------------------------------------------
# Receiver faults


def test_receiver_trickling_its_answer_is_cut_off_at_the_read_timeout(
    world: World, receiver: Receiver, django_capture_on_commit_callbacks, short_timeouts
) -> None:
    subscription = subscribe(world, receiver)

    def trickle(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(15):  # one header every 0.2 s: 3 s in all, 6x the 0.5 s read timeout
            time.sleep(0.2)
            conn.sendall(b"X-Pad: 1\r\n")
        conn.sendall(b"Content-Length: 0\r\n\r\n")

    with raw_receiver(trickle) as raw:
        point_at(subscription, f"http://127.0.0.1:{raw.port}/hooks")
        took = enroll(world, django_capture_on_commit_callbacks)
    assert (webhook_row(), took < 2.0) == (
        ("failed", 1, "the receiver did not answer in time"),
        True,
    )


def test_receiver_timeout_is_retried_as_the_same_message(
    world: World, receiver: Receiver, django_capture_on_commit_callbacks, short_timeouts
) -> None:
    """The first attempt reaches the receiver, which answers too late; the retry a minute
    later is the same webhook-id and the same bytes, and is recorded as sent."""
    subscription = subscribe(world, receiver)

    def slow_then_fine(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        if len(raw.requests) == 1:
            time.sleep(1.5)
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    with raw_receiver(slow_then_fine) as raw:
        point_at(subscription, f"http://127.0.0.1:{raw.port}/hooks")
        enroll(world, django_capture_on_commit_callbacks)
        assert webhook_row() == ("failed", 1, "the receiver did not answer in time")
        with (
            time_machine.travel(ENROLLED_AT + MINUTE, tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            reminders_sweep()
    delivery = WebhookDelivery.objects.get()
    assert [header(r, "webhook-id") for r in raw.requests] == [delivery.message_id] * 2
    assert [r.partition(b"\r\n\r\n")[2] for r in raw.requests] == [delivery.body.encode()] * 2
    assert webhook_row() == ("sent", 2, "")


def _reset(conn: socket.socket, raw: Raw) -> None:
    raw.requests.append(read_request(conn))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST


def _redirect_to_metadata(conn: socket.socket, raw: Raw) -> None:
    raw.requests.append(read_request(conn))
    conn.sendall(
        b"HTTP/1.1 307 Temporary Redirect\r\n"
        b"Location: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n"
    )


def _endless_body(conn: socket.socket, raw: Raw) -> None:
    raw.requests.append(read_request(conn))
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    for _ in range(100_000):  # 6.5 GB unless the sender stops reading
        conn.sendall(chunk)


def _answer_204(conn: socket.socket, raw: Raw) -> None:
    raw.requests.append(read_request(conn))
    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.parametrize(
    ("handle", "tls", "row", "requests_seen"),
    [
        (_reset, False, ("failed", 1, "could not connect to the receiver"), 1),
        (
            _redirect_to_metadata,
            False,
            ("dead", 1, "the receiver answered HTTP 307; it will not be retried"),
            1,
        ),
        (_endless_body, False, ("sent", 1, ""), 1),
        # A certificate no CA vouches for: nothing of the event reaches the receiver.
        (_answer_204, True, ("failed", 1, "could not connect to the receiver"), 0),
    ],
    ids=["connection-reset", "redirect-to-metadata", "endless-body", "untrusted-certificate"],
)
def test_receiver_faults_are_classified_and_nothing_more_is_sent(
    world: World,
    receiver: Receiver,
    django_capture_on_commit_callbacks,
    short_timeouts,
    tmp_path,
    handle,
    tls,
    row,
    requests_seen,
) -> None:
    subscription = subscribe(world, receiver)
    with raw_receiver(handle, tls=self_signed_tls(tmp_path) if tls else None) as raw:
        scheme = "https" if tls else "http"
        point_at(subscription, f"{scheme}://127.0.0.1:{raw.port}/hooks")
        took = enroll(world, django_capture_on_commit_callbacks)
        time.sleep(0.1)
    assert (webhook_row(), len(raw.requests), took < 2.0) == (row, requests_seen, True)
    assert Reminder.objects.filter(channel="webhook", status="sending").count() == 0


# ----------------------------------------------------------------------------------------
# Other sites' and other trials' subscriptions and deliveries


def test_foreign_subscription_ids_look_exactly_like_unknown_ones_and_write_nothing(
    world: World, import_seed, django_user_model
) -> None:
    """Berlin's NIAMS site system against Tokyo's NIAMS system's subscription and against
    a JASMINE system's subscription at Berlin: every door answers as for an id never made."""
    with time_machine.travel(SETUP_AT, tick=False):
        jasmine = import_seed("002").trial
        tokyo_system = django_user_model.objects.create_user("tokyo-ehr")
        Membership.objects.create(
            user=tokyo_system, trial=world.trial, site=world.tokyo, role="site_system"
        )
        jasmine_system = django_user_model.objects.create_user("berlin-jasmine-ehr")
        Membership.objects.create(
            user=jasmine_system, trial=jasmine, site=world.berlin, role="site_system"
        )
        foreign = [
            webhook_subscription_create(
                owner=owner,
                trial=trial,
                sites=[site],
                url="https://ehr.example/hooks",
                events=["visit.done"],
                by=owner,
            )[0]
            for owner, trial, site in (
                (tokyo_system, world.trial, world.tokyo),
                (jasmine_system, jasmine, world.berlin),
            )
        ]
    before = list(WebhookSubscription.objects.order_by("pk").values())
    history = get_history_model_for_model(WebhookSubscription).objects.count()
    unknown = max(s.pk for s in foreign) + 1000
    client = client_of(world.system)

    def answers(pk: int) -> list[tuple[int, dict]]:
        with time_machine.travel(SETUP_AT, tick=False):
            got = [client.get(f"/api/v1/webhooks/{pk}/")]
            for door in ("rotate-secret", "disable"):
                got.append(
                    client.post(
                        f"/api/v1/webhooks/{pk}/{door}/",
                        {"reason": "mine now"},
                        format="json",
                        HTTP_IF_MATCH=f'"webhook-{pk}-x"',
                        HTTP_IDEMPOTENCY_KEY=f"{door}-{pk}",
                    )
                )
        return [(r.status_code, r.json()) for r in got]

    expected = answers(unknown)
    assert [status for status, _ in expected] == [404, 404, 404]
    assert [answers(s.pk) for s in foreign] == [expected, expected]
    assert client.get("/api/v1/webhooks/").json()["results"] == []
    assert list(WebhookSubscription.objects.order_by("pk").values()) == before
    assert get_history_model_for_model(WebhookSubscription).objects.count() == history


def test_admin_another_sites_webhook_delivery_cannot_be_read_or_retried(
    client, world: World, receiver: Receiver, django_capture_on_commit_callbacks, django_user_model
) -> None:
    """A Berlin coordinator and Tokyo's dead delivery: its page answers as for an id never
    made, and the Retry action with its id changes nothing."""
    tokyo_system = django_user_model.objects.create_user("tokyo-ehr")
    Membership.objects.create(
        user=tokyo_system, trial=world.trial, site=world.tokyo, role="site_system"
    )
    with time_machine.travel(SETUP_AT, tick=False):
        _subscription, receiver.secret = webhook_subscription_create(
            owner=tokyo_system,
            trial=world.trial,
            sites=[world.tokyo],
            url=receiver.url,
            events=["participant.enrolled"],
            by=tokyo_system,
        )
    receiver.answer = 404
    enroll(world, django_capture_on_commit_callbacks, study_id="TOKYO-001")
    dead = Reminder.objects.get(channel="webhook")
    assert (dead.status, dead.participant.site) == ("dead", world.tokyo)
    coordinator = django_user_model.objects.create_user("coord", password="pw", is_staff=True)
    Membership.objects.create(
        user=coordinator, trial=world.trial, site=world.berlin, role="coordinator"
    )
    sign_in(client, coordinator)
    base = "/admin/scheduler/reminder/"

    def page(pk: int) -> tuple[int, str]:
        response = client.get(f"{base}{pk}/change/")
        return response.status_code, response.get("Location", "")

    assert page(dead.pk) == page(dead.pk + 100_000)
    with time_machine.travel(ENROLLED_AT + 60 * MINUTE, tick=False):
        client.post(base, {"action": "retry", "_selected_action": [dead.pk]})
    assert webhook_row() == ("dead", 1, "the receiver answered HTTP 404; it will not be retried")
    assert get_history_model_for_model(Reminder).objects.filter(id=dead.pk).count() == 0
    listed = client.get(base, {"channel__exact": "webhook"})
    assert list(listed.context["cl"].result_list) == []


# ----------------------------------------------------------------------------------------
# Payload dates


def test_payload_dates_are_the_sites_local_days_and_instants_utc(
    world: World, receiver: Receiver, django_capture_on_commit_callbacks, django_user_model
) -> None:
    """Tokyo (UTC+9): a visit booked at 08:30 and one done at 07:00 local are on the
    previous day in UTC; their days in the payload are Tokyo's."""
    tokyo_system = django_user_model.objects.create_user("tokyo-ehr")
    Membership.objects.create(
        user=tokyo_system, trial=world.trial, site=world.tokyo, role="site_system"
    )
    with time_machine.travel(SETUP_AT, tick=False):
        _subscription, receiver.secret = webhook_subscription_create(
            owner=tokyo_system,
            trial=world.trial,
            sites=[world.tokyo],
            url=receiver.url,
            events=["visit.booked", "visit.done"],
            by=tokyo_system,
        )
    enroll(world, django_capture_on_commit_callbacks, study_id="TOKYO-001")
    capture = django_capture_on_commit_callbacks
    # 09:30 on 2 Feb in Tokyo: V2 done at 07:00 local (22:00 UTC the day before).
    with (
        time_machine.travel(dt.datetime(2026, 2, 2, 0, 30, tzinfo=UTC), tick=False),
        capture(execute=True),
    ):
        visit_record_done(
            visit=world.visit("TOKYO-001", "V2"),
            actual_date=dt.date(2026, 2, 2),
            actual_time=dt.time(7, 0),
            by=tokyo_system,
        )
    with (
        time_machine.travel(dt.datetime(2026, 3, 16, 8, 0, tzinfo=UTC), tick=False),
        capture(execute=True),
    ):
        visit_book(
            visit=world.visit("TOKYO-001", "V4"),
            local_date=dt.date(2026, 3, 30),
            local_time=dt.time(8, 30),
            by=tokyo_system,
        )
    payloads = {p["type"]: p for p in receiver.payloads()}
    done, booked = payloads["visit.done"], payloads["visit.booked"]
    assert (done["timestamp"], done["data"]["site"], done["data"]["visit"]["actual_date"]) == (
        "2026-02-02T00:30:00Z",
        "tokyo",
        "2026-02-02",
    )
    visit = booked["data"]["visit"]
    assert (booked["timestamp"], visit["booked_start"], visit["booked_date"]) == (
        "2026-03-16T08:00:00Z",
        "2026-03-29T23:30:00Z",  # 08:30 JST
        "2026-03-30",
    )
    assert (visit["target_date"], visit["window_start"], visit["window_end"]) == (
        "2026-03-30",
        "2026-03-27",
        "2026-04-02",
    )
    assert booked["data"]["participant"]["enrolled_at"] == "2026-01-12T09:00:00Z"


# ----------------------------------------------------------------------------------------
# Logs


def test_delivery_logs_carry_no_contact_details_payload_or_secret(
    world: World, receiver: Receiver, django_capture_on_commit_callbacks, caplog
) -> None:
    subscribe(world, receiver)
    receiver.fail_first = 1
    with caplog.at_level(logging.DEBUG):
        enroll(world, django_capture_on_commit_callbacks)
        with (
            time_machine.travel(ENROLLED_AT + MINUTE, tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            reminders_sweep()
    assert webhook_row() == ("sent", 2, "")
    delivery = WebhookDelivery.objects.get()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "sent by webhook" in text  # the delivery was logged at all
    forbidden = [
        "berlin-001@example.org",
        "+49 30 1234567",
        "BERLIN-001",
        delivery.body,
        '"participant"',
        receiver.secret,
        receiver.secret.removeprefix("whsec_"),
        "ANI",
        "Anifrolumab",
    ]
    assert [f for f in forbidden if f in text] == []
    assert json.loads(delivery.body)["data"]["participant"]["study_id"] == "BERLIN-001"
