"""The HTTP source: HTTP/1.1 on the daemon's event loop, parsed by h11 (DESIGN.md §6).

One task per connection reads, lets h11 turn the bytes into request events, and answers one
request at a time (keep-alive, pipelining through h11's flow control). The transport enforces
the limits; telemetryd.http_api routes and answers:

- headers: h11 buffers at most `http_max_header_bytes` of an unfinished head, then 431;
- bodies: a Content-Length over `http_max_body_bytes` is answered 413 before any of the body
  is read, a streamed (chunked) body as soon as it passes the limit;
- time: a connection that sends nothing for `http_idle_timeout_secs` is closed (408 when it
  left a request unfinished);
- connections: past `http_max_connections`, 503 and close.

An answer sent before the request's body was read closes the connection, after reading and
discarding what the client still sends for a moment ("lingering close"), so the client reads
the answer instead of a connection reset. A bug in a handler is a 500; it never ends the daemon.
"""

from __future__ import annotations

import contextlib
import http
import logging
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import h11
import msgspec
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

from telemetryd import __version__
from telemetryd.bus import Bus
from telemetryd.config import AuthSettings, PioneerSettings, ServerSettings, parse_host_port
from telemetryd.http_api import HttpApi, RejectHandler, Request, Response, Route, error_response
from telemetryd.ingest import Ingestor
from telemetryd.sink_worker import SinkWorker
from telemetryd.sources.accept import accept_or_pause
from telemetryd.sources.sse import serve_sse
from telemetryd.sources.unix import peer_of, refuse_if_in_use
from telemetryd.sources.websocket import serve_websocket
from telemetryd.stats import ComponentStats
from telemetryd.subscribers import SubscriberHub

log = logging.getLogger("telemetryd.http")

RECEIVE_BYTES = 64 * 1024
#: The body of a request answered without it (404, 405, 415) is read and discarded up to this
#: size to keep the connection open; a larger one closes the connection instead.
DISCARD_MAX_BYTES = 64 * 1024
#: How long a lingering close reads and discards what the client still sends.
LINGER_SECS = 2.0
#: After stop(), how long a request already being read or answered may still take.
STOP_GRACE_SECS = 10.0
SERVER = f"telemetryd/{__version__}"

_STATUS_PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_ANSWERABLE = (h11.IDLE, h11.SEND_RESPONSE)


class _Closing(Exception):
    """The client went away, or stop() closed a connection waiting for its next request."""


class _IdleTimeout(Exception):
    pass


@dataclass(eq=False)
class _Connection:
    stream: SocketStream
    h11: h11.Connection
    origin: bytes  # the anonymous `__origin__`
    #: Who is at the other end: {"remote": address} over TCP, the kernel's peer credentials
    #: ({"user", "uid", "gid", "pid"}) on the Unix socket.
    peer: dict[str, object] = field(default_factory=dict)
    #: `__origin__` per identity seen on this connection (a client sends one token, mostly).
    origins: dict[str, bytes] = field(default_factory=dict, repr=False)
    waiting: bool = True  # no request head read yet: stop() closes the connection right away
    method: bytes = b""
    scope: anyio.CancelScope | None = field(default=None, repr=False)
    read_scope: anyio.CancelScope | None = field(default=None, repr=False)


