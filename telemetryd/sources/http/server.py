"""The HTTP source: HTTP/1.1 on the daemon's event loop (docs/http-api.md).

The listeners are the running loop's servers (uvloop's in the daemon) on sockets bound here;
each connection is a telemetryd.sources.http.connection.Connection, which reads the requests,
enforces the limits and writes the answers. The transport knows the application only as an
App: it never imports the API's endpoints (telemetryd.sources.http.app), as a server of ASGI
applications does not; they share the message types of telemetryd.sources.http.messages.

The source keeps the connections within `http_max_connections`: past it, the connection waited
for longest without a request in it is closed to make room: an idle keep-alive one first, else
the oldest unfinished head (408, `evicted`), so a crowd of slow clients cannot hold every slot;
only when every connection is busy with a request is the newcomer answered 503 and closed.
On stop() it stops accepting, closes the connections waiting for a request and lets those in
flight finish, for at most STOP_GRACE_SECS.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

from telemetryd.auth import Identity
from telemetryd.config import ServerSettings, parse_host_port
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.subscribers import SubscriberHub
from telemetryd.settings_types import give_to_group
from telemetryd.sources.http.connection import Connection
from telemetryd.sources.http.messages import Response, Route
from telemetryd.sources.socket_path import refuse_if_in_use

log = logging.getLogger("telemetryd.http")

#: After stop(), how long a request already being read or answered may still take.
STOP_GRACE_SECS = 10.0
#: Pending connections the kernel may queue on a listening socket (it caps this).
BACKLOG = 65536


class App(Protocol):
    """What the transport uses of the application it serves (telemetryd.sources.http.app)."""

    #: Set when the daemon stops: the application answers readiness and new events 503.
    stopping: bool

    @property
    def settings(self) -> ServerSettings: ...

    @property
    def stats(self) -> ComponentStats: ...

    @property
    def hub(self) -> SubscriberHub | None:
        """The subscriptions, closed at stop() (their streams are the transport's)."""

    def route(self, method: str, target: str, content_type: str | None) -> Route | Response:
        """The endpoint for a request head, or the answer (404, 405, 415) before its body."""

    def authenticate(
        self, route: Route, header: bytes | None
    ) -> Identity | Response | Coroutine[Any, Any, Identity | Response] | None:
        """The request's identity (None: anonymous), the answer that refuses it, or a
        coroutine to await for either."""

    async def aclose(self) -> None:
        """Called once the listeners are closed and every connection has finished."""


AppT_co = TypeVar("AppT_co", bound=App, covariant=True)


def _address(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpSource(Generic[AppT_co]):
    def __init__(self, api: AppT_co) -> None:
        """Serves `api` (its settings, stats and subscriber hub) on the configured listeners."""
        self.api = api
        self.settings = settings = api.settings
        self.hub = api.hub
        self.host, self.port = parse_host_port(settings.http) if settings.http else ("", 0)
        self.unix_path = settings.http_unix_socket
        self.stats = api.stats
        #: The connections served (those refused for being one too many are not).
        self.connections: set[Connection] = set()
        self.responses: Counter[int] = Counter()
        self.address = ""  # "host:port" once listening
        self.loop: asyncio.AbstractEventLoop | None = None  # once serving
        #: Set by stop(): requests in flight are answered `Connection: close`, none is waited for.
        self.stopping = False
        self.unclosed: set[Connection] = set()  # every connection not closed yet
        # Served connections without a request in them, oldest first (dicts keep order): the
        # ones closed to make room for a newcomer, idle keep-alive ones before unfinished heads.
        self.idle: dict[Connection, None] = {}
        self.heads: dict[Connection, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._finished: asyncio.Future[None] | None = None
        self._grace: asyncio.TimerHandle | None = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listens until stop(); returns when every connection has finished."""
        loop = self.loop = asyncio.get_running_loop()
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
            if self.stopping:  # stop() came first
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
        if self.stopping:
            return
        self.stopping = True
        self.api.stopping = True
        if self.hub is not None:
            self.hub.close()  # subscriptions end now, not at the grace deadline
        for server in self._servers:
            server.close()
        if self.loop is not None:
            self._grace = self.loop.call_later(STOP_GRACE_SECS, self._abort_all)
        for connection in list(self.unclosed):
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

    def _connection(self) -> Connection:
        return Connection(self)

    # -- connections and tasks ---------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self.loop is not None
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.errors["internal"] += 1
            log.error("http task failed", exc_info=task.exception())
        self._check_finished()

    def forget(self, connection: Connection) -> None:
        self.unclosed.discard(connection)
        self._check_finished()

    def room_for_one(self) -> bool:
        """At the connection cap: closes the connection waited for longest without a request
        in it; False when every connection is busy with a request."""
        waiting = self.idle or self.heads
        if not waiting:
            return False
        next(iter(waiting)).evict()
        return True

    def unlist(self, connection: Connection) -> None:
        self.idle.pop(connection, None)
        self.heads.pop(connection, None)

    def _check_finished(self) -> None:
        finished = self._finished
        if (
            self.stopping
            and not self.unclosed
            and not self._tasks
            and finished is not None
            and not finished.done()
        ):
            finished.set_result(None)

    def _abort_all(self) -> None:
        """The grace period is over: whatever is still open is cut off."""
        for connection in list(self.unclosed):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()

    async def _close_all(self) -> None:
        for server in self._servers:
            server.close()
        if self._grace is not None:
            self._grace.cancel()
        if self.unclosed or self._tasks:
            self._abort_all()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=STOP_GRACE_SECS)


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
