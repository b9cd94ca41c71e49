"""Session review of today's changes (webhook receivers, reminders, NUL middleware, amendments,
taper, protocol files). Each defect found is mended; its test stays."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.outbox import receivers
from tests.webhooks.test_adversarial_review import Raw, raw_receiver, read_request, self_signed_tls


@pytest.fixture
def loopback(settings) -> Any:
    settings.WEBHOOK_ALLOW_HTTP_LOOPBACK = True
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 0.5
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 0.5
    return settings


def resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
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


def trickle_headers(conn: socket.socket, raw: Raw) -> None:
    raw.requests.append(read_request(conn))
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(15):  # one header every 0.2 s: 3 s in all
        time.sleep(0.2)
        conn.sendall(b"X-Pad: 1\r\n")
    conn.sendall(b"Content-Length: 0\r\n\r\n")


@contextlib.contextmanager
def blackholes(port: int, hosts: list[str]) -> Iterator[None]:
    """Listeners whose accept queue is full: a connect to them hangs until its timeout (a
    receiver's name may resolve to addresses that never answer a SYN)."""
    held: list[socket.socket] = []
    try:
        for host in hosts:
            server = socket.socket()
            server.bind((host, port))
            server.listen(0)
            filler = socket.socket()
            filler.connect((host, port))
            held += [server, filler]
        yield
    finally:
        for sock in held:
            sock.close()


# ----------------------------------------------------------------------------------------
# receivers.post: the whole-request deadline


def test_deadline_holds_when_connecting_took_most_of_it(loopback, monkeypatch) -> None:
    # Two addresses that never answer (0.5 s each) before the one that trickles.
    with (
        raw_receiver(trickle_headers) as raw,
        blackholes(raw.port, ["127.0.0.2", "127.0.0.3"]),
    ):
        resolving_to(monkeypatch, "127.0.0.2", "127.0.0.3", "127.0.0.1")
        started = time.monotonic()
        with pytest.raises(receivers.Unreachable, match="did not answer in time"):
            receivers.post(f"http://ehr.example:{raw.port}/hooks", data=b"{}", headers={})
        took = time.monotonic() - started
    # connect + read timeouts = 1.0 s; the trickle alone lasts 3 s more.
    assert took < 1.8


class HandshakeTrickler:
    """A TLS receiver that sends its handshake in small pieces (each well within a read
    timeout), then trickles its answer's headers."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def __call__(self, conn: socket.socket, raw: Raw) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
        conn.settimeout(10)

        def flush(piece: int, spread: float) -> None:
            data = outgoing.read()
            pieces = range(0, len(data), piece)
            for i in pieces:
                conn.sendall(data[i : i + piece])
                time.sleep(spread / max(len(pieces), 1))

        def fill() -> bool:
            chunk = conn.recv(65536)
            if chunk:
                incoming.write(chunk)
            return bool(chunk)

        while True:
            try:
                tls.do_handshake()
                flush(65536, 0)
                break
            except ssl.SSLWantReadError:
                flush(16, 0.45)
                if not fill():
                    return
        request = b""
        while b"\r\n\r\n" not in request:
            try:
                request += tls.read(65536)
            except ssl.SSLWantReadError:
                if not fill():
                    return
        raw.requests.append(request)
        tls.write(b"HTTP/1.1 200 OK\r\n")
        flush(65536, 0)
        for _ in range(15):
            time.sleep(0.2)
            tls.write(b"X-Pad: 1\r\n")
            flush(65536, 0)
        tls.write(b"Content-Length: 0\r\n\r\n")
        flush(65536, 0)


def test_deadline_holds_when_the_tls_handshake_trickles(
    loopback, monkeypatch, tmp_path: Path
) -> None:
    # Deadline 0.9 s: one address that never answers (0.6 s), then a handshake of ~0.5 s
    # (within its own 0.6 s bound), during which the watchdog fires.
    loopback.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 0.6
    loopback.WEBHOOK_READ_TIMEOUT_SECONDS = 0.3
    server_tls = self_signed_tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "cert.pem"))
    receivers._tls.cache_clear()
    try:
        with (
            raw_receiver(HandshakeTrickler(server_tls)) as raw,
            blackholes(raw.port, ["127.0.0.2"]),
        ):
            resolving_to(monkeypatch, "127.0.0.2", "127.0.0.1")
            started = time.monotonic()
            with pytest.raises(receivers.Unreachable, match="did not answer in time"):
                receivers.post(f"https://127.0.0.1:{raw.port}/hooks", data=b"{}", headers={})
            took = time.monotonic() - started
    finally:
        receivers._tls.cache_clear()
    assert took < 1.6


def test_a_handshake_trickle_control_without_trickled_headers_succeeds(
    loopback, monkeypatch, tmp_path: Path
) -> None:
    """Control for the test above: the TLS path itself works against the same receiver."""
    server_tls = self_signed_tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "cert.pem"))
    receivers._tls.cache_clear()

    def answer(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    try:
        with raw_receiver(answer, tls=server_tls) as raw:
            status = receivers.post(f"https://127.0.0.1:{raw.port}/hooks", data=b"{}", headers={})
    finally:
        receivers._tls.cache_clear()
    assert status == receivers.Answer(204)


# ----------------------------------------------------------------------------------------
# receivers.post: what requests sent and http.client does not


def test_a_non_ascii_path_is_sent_percent_encoded(loopback) -> None:
    from scheduler.outbox.webhooks import url_problem

    def answer(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    with raw_receiver(answer) as raw:
        url = f"http://127.0.0.1:{raw.port}/hooks/café?site=zürich"
        assert url_problem(url) is None
        status = receivers.post(url, data=b"{}", headers={})
    assert status == receivers.Answer(204)
    assert raw.requests[0].startswith(b"POST /hooks/caf%C3%A9?site=z%C3%BCrich HTTP/1.1")


def test_a_ca_bundle_directory_is_honoured(loopback, monkeypatch, tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to hash the directory")
    server_tls = self_signed_tls(tmp_path)
    cadir = tmp_path / "ca"
    cadir.mkdir()
    shutil.copy(tmp_path / "cert.pem", cadir / "receiver.pem")
    subprocess.run(["openssl", "rehash", str(cadir)], check=True, capture_output=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cadir))
    receivers._tls.cache_clear()

    def answer(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    try:
        with raw_receiver(answer, tls=server_tls) as raw:
            status = receivers.post(f"https://127.0.0.1:{raw.port}/hooks", data=b"{}", headers={})
    finally:
        receivers._tls.cache_clear()
    assert status == receivers.Answer(204)


# Pinned behaviours (pass).


def _v6_receiver() -> tuple[socket.socket, list[bytes], threading.Thread]:
    server = socket.socket(socket.AF_INET6)
    server.bind(("::1", 0))
    server.listen(4)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        got.append(read_request(conn))
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, got, thread


def test_an_ipv6_literal_is_sent_with_a_bracketed_host_and_its_port(loopback) -> None:
    try:
        server, got, thread = _v6_receiver()
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = server.getsockname()[1]
    with server:
        status = receivers.post(f"http://[::1]:{port}/hooks", data=b"{}", headers={})
        thread.join(5)
    assert status == receivers.Answer(200)  # an HTTP/1.0 answer is read
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in got[0]


def test_100_continue_then_the_real_status(loopback) -> None:
    def answer(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n\r\n")

    with raw_receiver(answer) as raw:
        assert receivers.post(
            f"http://127.0.0.1:{raw.port}/h", data=b"{}", headers={}
        ) == receivers.Answer(202)


def test_endless_headers_are_a_retried_unreadable_answer(loopback) -> None:
    def answer(conn: socket.socket, raw: Raw) -> None:
        raw.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n")

    with (
        raw_receiver(answer) as raw,
        pytest.raises(receivers.Unreachable, match="could not be read"),
    ):
        receivers.post(f"http://127.0.0.1:{raw.port}/h", data=b"{}", headers={})


# ----------------------------------------------------------------------------------------
# NulParameterMiddleware


def _multipart_post(path: str, data: dict[str, Any]) -> Any:
    from django.test import RequestFactory

    return RequestFactory().post(path, data)  # multipart/form-data by default


def test_a_nul_in_a_multipart_field_beside_a_file_is_named() -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from scheduler.middleware import nul_parameter

    request = _multipart_post(
        "/admin/x/",
        {"file": SimpleUploadedFile("p.yaml", b"a: \x00\n"), "reason": "ok\x00"},
    )
    assert nul_parameter(request) == "reason"  # the file's bytes are not a parameter


def test_a_multipart_post_to_a_json_only_api_view_is_still_415() -> None:
    from rest_framework.exceptions import UnsupportedMediaType
    from rest_framework.parsers import JSONParser
    from rest_framework.request import Request

    from scheduler.middleware import nul_parameter

    request = _multipart_post("/api/v1/anything/", {"name": "x"})
    assert nul_parameter(request) is None  # what the middleware does first
    drf = Request(request, parsers=[JSONParser()])
    with pytest.raises(UnsupportedMediaType):
        _ = drf.data
