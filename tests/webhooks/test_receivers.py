"""Where webhooks may go (scheduler/outbox/receivers.py): addresses on the internet, or the
networks a deployment names; a name is resolved at each delivery, every address it resolves to
is checked, and the request goes to the address checked, with the name as its Host.

Name resolution is the outside world here (a resolver that answers what the test says); the
receiver is a real socket server on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from scheduler.outbox import receivers
from scheduler.outbox.webhooks import url_problem
from tests.webhooks.test_adversarial_review import Raw, raw_receiver, read_request

NOT_ON_THE_INTERNET = (
    "is not an address on the internet (private, link-local or reserved); a deployment names "
    "its own networks in WEBHOOK_ALLOWED_NETWORKS"
)


@pytest.fixture
def deployed(settings) -> Any:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = False
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    return settings


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "127.0.0.1 is this machine"),
        ("::1", "::1 is this machine"),
        ("::ffff:127.0.0.1", f"{ipaddress.ip_address('::ffff:127.0.0.1')} is this machine"),
        ("169.254.169.254", f"169.254.169.254 {NOT_ON_THE_INTERNET}"),  # the cloud's metadata
        ("fe80::1", f"fe80::1 {NOT_ON_THE_INTERNET}"),
        ("10.0.0.5", f"10.0.0.5 {NOT_ON_THE_INTERNET}"),
        ("172.16.8.1", f"172.16.8.1 {NOT_ON_THE_INTERNET}"),
        ("192.168.1.10", f"192.168.1.10 {NOT_ON_THE_INTERNET}"),
        ("0.0.0.0", f"0.0.0.0 {NOT_ON_THE_INTERNET}"),  # noqa: S104 - an address under test
        ("100.64.0.1", f"100.64.0.1 {NOT_ON_THE_INTERNET}"),  # carrier-grade NAT
        ("224.0.0.1", f"224.0.0.1 {NOT_ON_THE_INTERNET}"),
        ("fd12:3456::1", f"fd12:3456::1 {NOT_ON_THE_INTERNET}"),
        ("64:ff9b::a00:5", f"64:ff9b::a00:5 {NOT_ON_THE_INTERNET}"),  # NAT64 of 10.0.0.5
        ("2002:a00:5::1", f"2002:a00:5::1 {NOT_ON_THE_INTERNET}"),  # 6to4 of 10.0.0.5
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_addresses_on_the_internet_receive_events(deployed, address, problem) -> None:
    assert receivers.address_problem(ipaddress.ip_address(address)) == problem


def test_a_deployment_names_the_private_networks_its_site_systems_are_on(deployed) -> None:
    deployed.WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd00:20::/32"]

    assert receivers.address_problem(ipaddress.ip_address("10.20.4.7")) is None
    assert receivers.address_problem(ipaddress.ip_address("fd00:20::9")) is None
    assert receivers.address_problem(ipaddress.ip_address("10.21.0.1")) == (
        f"10.21.0.1 {NOT_ON_THE_INTERNET}"
    )
    assert url_problem("https://10.20.4.7/hooks") is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://localhost/hooks", "127.0.0.1 is this machine"),
        ("https://api.localhost/hooks", "127.0.0.1 is this machine"),
        (
            "https://[::ffff:10.0.0.5]/hooks",
            f"{ipaddress.ip_address('::ffff:10.0.0.5')} {NOT_ON_THE_INTERNET}",
        ),
        ("https://ehr.example:99999/hooks", "the URL's port must be a number from 1 to 65535"),
        ("https://ehr.example:0/hooks", "the URL's port must be a number from 1 to 65535"),
        ("https://☃.example/hooks", "the host is not a valid internet name"),
        ("http://ehr.example/hooks", "events are only sent over https"),
        (
            "http://127.0.0.1:9/hooks",
            "plain http is only allowed to this machine in development; use https",
        ),
        ("https://bücher.example:8443/hooks", None),  # an internationalised name is fine
    ],
)
def test_a_subscriptions_url_is_refused_before_anything_is_sent(deployed, url, problem) -> None:
    assert url_problem(url) == problem


def resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    """The resolver (the outside world) answers `addresses` for every name; the names asked."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in addresses
        ]

    monkeypatch.setattr(receivers.socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_that_resolves_to_an_internal_address_is_refused_at_delivery(
    deployed, monkeypatch
) -> None:
    # Public when subscribed; at delivery one of its addresses is the deployment's own.
    assert url_problem("https://ehr.example/hooks") is None
    asked = resolving_to(monkeypatch, "93.184.215.14", "10.0.0.5")

    with pytest.raises(receivers.Refused) as refused:
        receivers.post("https://ehr.example/hooks", data=b"{}", headers={})

    assert asked == ["ehr.example"]
    assert str(refused.value) == (
        f"the receiver's address is refused: 10.0.0.5 {NOT_ON_THE_INTERNET}"
    )


def test_the_request_goes_to_the_address_checked_with_the_name_as_its_host(
    settings, monkeypatch
) -> None:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = False
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the receiver's network, named

    def answer(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    with raw_receiver(answer) as raw:
        asked = resolving_to(monkeypatch, "127.0.0.1")
        answered = receivers.post(
            f"http://bücher.example:{raw.port}/hooks?site=berlin",
            data=b'{"type": "visit.done"}',
            headers={"webhook-id": "msg_1"},
        )

    head, _, body = raw.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert (answered, asked) == (receivers.Answer(204, None), ["xn--bcher-kva.example"])
    assert lines[0] == b"POST /hooks?site=berlin HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [
            f"Host: xn--bcher-kva.example:{raw.port}".encode(),
            b"webhook-id: msg_1",
            b"Content-Length: 22",
        ]
    )
    assert body == b'{"type": "visit.done"}'


def test_a_name_that_does_not_resolve_is_retried_later(deployed, monkeypatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(receivers.socket, "getaddrinfo", getaddrinfo)

    with pytest.raises(receivers.Unreachable, match="^the receiver's name could not be resolved$"):
        receivers.post("https://ehr.example/hooks", data=b"{}", headers={})
