"""Sending one webhook to a site system's receiver: to an address checked first, in bounded
time.

A subscription's URL is a site system's to choose, so it is where a request forgery would
point: the cloud's metadata service (169.254.169.254), this machine, the deployment's own
network. Receivers are on the internet; an address that is not is refused, unless the
deployment names the private networks its site systems sit on (WEBHOOK_ALLOWED_NETWORKS), and
loopback is allowed only where plain http to this machine is (development, tests). A name is
resolved when each event is sent, every address it resolves to is checked, and the request goes
to the address checked (a name that resolves elsewhere a moment later changes nothing).

The whole request (connect, TLS, the request, the answer's status line and headers) must be
done within the connect and read timeouts together: a read timeout alone is per read, and a
receiver that trickles its headers would hold a worker for as long as it liked, past the
sending lease (then the row is taken back and sent again). The answer's body is not read.

http.client, not requests: the request must go to the checked address, with the name for TLS
(SNI and the certificate) and the Host header, and the socket must be at hand to cut at the
deadline. There is no proxy: the check is of the address the connection goes to.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from typing import NamedTuple
from urllib.parse import urlsplit

import certifi
import idna
from django.conf import settings
from requests.utils import requote_uri

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# IPv6 prefixes that carry an IPv4 address (NAT64): the IPv4 address inside is checked too.
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
LOCAL_NAMES = ("localhost", "localhost.localdomain")


class Refused(Exception):
    """The receiver's address is not one events are sent to (never retried)."""


class Unreachable(Exception):
    """No answer this time (retried): its message says what, in plain words."""


def allowed_networks() -> list[Network]:
    return _networks(tuple(getattr(settings, "WEBHOOK_ALLOWED_NETWORKS", ())))


@cache
def _networks(texts: tuple[str, ...]) -> list[Network]:
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts if text.strip()]


def _inside(address: Address) -> Iterator[Address]:
    """The address, and the IPv4 addresses an IPv6 one carries (6to4, Teredo, NAT64); an
    IPv4-mapped one is its IPv4 address alone."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        yield address.ipv4_mapped
        return
    yield address
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            yield address.sixtofour
        if address.teredo is not None:
            yield from address.teredo
        if any(address in prefix for prefix in NAT64):
            yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def address_problem(address: Address) -> str | None:
    """Why events may not go to `address`, in plain words; None when they may."""
    allowed = allowed_networks()
    for inner in _inside(address):
        if any(inner in network for network in allowed):
            continue
        if inner.is_loopback:
            if getattr(settings, "WEBHOOK_ALLOW_HTTP_LOOPBACK", False):
                continue
            return f"{address} is this machine"
        if inner.is_multicast or not inner.is_global:
            return (
                f"{address} is not an address on the internet (private, link-local or "
                "reserved); a deployment names its own networks in WEBHOOK_ALLOWED_NETWORKS"
            )
    return None


def host_problem(host: str) -> str | None:
    """What is wrong with a URL's host before anything is resolved: a name the HTTP client
    cannot send (not IDNA 2008), or an address (or a name for this machine) refused."""
    name = host.strip("[]").lower()
    try:
        address: Address = ipaddress.ip_address(name)
    except ValueError:
        try:
            idna.encode(name, uts46=True)
        except idna.IDNAError:
            return "the host is not a valid internet name"
        if name in LOCAL_NAMES or name.endswith(".localhost"):
            return address_problem(ipaddress.ip_address("127.0.0.1"))
        return None
    return address_problem(address)


@cache
def _tls() -> ssl.SSLContext:
    # The CA bundle requests used (certifi's), or the deployment's own as requests reads it:
    # REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE), a file or a directory of hashed certificates.
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle or certifi.where())


class Answer(NamedTuple):
    """What a receiver answered: its HTTP status and its Retry-After header, if any."""

    status: int
    retry_after: str | None = None


def post(url: str, *, data: bytes, headers: dict[str, str]) -> Answer:
    """POST `data` to `url`; the answer's status and Retry-After. Raises Refused or
    Unreachable."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname or ""
    name = host if ":" in host else idna.encode(host, uts46=True).decode("ascii")
    connect_seconds = settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS
    read_seconds = settings.WEBHOOK_READ_TIMEOUT_SECONDS
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Unreachable("the receiver's name could not be resolved") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
    for address in addresses:  # every one: the system may connect to any
        problem = address_problem(address)
        if problem is not None:
            raise Refused(f"the receiver's address is refused: {problem}")

    # One deadline for everything: connecting (to each address in turn), the TLS handshake,
    # the request and the answer's headers. At the deadline the watchdog shuts down the
    # socket in use at that moment (`live`, under `lock`: a socket is registered before it is
    # used and taken off before it is closed, so the watchdog never touches a closed one).
    deadline_at = time.monotonic() + connect_seconds + read_seconds
    cut = threading.Event()
    lock = threading.Lock()
    live: list[socket.socket] = []

    def at_deadline() -> None:
        with lock:
            cut.set()
            for sock in live:
                with contextlib.suppress(OSError):  # not connected yet, say
                    sock.shutdown(socket.SHUT_RDWR)

    def track(sock: socket.socket) -> socket.socket:
        with lock:
            live.append(sock)
            if cut.is_set():
                raise TimeoutError
        return sock

    watchdog = threading.Timer(deadline_at - time.monotonic(), at_deadline)
    watchdog.daemon = True
    watchdog.start()
    answer: http.client.HTTPResponse | None = None
    try:
        sock = _connect(addresses, port, connect_seconds, deadline_at, track)
        if secure:
            wrapped = _tls().wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
            track(wrapped)
            wrapped.settimeout(min(read_seconds, max(deadline_at - time.monotonic(), 0.001)))
            wrapped.do_handshake()
            sock = wrapped
        sock.settimeout(read_seconds)
        connection = http.client.HTTPConnection(name, port)
        connection.sock = sock
        # Percent-encoded as requests sent it: http.client writes the request line in ASCII.
        path = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        connection.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        default_port = 443 if secure else 80
        host_header = f"[{name}]" if ":" in name else name
        connection.putheader(
            "Host", host_header if port == default_port else f"{host_header}:{port}"
        )
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        answer = connection.getresponse()
        if cut.is_set():  # cut while the headers came: they ended at the cut, not by themselves
            raise Unreachable("the receiver did not answer in time")
        return Answer(answer.status, answer.getheader("Retry-After"))
    except TimeoutError:
        raise Unreachable("the receiver did not answer in time") from None
    except (OSError, http.client.HTTPException) as exc:
        if cut.is_set():
            raise Unreachable("the receiver did not answer in time") from None
        if isinstance(exc, http.client.HTTPException):
            raise Unreachable("the receiver's answer could not be read") from None
        raise Unreachable("could not connect to the receiver") from None
    finally:
        watchdog.cancel()
        with lock:
            done, live[:] = list(live), []
        if answer is not None:
            answer.close()
        for sock in done:
            sock.close()


def _connect(
    addresses: list[Address],
    port: int,
    seconds: float,
    deadline_at: float,
    track: Callable[[socket.socket], socket.socket],
) -> socket.socket:
    """A connection to the first of `addresses` that takes one, each given `seconds` at
    most and all of them together no more than is left before `deadline_at`."""
    failure: OSError = TimeoutError()
    for address in addresses:
        left = deadline_at - time.monotonic()
        if left <= 0:
            raise TimeoutError
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = track(socket.socket(family, socket.SOCK_STREAM))
        sock.settimeout(min(seconds, left))
        try:
            sock.connect((str(address), port))
        except OSError as exc:
            failure = exc
            continue
        return sock
    raise failure
