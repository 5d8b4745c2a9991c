"""The HTTP source: HTTP/1.1 on the daemon's event loop (docs/http-api.md).

The listeners are the running loop's servers (uvloop's in the daemon) on sockets bound here;
each connection is an asyncio.Protocol. What arrives is fed to a sans-IO request reader
(telemetryd.sources.http.parser, llhttp through httptools) as it arrives, and one task per
connection answers the requests it yields, one at a time and in order (keep-alive, pipelining),
calling telemetryd.sources.http.app to route and answer them. Responses are written as bytes, with
the transport's flow control. The transport enforces the limits:

- headers: the reader answers a request line and headers over `http_max_header_bytes` 431,
  finished or not;
- bodies: a Content-Length over `http_max_body_bytes` is answered 413 before any of the body
  is read, a streamed (chunked) body as soon as it passes the limit;
- time: a connection that sends nothing for `http_idle_timeout_secs` while it is waited for is
  closed (408 when it left a request unfinished); a head must be whole within
  `http_head_timeout_secs` of the connection (or of the first byte of the next request on a
  keep-alive one), and a body must keep up `http_min_body_rate_bytes` per second after that
  same grace, however often a byte trickles in (408, `head_timeout`, `body_too_slow`); one
  timer per connection, for the earliest of its deadlines;
- connections: past `http_max_connections`, the connection waited for longest without a
  request in it is closed to make room: an idle keep-alive one first, else the oldest
  unfinished head (408, `evicted`), so a crowd of slow clients cannot hold every slot; only
  when every connection is busy with a request is the newcomer answered 503 and closed;
- memory: while a request is answered, reading pauses once PIPELINE_MAX_BYTES more have
  arrived (a client pipelining, a handler waiting for room in full `block` queues);
- the loop: a connection pauses reading for a pass of the loop after each READ_SLICE_BYTES
  (libuv reads a socket up to 32 times in a pass), so parsing one client's flood never holds
  the loop longer than a slice takes; the reader bounds the chunks of a body.

An answer sent before the request's body was read closes the connection, after reading and
discarding what the client still sends for a moment ("lingering close"), so the client reads
the answer instead of a connection reset. A bug in a handler is a 500; it never ends the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import logging
import os
import socket
import stat
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any, Final, cast

import anyio
from anyio.abc import TaskStatus

from telemetryd import __version__
from telemetryd.auth import Identity
from telemetryd.config import parse_host_port
from telemetryd.core.origin import Origin, of_remote, of_unix_peer
from telemetryd.settings_types import give_to_group
from telemetryd.sources.http.app import HttpApi, Request, Response, Route, error_response
from telemetryd.sources.http.channel import Channel, ChannelClosed
from telemetryd.sources.http.content_encoding import BadBody, content_coding, gunzip
from telemetryd.sources.http.parser import (
    Body,
    EndOfMessage,
    Event,
    ProtocolError,
    RequestHead,
    RequestReader,
)
from telemetryd.sources.http.sse import serve_sse
from telemetryd.sources.http.websocket import serve_websocket
from telemetryd.sources.unix import refuse_if_in_use

log = logging.getLogger("telemetryd.http")

#: The body of a request answered without it (404, 405, 415) is read and discarded up to this
#: size to keep the connection open; a larger one closes the connection instead.
DISCARD_MAX_BYTES = 64 * 1024
#: How long a lingering close reads and discards what the client still sends.
LINGER_SECS = 2.0
#: After stop(), how long a request already being read or answered may still take.
STOP_GRACE_SECS = 10.0
#: Bytes received while a request is being answered, past which reading pauses until it is.
PIPELINE_MAX_BYTES = 64 * 1024
#: Bytes a connection reads before it lets the loop go round once (other clients, timers).
READ_SLICE_BYTES = 256 * 1024
#: Pending connections the kernel may queue on a listening socket (it caps this).
BACKLOG = 65536
SERVER = f"telemetryd/{__version__}"

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in http.HTTPStatus
}
_SERVER_LINE: Final = b"server: %s\r\n" % SERVER.encode()
_NO_CONTENT: Final = _STATUS_LINES[204] + _SERVER_LINE + b"\r\n"
_CLOSE_LINE: Final = b"connection: close\r\n"
#: As h11 wrote it when the client's request ended the connection (HTTP/1.0, its own close).
_CLIENT_CLOSE_LINE: Final = b"Connection: close\r\n"
_CONTINUE: Final = b"HTTP/1.1 100 \r\n\r\n"
_CHUNKED_LINE: Final = b"Transfer-Encoding: chunked\r\n"

_NEVER: Final = float("inf")

# what a connection does with the bytes it receives
_HTTP: Final = 0  # requests
_STREAM: Final = 1  # a subscription's (SSE, WebSocket)
_LINGER: Final = 2  # discarded, before the connection is closed


class _Closing(Exception):
    """The client went away, or stop() closed a connection waiting for its next request."""


class _TimedOut(Exception):
    """A deadline passed, or the connection was chosen to make room: the reason to count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BadRequest(Exception):
    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.error = error


