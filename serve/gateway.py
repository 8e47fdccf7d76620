"""The HTTP front of ``genedge serve``: limits and time-outs before Ray Serve's proxy, and an answer to every request.

Ray Serve's HTTP proxy (uvicorn) reads any body whole, waits for a request's headers forever and, when it
dies, leaves the port closed until Ray restarts it (tens of seconds). ``genedge serve`` therefore listens
with this gateway and runs Ray's proxy on a loopback port behind it. Per connection the gateway
(HTTP/1.1, by ``h11``):

- refuses a connection past ``max_connections`` at once (503, ``Retry-After``);
- closes one whose request headers take longer than ``header_timeout_s`` (408), whose body takes longer
  than ``body_timeout_s`` (408), or that sits idle between requests for ``idle_timeout_s``;
- answers a body over ``max_body_bytes`` with 413 from its ``Content-Length`` (or as soon as a chunked body
  passes it), without reading it;
- forwards the rest whole to the proxy. While the proxy is down (no connection, or Ray's answer that its
  routes are not loaded yet) the request has not reached genedge, so it is retried for up to
  ``proxy_wait_s``, then answered 503 with ``Retry-After``. A connection that breaks after the request was
  sent, or a plain-text error from Ray, becomes a JSON 503 that says so (the request may have been served).

Every error is a JSON body in OpenAI's shape (:func:`~genedge.serve.protocol.error_body`). The gateway
counts a request from the moment its headers are read, so a drain (:meth:`Gateway.drain`) waits for every
request it accepted, not only those Ray has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from genedge.profiler._imports import require
from genedge.serve.limits import GatewaySettings
from genedge.serve.protocol import Overloaded, RequestError, error_body

__all__ = ["Gateway"]

h11 = require("h11", extra="serve")

#: The longest request line plus headers the gateway reads (bytes): a text-to-image request needs a few hundred.
_MAX_HEADER_BYTES = 64 * 1024
_CHUNK = 64 * 1024
#: Seconds a connection closed after an error is still read from (:func:`_linger`).
_LINGER_S = 1.0
#: Headers that describe one connection, not the request (RFC 9110 §7.6.1): the gateway sets its own.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"expect"}
)
#: Ray's proxy answers these in plain text before its routes are loaded (after a restart): nothing reached genedge.
_RAY_NOT_READY = (b"Path '", b"Route table is not populated yet", b"No replicas are available yet")


@dataclass(frozen=True)
class _Answer:
    """A response to send: status, headers, body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @classmethod
    def of_error(cls, error: RequestError) -> _Answer:
        headers = [(b"content-type", b"application/json")]
        if isinstance(error, Overloaded):
            headers.append((b"retry-after", error.retry_after_header.encode()))
        return cls(error.status, tuple(headers), json.dumps(error_body(error)).encode())


class _Closed(Exception):
    """The connection ends: the client went away, or it is answered ``answer`` and closed; ``event`` names the
    count in :attr:`Gateway.events` it adds to."""

    def __init__(self, answer: _Answer | None = None, event: str | None = None) -> None:
        super().__init__()
        self.answer = answer
        self.event = event


