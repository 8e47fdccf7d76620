"""The gateway in front of Ray Serve's proxy (:mod:`genedge.serve.gateway`), against a small HTTP server standing in
for the proxy on loopback: limits, time-outs, the connection bound, a proxy that is down or dies, and the drain.

The server behind it is Python's own ``http.server``, a real HTTP/1.1 server; ``genedge serve`` runs the same
gateway in front of Ray's proxy (tests/test_serve_limits.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port, read_http_response

pytest.importorskip("h11", reason="the gateway needs genedge[serve]")

from genedge.serve.gateway import Gateway
from genedge.serve.limits import GatewaySettings

HOST = "127.0.0.1"


class _Upstream(BaseHTTPRequestHandler):
    """Ray's proxy's part: echoes a POST's JSON body; ``/plain-500`` answers as Ray does when a replica fails,
    ``/slow`` takes 0.5 s, ``/drop`` closes the connection without an answer."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/plain-500":
            self._answer(500, b"Internal Server Error", "text/plain")
            return
        if self.path == "/slow":
            time.sleep(0.5)
        self._answer(200, json.dumps({"echo": json.loads(body), "host": self.headers["Host"]}).encode())

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _start_upstream(port: int) -> ThreadingHTTPServer:
    upstream = ThreadingHTTPServer((HOST, port), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    return upstream


@pytest.fixture
def upstream_port() -> int:
    return free_port()


@pytest.fixture
def upstream(upstream_port: int) -> Iterator[ThreadingHTTPServer]:
    server = _start_upstream(upstream_port)
    yield server
    server.shutdown()
    server.server_close()


def _gateway(upstream_port: int, **limits: float) -> tuple[Gateway, int]:
    settings = GatewaySettings(**{"header_timeout_s": 1.0, "body_timeout_s": 1.0, "proxy_wait_s": 2.0, **limits})
    gateway = Gateway(settings, (HOST, upstream_port))
    port = free_port()
    gateway.start(HOST, port)
    return gateway, port


@pytest.fixture
def gateway(upstream: ThreadingHTTPServer, upstream_port: int) -> Iterator[tuple[Gateway, int]]:
    gateway, port = _gateway(upstream_port)
    yield gateway, port
    gateway.close()


def _exchange(port: int, raw: bytes, *, wait_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection; the status, headers and body of the answer (read until closed or whole)."""
    with socket.create_connection((HOST, port), timeout=wait_s) as sock:
        sock.sendall(raw)
        return read_http_response(sock)


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: genedge.test", "Content-Type: application/json", *extra]
    return ("\r\n".join([*head, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body


def _error(body: bytes) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_a_request_is_forwarded_whole_with_its_host_and_kept_alive(gateway) -> None:
    _, port = gateway
    with socket.create_connection((HOST, port), timeout=10) as sock:
        for i in range(3):  # one connection, three requests: keep-alive through the gateway
            sock.sendall(_post("/v1/generate", json.dumps({"prompt": f"p{i}"}).encode()))
            status, _, body = read_http_response(sock)
            assert status == 200
            assert json.loads(body) == {"echo": {"prompt": f"p{i}"}, "host": "genedge.test"}


def test_a_body_over_the_limit_is_refused_from_its_length_without_being_read(upstream, upstream_port) -> None:
    gateway, port = _gateway(upstream_port, max_body_bytes=1000)
    try:
        # Headers announcing 100 MB and only the first 64 KiB sent: the answer comes without the rest.
        status, headers, body = _exchange(port, _header_only(100 << 20))
        assert status == 413 and headers["connection"] == "close"
        assert "larger than this server takes (1000 bytes)" in _error(body)["message"]
        chunked = b"POST /v1/generate HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8)
        )
        assert _exchange(port, chunked)[0] == 413  # no length given: refused as soon as the body passes the limit
        assert _exchange(port, _post("/v1/generate", b'{"prompt": "ok"}'))[0] == 200
        assert gateway.events["bodies_too_large"] == 2
    finally:
        gateway.close()


def _header_only(length: int) -> bytes:
    return f"POST /v1/generate HTTP/1.1\r\nHost: g\r\nContent-Length: {length}\r\n\r\n".encode() + b"x" * 65536


def test_slow_headers_and_bodies_get_408_and_others_are_served_meanwhile(gateway) -> None:
    gw, port = gateway
    slow = [socket.create_connection((HOST, port), timeout=10) for _ in range(50)]
    try:
        for i, sock in enumerate(slow):  # half stop inside their headers, half inside their bodies
            sock.sendall(b"POST /v1/gen" if i % 2 else _post("/v1/generate", b'{"prompt": "x"}')[:-5])
        assert _exchange(port, _post("/v1/generate", b'{"prompt": "meanwhile"}'))[0] == 200
        answers = [read_http_response(sock) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert [status for status, _, _ in answers] == [408] * 50
    assert "did not arrive within 1 s" in _error(answers[0][2])["message"]
    assert gw.events["header_timeouts"] == 25 and gw.events["body_timeouts"] == 25


def test_connections_past_the_bound_are_refused_at_once_with_retry_after(upstream, upstream_port) -> None:
    gateway, port = _gateway(upstream_port, max_connections=3, header_timeout_s=30.0)
    held = [socket.create_connection((HOST, port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.2)  # the gateway has taken the three
        status, headers, body = _exchange(port, _post("/v1/generate", b"{}"))
        assert status == 503 and headers["retry-after"] == "1"
        assert "3 connections at most" in _error(body)["message"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while gateway.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _exchange(port, _post("/v1/generate", b"{}"))[0] == 200
    gateway.close()


def test_a_malformed_request_line_gets_a_json_400(gateway) -> None:
    _, port = gateway
    status, _, body = _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400 and "malformed HTTP request" in _error(body)["message"]


def test_while_the_proxy_is_down_requests_wait_for_it_then_are_served(upstream_port) -> None:
    gateway, port = _gateway(upstream_port, proxy_wait_s=20.0)
    try:
        restarted: list[ThreadingHTTPServer] = []
        threading.Timer(1.0, lambda: restarted.append(_start_upstream(upstream_port))).start()
        status, _, body = _exchange(port, _post("/v1/generate", b'{"prompt": "waited"}'), wait_s=30)
        assert status == 200 and json.loads(body)["echo"] == {"prompt": "waited"}
        assert gateway.events["proxy_waits"] >= 1
    finally:
        gateway.close()
        for server in restarted:
            server.shutdown()
            server.server_close()


def test_a_proxy_down_past_the_wait_gets_503_with_retry_after(upstream_port) -> None:
    gateway, port = _gateway(upstream_port, proxy_wait_s=0.5)
    try:
        status, headers, body = _exchange(port, _post("/v1/generate", b"{}"))
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "proxy is not answering" in _error(body)["message"]
    finally:
        gateway.close()


def test_a_proxy_lost_mid_request_or_a_plain_500_becomes_a_json_503(gateway) -> None:
    _, port = gateway
    status, headers, body = _exchange(port, _post("/drop", b"{}"))
    assert status == 503 and "retry-after" in headers
    assert "closed the connection while this request was in flight" in _error(body)["message"]
    status, headers, body = _exchange(port, _post("/plain-500", b"{}"))
    assert status == 503 and "retry-after" in headers and "Internal Server Error" in _error(body)["message"]


def test_the_drain_waits_for_accepted_requests_and_refuses_new_ones(gateway) -> None:
    gw, port = gateway
    answers: list[int] = []
    slow = threading.Thread(target=lambda: answers.append(_exchange(port, _post("/slow", b"{}"))[0]))
    slow.start()
    deadline = time.monotonic() + 10
    while not gw.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.drain(10.0) == 0  # returned only once the slow request was answered
    slow.join()
    assert answers == [200]
    status, headers, body = _exchange(port, _post("/v1/generate", b"{}"))
    assert status == 503 and headers["retry-after"] == "1" and "shutting down" in _error(body)["message"]


@pytest.mark.parametrize(
    ("limits", "field"),
    [({"max_body_bytes": 0}, "max_body_bytes"), ({"header_timeout_s": -1.0}, "header_timeout_s")],
)
def test_settings_refuse_values_that_are_not_limits(limits: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GatewaySettings(**limits)