def _address(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _head(status: int, headers: tuple[tuple[str, str], ...]) -> list[bytes]:
    """A response's status line and its own headers (the transport's come after)."""
    parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
    parts += [b"%s: %s\r\n" % (name.encode(), value.encode("latin-1")) for name, value in headers]
    return parts


class HttpSource:
    def __init__(self, api: HttpApi) -> None:
        """Serves `api` (its settings, stats and subscriber hub) on the configured listeners."""
        self.api = api
        self.settings = settings = api.settings
        self.hub = api.hub
        self.host, self.port = parse_host_port(settings.http) if settings.http else ("", 0)
        self.unix_path = settings.http_unix_socket
        self.stats = api.stats
        #: The connections served (those refused for being one too many are not).
        self.connections: set[_Connection] = set()
        self.responses: Counter[int] = Counter()
        self.address = ""  # "host:port" once listening
        self._stopping = False
        self._open: set[_Connection] = set()  # every connection not closed yet
        # Served connections without a request in them, oldest first (dicts keep order): the
        # ones closed to make room for a newcomer, idle keep-alive ones before unfinished heads.
        self._idle: dict[_Connection, None] = {}
        self._heads: dict[_Connection, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._finished: asyncio.Future[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listens until stop(); returns when every connection has finished."""
        loop = self._loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        listening: list[socket.socket] = []
        fields: dict[str, object] = {}
        path = self.unix_path
        bound_path = False  # ours to remove at the end
        try:
            if self.settings.http:
                try:
                    listening += await self._bind_tcp(loop)
                except OSError as e:
                    raise OSError(
                        e.errno,
                        f"cannot listen on {self.settings.http} (server.http): {e.strerror or e}",
                    ) from e
                addresses = [_address(one.getsockname()) for one in listening]
                self.address = addresses[0]
                fields |= {"http": self.address, "addresses": addresses}
            if path is not None:
                refuse_if_in_use(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                mode = self.settings.unix_socket_mode
                listening.append(_bind_unix(path, mode))
                bound_path = True
                give_to_group(path, self.settings.unix_socket_group, "server.unix_socket_group")
                fields |= {"http_unix_socket": str(path), "mode": oct(mode)}
            for one in listening:
                if one.family == socket.AF_UNIX:
                    server = await loop.create_unix_server(
                        self._connection, sock=one, backlog=BACKLOG
                    )
                else:
                    server = await loop.create_server(self._connection, sock=one, backlog=BACKLOG)
                self._servers.append(server)
            listening = []  # the servers own them now
            log.info("listening", extra={"fields": fields})
            task_status.started()
            if self._stopping:  # stop() came first
                for listener in self._servers:
                    listener.close()
                self._check_finished()
            await self._finished
        finally:
            for one in listening:
                one.close()
            with anyio.CancelScope(shield=True):
                await self._close_all()
                await self.api.aclose()
            if path is not None and bound_path:
                with contextlib.suppress(OSError):
                    if path.is_socket():
                        path.unlink()

    def stop(self) -> None:
        """Stop accepting; close connections waiting for a request; let the requests in flight
        finish (for at most STOP_GRACE_SECS), each answered with `Connection: close`."""
        if self._stopping:
            return
        self._stopping = True
        self.api.stopping = True
        if self.hub is not None:
            self.hub.close()  # subscriptions end now, not at the grace deadline
        for server in self._servers:
            server.close()
        if self._loop is not None:
            self._grace = self._loop.call_later(STOP_GRACE_SECS, self._abort_all)
        for connection in list(self._open):
            connection.stop()
        self._check_finished()

    @property
    def config_key(self) -> str:
        return "server.http" if self.settings.http else "server.http_unix_socket"

    def snapshot(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "connections": len(self.connections),
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
        }

    # -- listening ---------------------------------------------------------------------------

    async def _bind_tcp(self, loop: asyncio.AbstractEventLoop) -> list[socket.socket]:
        """A listening socket per address of the host (one port for all when it is 0)."""
        found = await loop.getaddrinfo(
            self.host, self.port, type=0, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
        )
        sockaddrs = sorted(
            {(family, addr) for family, kind, _, _, addr in found if kind == socket.SOCK_STREAM}
        )
        for _ in range(10):  # ephemeral port collisions across the addresses
            bound: list[socket.socket] = []
            port = self.port
            try:
                for family, addr in sockaddrs:
                    bound.append(_bind_tcp_one(family, (addr[0], port, *addr[2:])))
                    if self.port == 0:
                        port = bound[-1].getsockname()[1]
            except OSError as e:
                for one in bound:
                    one.close()
                if e.errno == errno.EADDRINUSE and self.port == 0 and port:
                    sockaddrs.append(sockaddrs.pop(0))
                    continue
                raise
            return bound
        raise OSError(errno.EADDRINUSE, "no port free on every address of the host")

    def _connection(self) -> _Connection:
        return _Connection(self)

    # -- connections and tasks ---------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.errors["internal"] += 1
            log.error("http task failed", exc_info=task.exception())
        self._check_finished()

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._check_finished()

    def room_for_one(self) -> bool:
        """At the connection cap: closes the connection waited for longest without a request
        in it; False when every connection is busy with a request."""
        waiting = self._idle or self._heads
        if not waiting:
            return False
        next(iter(waiting)).evict()
        return True

    def unlist(self, connection: _Connection) -> None:
        self._idle.pop(connection, None)
        self._heads.pop(connection, None)

    def _check_finished(self) -> None:
        finished = self._finished
        if (
            self._stopping
            and not self._open
            and not self._tasks
            and finished is not None
            and not finished.done()
        ):
            finished.set_result(None)

    def _abort_all(self) -> None:
        """The grace period is over: whatever is still open is cut off."""
        for connection in list(self._open):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()

    async def _close_all(self) -> None:
        for server in self._servers:
            server.close()
        if self._grace is not None:
            self._grace.cancel()
        if self._open or self._tasks:
            self._abort_all()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=STOP_GRACE_SECS)

    # -- answers -----------------------------------------------------------------------------

    def headers_too_large(self) -> Response:
        self.stats.errors["headers_too_large"] += 1
        return error_response(
            431,
            "headers_too_large",
            f"request line and headers over {self.settings.http_max_header_bytes} bytes "
            "(http_max_header_bytes)",
        )

    def too_large(self, content_length: int | None) -> Response:
        self.stats.errors["body_too_large"] += 1
        size = f"{content_length} bytes" if content_length is not None else "the body"
        return error_response(
            413,
            "body_too_large",
            f"{size} over the limit of {self.settings.http_max_body_bytes} bytes "
            "(http_max_body_bytes)",
        )

    def timed_out(self, reason: str) -> Response:
        settings = self.settings
        if reason == "head_timeout":
            message = (
                f"request line and headers not whole within {settings.http_head_timeout_secs} s "
                "(http_head_timeout_secs)"
            )
        elif reason == "body_too_slow":
            message = (
                f"body slower than {settings.http_min_body_rate_bytes} bytes/s after "
                f"{settings.http_head_timeout_secs} s (http_min_body_rate_bytes)"
            )
        elif reason == "evicted":
            message = (
                "request line and headers not whole when a new connection needed room "
                f"(http_max_connections = {settings.http_max_connections})"
            )
        else:
            message = (
                f"nothing received for {settings.http_idle_timeout_secs} s (http_idle_timeout_secs)"
            )
        return error_response(408, reason, message)

    def too_many_connections(self) -> Response:
        self.stats.errors["too_many_connections"] += 1
        return error_response(
            503,
            "too_many_connections",
            f"at most {self.settings.http_max_connections} HTTP connections are served",
            (("retry-after", "1"),),
        )

    def response_bytes(
        self, response: Response, method: bytes, *, close: bool, client_close: bool = False
    ) -> bytes:
        status = response.status
        self.responses[status] += 1
        if status == 204 and not close and not client_close and not response.headers:
            return _NO_CONTENT
        parts = _head(status, response.headers)
        parts.append(_SERVER_LINE)
        body = response.body
        if status != 204:
            parts.append(b"content-length: %d\r\n" % len(body))
        if client_close:
            parts.append(_CLIENT_CLOSE_LINE)
        elif close:
            parts.append(_CLOSE_LINE)
        parts.append(b"\r\n")
        if body and method != b"HEAD":
            parts.append(body)
        return b"".join(parts)


def _bind_tcp_one(family: int, sockaddr: tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(path: os.PathLike[str], mode: int) -> socket.socket:
    """A listening Unix socket at `path` (a stale socket file there is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(os.fspath(path))
        os.chmod(path, mode)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class _Connection(asyncio.Protocol):
    """One client: the reader fed as bytes arrive, one task answering its requests."""

    def __init__(self, source: HttpSource) -> None:
        self.source = source
        loop = source._loop
        assert loop is not None
        self.loop = loop
        settings = source.settings
        self.idle_secs = settings.http_idle_timeout_secs
        self.head_secs = settings.http_head_timeout_secs
        self.min_body_rate = settings.http_min_body_rate_bytes
        self.reader = RequestReader(settings.http_max_header_bytes, settings.http_max_body_bytes)
        self.events: deque[Event] = deque()
        self.transport: asyncio.Transport | None = None
        self.origin = b""  # the anonymous `__origin__`
        #: Who is at the other end: {"remote": address} over TCP, the kernel's peer
        #: credentials ({"user", "uid", "gid", "pid"}) on the Unix socket.
        self.peer = Origin("http")  # who the connection is, before any token
        #: `__origin__` per identity seen on this connection (a client sends one token, mostly).
        self.origins: dict[Identity, bytes] = {}
        self.waiting = True  # no request head read yet: stop() closes the connection right away
        self.method = b""
        self.task: asyncio.Task[None] | None = None
        self.channel: Channel | None = None
        self._mode = _HTTP
        self._waiter: asyncio.Future[None] | None = None  # the task waits for events
        self._lost = False
        self._eof = False
        self._timed_out = ""  # the reason, once a deadline passed
        self._evicted = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0  # nothing received since the task began waiting: idle
        # The head's or the body's deadline, and its reason; a body's moves on with its bytes.
        self._limit_at = _NEVER
        self._limit = ""
        self._body_started = 0.0
        self._body_bytes = 0
        self._backlog = 0  # bytes received since the task last waited for more
        self._read_paused = False  # for the backlog
        self._slice = 0  # bytes read since reading last yielded to the loop
        self._slice_paused = False
        self._drain: asyncio.Future[None] | None = None  # while the transport's buffer is full
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        source = self.source
        source._open.add(self)
        if source._stopping:
            transport.abort()
            return
        if (
            len(source.connections) >= source.settings.http_max_connections
            and not source.room_for_one()
        ):
            response = source.too_many_connections()
            transport.write(source.response_bytes(response, b"", close=True))
            self._linger()
            return
        try:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family == socket.AF_UNIX:
                self.peer = of_unix_peer(sock, "http")
            else:
                self.peer = of_remote(transport.get_extra_info("peername")[0], "http")
            self.origin = self.peer.encode()
        except Exception:
            self._failed()
            return
        source.connections.add(self)
        source._heads[self] = None
        self._limit_head(self.loop.time())
        self.task = source.spawn(self._run())

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except Exception:
            self._failed()

    def eof_received(self) -> bool:
        try:
            self._received_eof()
        except Exception:
            self._failed()
        return True  # keep the transport open: answers may still be written

    def _failed(self) -> None:
        """A bug met in a transport callback ends this connection, never the daemon."""
        self.source.stats.errors["internal"] += 1
        log.exception("http connection failed")
        self.abort()

    def _received(self, data: bytes) -> None:
        mode = self._mode
        if mode == _HTTP:
            size = len(data)
            self._slice += size
            if self._slice > READ_SLICE_BYTES:
                self._yield_reading()
            events = self.reader.feed(data)
            waiter = self._waiter
            if self.waiting:
                self._head_progress(bool(events))
            elif self._limit == "body_too_slow":
                self._body_bytes += size
                self._limit_at = self._body_deadline()
            if events:
                self.events.extend(events)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)  # its next wait starts a new idle period
            elif waiter is not None:
                self._deadline = self.loop.time() + self.idle_secs  # some of a request came
            if waiter is None:  # the task is answering a request: bound what piles up
                self._backlog += size
                if self._backlog > PIPELINE_MAX_BYTES:
                    self._pause_reading()
        elif mode == _STREAM:
            assert self.channel is not None
            self.channel.received(data)
        # _LINGER: discarded

    def _received_eof(self) -> None:
        mode = self._mode
        if mode == _HTTP:
            self._eof = True
            self.events.extend(self.reader.feed_eof())
            self._wake()
        elif mode == _STREAM:
            assert self.channel is not None
            self.channel.end()
        else:
            self._end_linger()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.source.unlist(self)
        for timer in (self._timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._linger_timer = None
        self._wake()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.channel is not None:
            self.channel.end()
        self.source.forget(self)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain = self._drain
        self._drain = None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- the source's side -------------------------------------------------------------------

    def stop(self) -> None:
        """The daemon stops: a connection waiting for a request is closed now."""
        if self._mode == _HTTP and self.waiting and self._waiter is not None:
            self._wake()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def evict(self) -> None:
        """Closed to make room for a new connection: no longer counted against the cap."""
        source = self.source
        source.connections.discard(self)
        source.unlist(self)
        self._evicted = True
        self._wake()

    # -- the task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        """Answers requests until the connection ends. A bug met here ends this connection,
        never the daemon."""
        try:
            await self._serve_requests()
        except _Closing:
            pass
        except Exception:
            self.source.stats.errors["internal"] += 1
            log.exception("http connection failed")
        finally:
            self.source.connections.discard(self)
            self.source.unlist(self)
            if self._mode != _LINGER and self.transport is not None:
                self.transport.close()

    async def _serve_requests(self) -> None:
        source = self.source
        while True:
            try:
                if not await self._cycle():
                    return
            except _BadRequest as e:
                status = e.error.status
                if status == 431:
                    response = source.headers_too_large()
                elif status == 413:
                    response = source.too_large(None)
                else:
                    reason = e.error.reason  # bad_request; too_many_chunks
                    source.stats.errors[reason] += 1
                    response = error_response(
                        400, reason, f"malformed HTTP request: {e.error.message}"
                    )
                await self._send_quietly(response, close=True)
                self._linger()
                return
            except _TimedOut as e:
                await self._time_out(e.reason)
                return

    async def _time_out(self, reason: str) -> None:
        """408 when some of a request came; a connection without any is closed silently."""
        unfinished = not self.waiting or self.reader.pending
        if reason == "request_timeout" and not unfinished:
            return  # an idle keep-alive connection: its client expects that
        self.source.stats.errors[reason] += 1
        if unfinished:
            await self._send_quietly(self.source.timed_out(reason), close=True)

    async def _cycle(self) -> bool:
        """Reads one request and answers it; True when the connection stays open for another."""
        events = self.events
        head = events.popleft() if events else await self._next_event()
        if head is None:
            return False  # the client is done
        if not isinstance(head, RequestHead):
            assert isinstance(head, ProtocolError), head
            raise _BadRequest(head)
        self.waiting = False
        self.source.unlist(self)
        self._limit_at, self._limit = _NEVER, ""
        self.method = head.method
        response, complete = await self._answer(head)
        if response.stream is not None:
            await self._stream(head, response)
            return False
        if head.upgrade and complete:
            self.events.extend(self.reader.refuse_upgrade())  # not switching: HTTP goes on
        close = self.source._stopping or not complete or not head.keep_alive
        await self._write(
            self.source.response_bytes(
                response, self.method, close=close, client_close=not head.keep_alive
            )
        )
        if not complete:
            self._linger()
            return False
        if close:
            return False
        self.waiting = True
        if not self.events:
            if self.reader.pending:
                self.source._heads[self] = None
                self._limit_head(self.loop.time())
            else:
                self.source._idle[self] = None
        return True

    async def _answer(self, head: RequestHead) -> tuple[Response, bool]:
        """The response, and whether the request was read to its end."""
        source = self.source
        api = source.api
        raw_type = head.content_type
        content_type = None if raw_type is None else raw_type.decode("latin-1")
        method = head.method.decode("ascii", "replace")
        target = head.target.decode("latin-1")
        route = api.route(method, target, content_type)
        identity = None
        if not isinstance(route, Response):
            # two Authorization headers are ambiguous: b"", no usable credentials
            verdict = api.authenticate(route, head.authorization)
            if isinstance(verdict, Coroutine):  # a token JupyterHub must be asked about
                verdict = await verdict
            if isinstance(verdict, Response):
                route = verdict  # answered before the body is read
            else:
                identity = verdict
        coding = None if isinstance(route, Response) else content_coding(head.headers)
        if isinstance(coding, Response):
            route = coding
        if isinstance(route, Response):
            if head.expect_continue:
                return route, False  # the client sends no body unless told to continue
            return route, await self._read_body(DISCARD_MAX_BYTES) is not None
        limit = source.settings.http_max_body_bytes
        content_length = head.content_length
        if content_length is not None and content_length > limit:
            return source.too_large(content_length), False
        if head.expect_continue:
            await self._write(_CONTINUE)
        body = await self._read_body(limit)
        if body is None:
            return source.too_large(None), False
        if coding is not None:
            try:
                body = gunzip(body, limit)
            except BadBody as e:
                source.stats.errors[e.reason] += 1
                return e.response, True
        path, _, query = target.partition("?")
        origin = self.origin if identity is None else self._origin(identity)
        request = Request(
            method, path, route.media_type, body, origin, identity, query, head.headers
        )
        return await self._call(route, request), True

    def _origin(self, identity: Identity) -> bytes:
        """`__origin__` of a request with a verified token: its identity is the user (and a
        JupyterHub service's kind follows it)."""
        origin = self.origins.get(identity)
        if origin is None:
            if len(self.origins) >= 8:
                self.origins.clear()
            # The token's identity is the user (a Unix peer's own name gives way to it).
            origin = self.peer.as_user(identity.user, identity.kind or None).encode()
            self.origins[identity] = origin
        return origin

    async def _call(self, route: Route, request: Request) -> Response:
        try:
            return await route.handler(request, route.param)
        except Exception:
            self.source.stats.errors["internal"] += 1
            log.exception(
                "http handler failed",
                extra={"fields": {"method": request.method, "path": request.path}},
            )
            return error_response(500, "internal_error", "internal error; the daemon logged it")

    async def _read_body(self, limit: int) -> bytes | None:
        """The whole body, or None as soon as it passes `limit` bytes."""
        events = self.events
        if len(events) >= 2 and type(events[1]) is EndOfMessage:
            first = events[0]
            if type(first) is Body and len(first.data) <= limit:  # the whole body is here
                events.popleft()
                events.popleft()
                return first.data
        if self.min_body_rate:
            self._body_started = self.loop.time()
            # what came with the head counts: only the rest is waited for
            self._body_bytes = sum(len(e.data) for e in events if type(e) is Body)
            self._limit, self._limit_at = "body_too_slow", self._body_deadline()
        try:
            return await self._read_body_events(limit)
        finally:
            self._limit_at, self._limit = _NEVER, ""

    async def _read_body_events(self, limit: int) -> bytes | None:
        events = self.events
        chunks: list[bytes] = []
        size = 0
        while True:
            event = events.popleft() if events else await self._next_event()
            if isinstance(event, Body):
                size += len(event.data)
                if size > limit:
                    return None
                chunks.append(event.data)
            elif isinstance(event, EndOfMessage):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif isinstance(event, ProtocolError):
                if event.status == 413:
                    return None
                raise _BadRequest(event)
            else:
                raise _Closing

    async def _next_event(self) -> Event | None:
        """The reader's next event; None once the client has closed its side (or is gone)."""
        events = self.events
        while not events:
            if self._lost or self._eof:
                return None
            if self._evicted:
                raise _TimedOut("evicted")
            if self._timed_out:
                raise _TimedOut(self._timed_out)
            if self.waiting and self.source._stopping:
                raise _Closing
            self._backlog = 0
            if self._read_paused:
                self._read_paused = False
                self._resume_reading()
            loop = self.loop
            self._deadline = loop.time() + self.idle_secs
            self._arm()
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return events.popleft()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm(self) -> None:
        """The timer, for the earliest deadline (moved earlier when a new one comes first)."""
        due = min(self._deadline, self._limit_at)
        timer = self._timer
        if timer is not None:
            if self._timer_at <= due:
                return  # it fires first, and looks again
            timer.cancel()
        self._timer_at = due
        self._timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._mode != _HTTP:
            return  # busy answering (or about to): armed again when the task next waits
        now = self.loop.time()
        if now >= self._limit_at:
            self._timed_out = self._limit
        elif now >= self._deadline:
            self._timed_out = "request_timeout"
        else:
            self._arm()
            return
        self._wake()

    def _limit_head(self, now: float) -> None:
        self._limit, self._limit_at = "head_timeout", now + self.head_secs

    def _head_progress(self, whole: bool) -> None:
        """Bytes came while a head was waited for: a whole head takes the connection off the
        lists of those to close for room; the first of a keep-alive one's starts its clock."""
        source = self.source
        if whole:
            source.unlist(self)
        elif self in source._idle:
            del source._idle[self]
            source._heads[self] = None
            self._limit_head(self.loop.time())
            if self._waiter is not None:
                self._arm()

    def _body_deadline(self) -> float:
        """The grace, then a second for every `min_body_rate` bytes received."""
        return self._body_started + self.head_secs + self._body_bytes / self.min_body_rate

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._lost:
            if not self._slice_paused:
                self.transport.pause_reading()
            self._read_paused = True

    def _resume_reading(self) -> None:
        """Reading goes on unless paused for the other reason too."""
        transport = self.transport
        paused = self._read_paused or self._slice_paused
        if transport is not None and not self._lost and not paused and not transport.is_closing():
            transport.resume_reading()

    def _yield_reading(self) -> None:
        """A slice read: no more until the loop has gone round once."""
        self._slice = 0
        if self._slice_paused or self.transport is None or self._lost:
            return
        if not self._read_paused:
            self.transport.pause_reading()
        self._slice_paused = True
        self.loop.call_soon(self._next_slice)

    def _next_slice(self) -> None:
        self._slice_paused = False
        self._resume_reading()

    # -- writing -----------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        """Writes, then waits while the transport's buffer is over its high mark."""
        transport = self.transport
        if self._lost or transport is None or transport.is_closing():
            raise _Closing
        transport.write(data)
        if self._drain is not None:
            await self._wait_drained()

    async def _wait_drained(self) -> None:
        drain = self._drain
        if drain is not None:
            await drain
        if self._lost:
            raise _Closing

    async def _send(self, response: Response, *, close: bool) -> None:
        await self._write(self.source.response_bytes(response, self.method, close=close))

    async def _send_quietly(self, response: Response, *, close: bool) -> None:
        with contextlib.suppress(_Closing):
            await self._send(response, close=close)

    def _linger(self) -> None:
        """After an answer sent before the request was read: stop sending, then read and
        discard for a moment, so the client reads the answer rather than a reset."""
        self._mode = _LINGER
        transport = self.transport
        if transport is None or self._lost:
            return
        if self._read_paused:
            self._read_paused = False
            self._resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        if self._eof:
            self._end_linger()
        else:
            self._linger_timer = self.loop.call_later(LINGER_SECS, self._end_linger)

    def _end_linger(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.transport is not None:
            self.transport.close()

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(self, head: RequestHead, response: Response) -> None:
        """A subscription's records, until the client leaves or the daemon stops."""
        assert response.stream is not None
        source = self.source
        subscription = response.stream.subscription
        key = response.stream.websocket_key
        keepalive = source.settings.subscribe_keepalive_secs
        source.responses[101 if key is not None else response.status] += 1
        # From here the bytes the client sends are the stream's; pipelined requests are dropped.
        self._mode = _STREAM
        self.events.clear()
        channel = self.channel = Channel(self._write_now, self._wait_drained_or_closed)
        received = b""
        if head.upgrade:
            if key is not None:
                received = self.reader.accept_upgrade()
            else:
                self.reader.refuse_upgrade()
        if self._eof or self._lost:
            channel.end()
        if self._read_paused:
            self._read_paused = False
            self._resume_reading()  # to notice the client leaving
        try:
            if key is not None:
                await serve_websocket(channel, subscription, key, received, keepalive)
            else:
                parts = _head(response.status, response.headers)
                parts += (_SERVER_LINE, _CLOSE_LINE, _CHUNKED_LINE, b"\r\n")
                await serve_sse(channel, subscription, b"".join(parts), keepalive)
        except ChannelClosed:
            pass  # the subscriber went away mid-write
        finally:
            subscription.close()

    def _write_now(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._lost and not transport.is_closing():
            transport.write(data)

    async def _wait_drained_or_closed(self) -> None:
        try:
            await self._wait_drained()
        except _Closing:
            raise ChannelClosed from None