def _address(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(stream: SocketStream) -> dict[str, object]:
    sock = stream.extra(SocketAttribute.raw_socket)
    if sock.family == socket.AF_UNIX:
        peer = peer_of(sock)
        fields: dict[str, object] = {} if peer.user is None else {"user": peer.user}
        return fields | {"uid": peer.uid, "gid": peer.gid, "pid": peer.pid}
    return {"remote": stream.extra(SocketAttribute.remote_address)[0]}


def _head_bytes(request: h11.Request) -> int:
    """The size of a request's line and headers as sent (give or take optional whitespace)."""
    size = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n\r\n")
    for name, value in request.headers:
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size


class HttpSource:
    def __init__(
        self,
        settings: ServerSettings,
        ingestor: Ingestor,
        bus: Bus,
        on_rejected: RejectHandler,
        stats: ComponentStats,
        *,
        workers: list[SinkWorker],
        metrics: CollectorRegistry | None = None,
        auth: AuthSettings | None = None,
        pioneer: PioneerSettings | None = None,
        hub: SubscriberHub | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.host, self.port = parse_host_port(settings.http) if settings.http else ("", 0)
        self.unix_path = settings.http_unix_socket
        self.stats = stats
        self.api = HttpApi(
            settings,
            ingestor,
            bus,
            on_rejected,
            stats,
            workers=workers,
            metrics=metrics,
            auth=auth,
            pioneer=pioneer,
            hub=hub,
        )
        self.connections: set[_Connection] = set()
        self.responses: Counter[int] = Counter()
        self.address = ""  # "host:port" once listening
        self._stopping = False
        self._serve_scope: anyio.CancelScope | None = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listens until stop(); returns when every connection has finished."""
        listeners: list[SocketListener] = []
        fields: dict[str, object] = {}
        if self.settings.http:
            try:
                tcp = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            except OSError as e:
                raise OSError(
                    e.errno,
                    f"cannot listen on {self.settings.http} (server.http): {e.strerror or e}",
                ) from e
            addresses = [
                _address(one.extra(SocketAttribute.local_address)) for one in tcp.listeners
            ]
            self.address = addresses[0]
            fields |= {"http": self.address, "addresses": addresses}
            listeners += [cast(SocketListener, one) for one in tcp.listeners]
        path = self.unix_path
        if path is not None:
            refuse_if_in_use(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = self.settings.unix_socket_mode
            listeners.append(await anyio.create_unix_listener(path, mode=mode))
            fields |= {"http_unix_socket": str(path), "mode": oct(mode)}
        log.info("listening", extra={"fields": fields})
        try:
            async with anyio.create_task_group() as connections:
                with anyio.CancelScope() as self._serve_scope:
                    async with contextlib.AsyncExitStack() as stack:
                        for one in listeners:
                            await stack.enter_async_context(one)
                        async with anyio.create_task_group() as accepting:
                            for one in listeners:
                                accepting.start_soon(self._accept, one, connections)
                            task_status.started()
        finally:
            if path is not None:
                with contextlib.suppress(OSError):
                    if path.is_socket():
                        path.unlink()

    def stop(self) -> None:
        """Stop accepting; close connections waiting for a request; let the requests in flight
        finish (for at most STOP_GRACE_SECS), each answered with `Connection: close`."""
        self._stopping = True
        self.api.stopping = True
        if self.hub is not None:
            self.hub.close()  # subscriptions end now, not at the grace deadline
        if self._serve_scope is not None:
            self._serve_scope.cancel()
        deadline = anyio.current_time() + STOP_GRACE_SECS
        for connection in self.connections:
            if connection.waiting and connection.read_scope is not None:
                connection.read_scope.cancel()
            if connection.scope is not None:
                connection.scope.deadline = min(connection.scope.deadline, deadline)

    def snapshot(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "connections": len(self.connections),
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
        }

    async def _accept(self, listener: SocketListener, connections: TaskGroup) -> None:
        while not self._stopping:
            stream = await accept_or_pause(listener, self.stats)
            if stream is not None:
                connections.start_soon(self._handle, stream)

    async def _handle(self, stream: SocketStream) -> None:
        """One client. A bug met here ends this connection, never the daemon."""
        try:
            async with stream:
                await self._serve_connection(stream)
        except Exception:
            self.stats.errors["internal"] += 1
            log.exception("http connection failed")

    async def _serve_connection(self, stream: SocketStream) -> None:
        parser = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.settings.http_max_header_bytes
        )
        if len(self.connections) >= self.settings.http_max_connections:
            self.stats.errors["too_many_connections"] += 1
            refused = _Connection(stream, parser, b"")
            await self._send_quietly(
                refused,
                error_response(
                    503,
                    "too_many_connections",
                    f"at most {self.settings.http_max_connections} HTTP connections are served",
                    (("retry-after", "1"),),
                ),
                close=True,
            )
            await self._linger(refused)
            return
        peer = _peer(stream)
        origin = msgspec.json.encode({"transport": "http", **peer})
        connection = _Connection(stream, parser, origin, peer)
        self.connections.add(connection)
        try:
            with anyio.CancelScope() as connection.scope:
                await self._serve_requests(connection)
        finally:
            self.connections.discard(connection)

    async def _serve_requests(self, c: _Connection) -> None:
        while True:
            try:
                if not await self._cycle(c):
                    return
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint
                reason = "headers_too_large" if status == 431 else "bad_request"
                if c.h11.our_state in _ANSWERABLE:
                    if status == 431:
                        response = self._headers_too_large()
                    else:
                        self.stats.errors[reason] += 1
                        response = error_response(status, reason, f"malformed HTTP request: {e}")
                    await self._send_quietly(c, response, close=True)
                    await self._linger(c)
                return
            except _IdleTimeout:
                unfinished = not c.waiting or bool(c.h11.trailing_data[0])
                if unfinished and c.h11.our_state in _ANSWERABLE:
                    self.stats.errors["request_timeout"] += 1
                    await self._send_quietly(
                        c,
                        error_response(
                            408,
                            "request_timeout",
                            f"nothing received for {self.settings.http_idle_timeout_secs} s "
                            "(http_idle_timeout_secs)",
                        ),
                        close=True,
                    )
                return
            except _Closing:
                return

    async def _cycle(self, c: _Connection) -> bool:
        """Reads one request and answers it; True when the connection stays open for another."""
        event = await self._next_event(c)
        if type(event) is not h11.Request:
            return False  # ConnectionClosed: the client is done
        c.waiting = False
        c.method = event.method
        response, complete = await self._answer(c, event)
        if response.stream is not None:
            await self._stream(c, response)
            return False
        close = self._stopping or not complete
        await self._send(c, response, close=close)
        if not complete:
            await self._linger(c)
            return False
        if close or c.h11.our_state is not h11.DONE or c.h11.their_state is not h11.DONE:
            return False
        c.h11.start_next_cycle()
        c.waiting = True
        return True

    async def _answer(self, c: _Connection, event: h11.Request) -> tuple[Response, bool]:
        """The response, and whether the request was read to its end."""
        if _head_bytes(event) > self.settings.http_max_header_bytes:
            # h11 bounds an unfinished head; a whole head that arrived at once is measured here.
            return self._headers_too_large(), False
        content_type: str | None = None
        content_length: int | None = None
        authorization: bytes | None = None
        for name, value in event.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = int(value)
            elif name == b"authorization":
                # two are ambiguous: neither is used, so the request has no usable credentials
                authorization = value if authorization is None else b""
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("latin-1")
        route = self.api.route(method, target, content_type)
        identity = None
        if not isinstance(route, Response):
            verdict = self.api.authenticate(route, authorization)
            if isinstance(verdict, Response):
                route = verdict  # answered before the body is read
            else:
                identity = verdict
        if isinstance(route, Response):
            if c.h11.they_are_waiting_for_100_continue:
                return route, False  # the client sends no body unless told to continue
            return route, await self._read_body(c, DISCARD_MAX_BYTES) is not None
        limit = self.settings.http_max_body_bytes
        if content_length is not None and content_length > limit:
            return self._too_large(content_length), False
        if c.h11.they_are_waiting_for_100_continue:
            await self._send_bytes(
                c, c.h11.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        body = await self._read_body(c, limit)
        if body is None:
            return self._too_large(None), False
        path, _, query = target.partition("?")
        origin = c.origin if identity is None else self._origin(c, identity.user)
        request = Request(
            method, path, route.media_type, body, origin, identity, query, event.headers
        )
        return await self._call(route, request), True

    def _origin(self, c: _Connection, user: str) -> bytes:
        """`__origin__` of a request with a verified token: its identity is the user."""
        origin = c.origins.get(user)
        if origin is None:
            if len(c.origins) >= 8:
                c.origins.clear()
            # The token's identity is the user, first as in every origin; then where from.
            peer = {key: value for key, value in c.peer.items() if key != "user"}
            origin = msgspec.json.encode({"transport": "http", "user": user, **peer})
            c.origins[user] = origin
        return origin

    async def _call(self, route: Route, request: Request) -> Response:
        try:
            return await route.handler(request, route.param)
        except Exception:
            self.stats.errors["internal"] += 1
            log.exception(
                "http handler failed",
                extra={"fields": {"method": request.method, "path": request.path}},
            )
            return error_response(500, "internal_error", "internal error; the daemon logged it")

    def _headers_too_large(self) -> Response:
        self.stats.errors["headers_too_large"] += 1
        return error_response(
            431,
            "headers_too_large",
            f"request line and headers over {self.settings.http_max_header_bytes} bytes "
            "(http_max_header_bytes)",
        )

    def _too_large(self, content_length: int | None) -> Response:
        self.stats.errors["body_too_large"] += 1
        size = f"{content_length} bytes" if content_length is not None else "the body"
        return error_response(
            413,
            "body_too_large",
            f"{size} over the limit of {self.settings.http_max_body_bytes} bytes "
            "(http_max_body_bytes)",
        )

    async def _read_body(self, c: _Connection, limit: int) -> bytes | None:
        """The whole body, or None as soon as it passes `limit` bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(c)
            if type(event) is h11.Data:
                size += len(event.data)
                if size > limit:
                    return None
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                return b"".join(chunks)
            else:
                raise _Closing

    async def _next_event(self, c: _Connection) -> Any:
        while True:
            event = c.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            c.h11.receive_data(await self._receive(c))

    async def _receive(self, c: _Connection) -> bytes:
        """Some bytes, or b"" at the end of the stream."""
        if c.waiting and self._stopping:
            raise _Closing
        c.read_scope = anyio.CancelScope()  # stop() cancels it while c.waiting
        with anyio.move_on_after(self.settings.http_idle_timeout_secs) as idle, c.read_scope:
            try:
                return await c.stream.receive(RECEIVE_BYTES)
            except anyio.EndOfStream:
                return b""
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _Closing from None
            finally:
                c.read_scope = None
        if idle.cancelled_caught:
            raise _IdleTimeout
        raise _Closing

    async def _stream(self, c: _Connection, response: Response) -> None:
        """A subscription's records, until the client leaves or the daemon stops."""
        assert response.stream is not None
        subscription = response.stream.subscription
        key = response.stream.websocket_key
        keepalive = self.settings.subscribe_keepalive_secs
        self.responses[101 if key is not None else response.status] += 1
        try:
            if key is not None:
                await serve_websocket(c.stream, c.h11, subscription, key, keepalive)
            else:
                headers = [*response.headers, ("server", SERVER), ("connection", "close")]
                head = h11.Response(status_code=response.status, headers=headers, reason=b"OK")
                await serve_sse(c.stream, c.h11, subscription, head, keepalive)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass  # the subscriber went away mid-write
        finally:
            subscription.close()

    async def _send(self, c: _Connection, response: Response, *, close: bool) -> None:
        headers = [*response.headers, ("server", SERVER)]
        status = response.status
        if status != 204:
            headers.append(("content-length", str(len(response.body))))
        if close:
            headers.append(("connection", "close"))
        data = c.h11.send(
            h11.Response(
                status_code=status, headers=headers, reason=_STATUS_PHRASES.get(status, b"")
            )
        )
        if response.body and c.method != b"HEAD":
            data = (data or b"") + (c.h11.send(h11.Data(data=response.body)) or b"")
        data = (data or b"") + (c.h11.send(h11.EndOfMessage()) or b"")
        self.responses[status] += 1
        await self._send_bytes(c, data)

    async def _send_quietly(self, c: _Connection, response: Response, *, close: bool) -> None:
        with contextlib.suppress(_Closing):
            await self._send(c, response, close=close)

    async def _send_bytes(self, c: _Connection, data: bytes | None) -> None:
        if not data:
            return
        try:
            await c.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _Closing from None

    async def _linger(self, c: _Connection) -> None:
        """After an answer sent before the request was read: stop sending, then read and
        discard for a moment, so the client reads the answer rather than a reset."""
        with anyio.move_on_after(LINGER_SECS):
            try:
                await c.stream.send_eof()
                while await c.stream.receive(RECEIVE_BYTES):
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