def _header(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _too_large(limit: int) -> _Closed:
    error = RequestError(f"the request body is larger than this server takes ({limit} bytes)", status=413)
    return _Closed(_Answer.of_error(error), "bodies_too_large")


def _timed_out(what: str, timeout_s: float) -> _Closed:
    part = {"header": "line and headers", "body": "body"}[what]
    error = RequestError(f"the request's {part} did not arrive within {timeout_s:g} s", status=408)
    return _Closed(_Answer.of_error(error), f"{what}_timeouts")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status HTTP does not name
        return ""


def _raw(answer: _Answer) -> bytes:
    """``answer`` as the bytes of an HTTP/1.1 response that closes its connection (sent outside h11's states:
    before a request was read, or after it could not be)."""
    lines = [f"HTTP/1.1 {answer.status} {_reason(answer.status)}".encode()]
    lines += [k + b": " + v for k, v in answer.headers]
    lines += [b"content-length: " + str(len(answer.body)).encode(), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + answer.body


class Gateway:
    """The front that ``genedge serve`` listens with, forwarding to Ray's proxy at ``upstream``.

    Runs its own event loop in a thread: :meth:`start` binds (raising where it cannot), :meth:`drain`
    refuses new requests and waits for the accepted ones, :meth:`close` stops. :attr:`events` counts what
    the gateway refused or recovered from (``connections_refused``, ``header_timeouts``, ``body_timeouts``,
    ``bodies_too_large``, ``bad_requests``, ``proxy_waits``, ``proxy_unavailable``, ``proxy_lost``).
    """

    def __init__(self, settings: GatewaySettings, upstream: tuple[str, int]) -> None:
        self.settings = settings
        self.upstream = upstream
        self.events: Counter[str] = Counter()
        self.connections = 0
        self.in_flight = 0
        self.draining = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="genedge-gateway", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``. Raises OSError where the address cannot be bound."""
        self._thread.start()
        start = asyncio.start_server(self._connection, host, port, limit=_CHUNK, backlog=4096)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()

    def drain(self, timeout_s: float) -> int:
        """Answer new requests 503 and wait at most ``timeout_s`` for those accepted; returns how many are left."""

        async def wait() -> int:
            deadline = self._loop.time() + timeout_s
            while self.in_flight and self._loop.time() < deadline:
                await asyncio.sleep(0.02)
            return self.in_flight

        self.draining = True
        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result()

    def close(self) -> None:
        """Stop listening, end the connections still open, and stop the loop."""

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > self.settings.max_connections:
                self.events["connections_refused"] += 1
                refusal = Overloaded(
                    f"this server holds {self.settings.max_connections} connections at most", retry_after_s=1
                )
                writer.write(_raw(_Answer.of_error(refusal)))
                await writer.drain()
                return
            await self._requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve a connection's requests in turn until it closes or must be closed."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
        first = True
        while True:
            try:
                request = await self._request(conn, reader, first)
                if request is None:
                    return
                self.in_flight += 1
                try:
                    answer = await self._handle(conn, reader, writer, request)
                    await self._respond(conn, writer, answer, close=False)
                finally:
                    self.in_flight -= 1
            except _Closed as closed:
                if closed.event is not None:
                    self.events[closed.event] += 1
                if closed.answer is not None:
                    writer.write(_raw(closed.answer))
                    await writer.drain()
                    await _linger(reader, writer)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            first = False

    async def _event(self, conn: Any, reader: asyncio.StreamReader, deadline: float, on_timeout: _Closed) -> Any:
        """The connection's next h11 event, reading as needed until ``deadline`` (loop time)."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as err:
                status = err.error_status_hint if err.error_status_hint >= 400 else 400
                error = RequestError(f"malformed HTTP request: {err}", status=status)
                raise _Closed(_Answer.of_error(error), "bad_requests") from None
            if event is not h11.NEED_DATA:
                return event
            left = deadline - self._loop.time()
            if left <= 0:
                raise on_timeout
            try:
                data = await asyncio.wait_for(reader.read(_CHUNK), timeout=left)
            except TimeoutError:
                raise on_timeout from None
            conn.receive_data(data)

    async def _request(self, conn: Any, reader: asyncio.StreamReader, first: bool) -> Any | None:
        """The next request's line and headers (None where the client closed, or idled out, between requests)."""
        if not first:  # a kept-alive connection: wait for the next request's first bytes at most idle_timeout_s
            try:
                data = await asyncio.wait_for(reader.read(_CHUNK), timeout=self.settings.idle_timeout_s)
            except TimeoutError:
                return None
            conn.receive_data(data)
        timeout = self.settings.header_timeout_s
        event = await self._event(conn, reader, self._loop.time() + timeout, _timed_out("header", timeout))
        return event if isinstance(event, h11.Request) else None

    async def _handle(
        self, conn: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Any
    ) -> _Answer:
        """Read the request's body within the limits and forward it."""
        limit = self.settings.max_body_bytes
        length = _header(request.headers, b"content-length")
        if length is not None and int(length) > limit:
            raise _too_large(limit)
        if self.draining:
            raise _Closed(_Answer.of_error(Overloaded("the server is shutting down", retry_after_s=1)))
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = await self._body(conn, reader, limit)
        return await self._forward(request, body)

    async def _body(self, conn: Any, reader: asyncio.StreamReader, limit: int) -> bytes:
        timeout = self.settings.body_timeout_s
        deadline = self._loop.time() + timeout
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._event(conn, reader, deadline, _timed_out("body", timeout))
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(event, h11.ConnectionClosed):
                raise _Closed()
            size += len(event.data)
            if size > limit:
                raise _too_large(limit)
            parts.append(event.data)

    async def _forward(self, request: Any, body: bytes) -> _Answer:
        """Ray's proxy's answer, waiting for the proxy while the request cannot have reached genedge."""
        deadline = self._loop.time() + self.settings.proxy_wait_s
        delay = 0.05
        while True:
            try:
                answer = await self._exchange(request, body)
            except OSError as err:  # no connection: nothing was sent
                reason = f"no connection to Ray Serve's proxy ({type(err).__name__})"
            except _ProxyLost as lost:
                self.events["proxy_lost"] += 1
                return _Answer.of_error(Overloaded(str(lost), retry_after_s=1))
            else:
                if not _ray_not_ready(answer):
                    return _json_error(answer)
                reason = f"Ray Serve's routes are not loaded ({answer.status})"
            if self._loop.time() + delay > deadline:
                self.events["proxy_unavailable"] += 1
                message = f"the server's proxy is not answering for {self.settings.proxy_wait_s:g} s: {reason}"
                return _Answer.of_error(Overloaded(message, retry_after_s=5))
            self.events["proxy_waits"] += 1
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    async def _exchange(self, request: Any, body: bytes) -> _Answer:
        """One try: send the request to Ray's proxy on a new connection and read its whole answer."""
        reader, writer = await asyncio.open_connection(*self.upstream, limit=_CHUNK)
        sent = False
        try:
            client = h11.Connection(h11.CLIENT)
            headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP and k != b"content-length"]
            headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            writer.write(client.send(h11.Request(method=request.method, target=request.target, headers=headers)))
            writer.write(client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage()))
            await writer.drain()
            sent = True
            return await _read_answer(client, reader)
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as err:
            if not sent:
                raise OSError(str(err)) from err
            raise _ProxyLost(
                "Ray Serve's proxy closed the connection while this request was in flight (it may have been "
                f"served; {type(err).__name__}); retry it"
            ) from err
        finally:
            writer.close()

    async def _respond(self, conn: Any, writer: asyncio.StreamWriter, answer: _Answer, *, close: bool) -> None:
        headers = [(k, v) for k, v in answer.headers if k.lower() not in _HOP_BY_HOP and k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        reason = _reason(answer.status).encode()
        writer.write(conn.send(h11.Response(status_code=answer.status, headers=headers, reason=reason)))
        writer.write(conn.send(h11.Data(data=answer.body)) + conn.send(h11.EndOfMessage()))
        await writer.drain()


class _ProxyLost(Exception):
    """The proxy's connection broke after the request was sent."""


async def _read_answer(client: Any, reader: asyncio.StreamReader) -> _Answer:
    response = None
    parts: list[bytes] = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await reader.read(_CHUNK))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            parts.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return _Answer(response.status_code, tuple(response.headers), b"".join(parts))
        elif isinstance(event, h11.ConnectionClosed):
            raise asyncio.IncompleteReadError(b"", None)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an answer that closes the connection: stop writing and read what the client still sends, for a
    moment, before closing. Closing with unread data makes the kernel reset the connection, and a client still
    sending (a body refused unread) may then lose the answer before it reads it."""
    if writer.can_write_eof():
        writer.write_eof()
    deadline = asyncio.get_running_loop().time() + _LINGER_S
    with contextlib.suppress(TimeoutError, ConnectionError):
        while await asyncio.wait_for(reader.read(_CHUNK), timeout=max(deadline - asyncio.get_running_loop().time(), 0)):
            pass


def _content_type(answer: _Answer) -> bytes:
    return (_header(answer.headers, b"content-type") or b"").split(b";")[0].strip().lower()


def _ray_not_ready(answer: _Answer) -> bool:
    """Ray's proxy's own plain-text answer that it cannot route yet (genedge's ingress answers every path in JSON)."""
    return (
        answer.status in (404, 503)
        and _content_type(answer) != b"application/json"
        and answer.body.startswith(_RAY_NOT_READY)
    )


def _json_error(answer: _Answer) -> _Answer:
    """The answer itself, or a plain-text error from Ray (a replica that died mid-request) as a JSON 503."""
    if answer.status < 500 or _content_type(answer) == b"application/json":
        return answer
    text = answer.body[:200].decode("utf-8", "replace").strip()
    message = f"Ray Serve answered {answer.status} ({text!r}): a replica failed while serving this request; retry it"
    return _Answer.of_error(Overloaded(message, retry_after_s=1))
