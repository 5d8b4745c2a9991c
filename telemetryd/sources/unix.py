"""The Unix socket source: NDJSON over a stream socket, plain or acknowledged
(docs/socket-protocol.md).

Each connection reads large chunks, frames them (telemetryd.core.framing), runs the hot path once
per chunk and publishes the chunk's records in one call. While the bus is full, the connection
does not read: the kernel's socket buffer fills and the client's writes block. That is the
backpressure, and nothing is buffered without bound on the way.

What all connections hold between reading and publishing is bounded by the read budget
(telemetryd.sources.read_budget, `read_budget_bytes`): a connection takes its share once its
socket is readable, reads at most that much, and gives it back once the chunk's records are
handed on. A crowd of clients blocked on a slow sink holds the budget, not a chunk each.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from telemetryd import __version__
from telemetryd.config import ServerSettings
from telemetryd.core import protocol
from telemetryd.core.framing import Frame, LineFramer
from telemetryd.core.origin import of_unix_peer
from telemetryd.core.rejections import Rejection
from telemetryd.delivery.intake import Intake
from telemetryd.settings_types import GroupError, give_to_group
from telemetryd.sources.accept import accept_or_pause
from telemetryd.sources.read_budget import ReadBudget
from telemetryd.sources.socket_path import refuse_if_in_use

log = logging.getLogger("telemetryd.unix")

#: Outgoing control lines waiting for a slow reader, per connection.
REPLY_QUEUE_LINES = 1024
#: The smallest read worth making once the read budget runs low (or what is left of a chunk).
MIN_READ_BYTES = 16 * 1024
#: How long replies may take to reach a client after it stopped sending, or after stop().
EOF_REPLY_GRACE_SECS = 30.0
STOP_REPLY_GRACE_SECS = 1.0


@dataclass(eq=False)
class _Connection:
    origin: bytes  # `__origin__`, encoded once per connection
    framer: LineFramer
    acked: bool = False
    lines: int = 0  # event lines seen (after the hello, in acknowledged mode)
    share: int = 0  # bytes of the read budget held for the chunk being processed
    read_scope: anyio.CancelScope | None = field(default=None, repr=False)
    flush_scope: anyio.CancelScope | None = field(default=None, repr=False)


class UnixSource:
    def __init__(
        self,
        settings: ServerSettings,
        intake: Intake,
        *,
        budget: ReadBudget | None = None,
    ) -> None:
        if settings.unix_socket is None:
            raise ValueError("no unix_socket configured")
        self.settings = settings
        self.path = Path(settings.unix_socket)
        self.intake = intake
        self.stats = intake.stats
        self.connections: set[_Connection] = set()
        self.budget = budget or ReadBudget(settings.read_budget_bytes, MIN_READ_BYTES)
        self.replies_dropped = 0
        self._stopping = False
        self._serve_scope: anyio.CancelScope | None = None

    @property
    def config_key(self) -> str:
        return "server.unix_socket"

    def snapshot(self) -> dict[str, Any]:
        budget = self.budget  # the daemon's is shared with the HTTP source's requests
        return {
            "connections": len(self.connections),
            "replies_dropped": self.replies_dropped,
            "read_budget_held_bytes": budget.total - budget.available,
            "read_budget_waiting": budget.waiting,
        }

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listens until stop(); returns when every connection has finished."""
        refuse_if_in_use(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        listener = await anyio.create_unix_listener(self.path, mode=self.settings.unix_socket_mode)
        try:
            give_to_group(self.path, self.settings.unix_socket_group, "server.unix_socket_group")
        except GroupError:
            await listener.aclose()
            self.path.unlink(missing_ok=True)  # nobody may send to it: it was never served
            raise
        limiter = anyio.CapacityLimiter(self.settings.max_connections)
        log.info(
            "listening",
            extra={
                "fields": {
                    "unix_socket": str(self.path),
                    "mode": oct(self.settings.unix_socket_mode),
                }
            },
        )
        try:
            async with anyio.create_task_group() as connections:
                with anyio.CancelScope() as self._serve_scope:
                    task_status.started()
                    async with listener:
                        while not self._stopping:
                            stream = await accept_or_pause(listener, self.stats)
                            if stream is not None:
                                connections.start_soon(self._handle, stream, limiter)
        finally:
            with contextlib.suppress(OSError):
                if self.path.is_socket():
                    self.path.unlink()

    def stop(self) -> None:
        """Stop accepting and reading; lines already read are still processed and answered."""
        self._stopping = True
        if self._serve_scope is not None:
            self._serve_scope.cancel()
        for connection in self.connections:
            if connection.read_scope is not None:
                connection.read_scope.cancel()
            if connection.flush_scope is not None:
                deadline = anyio.current_time() + STOP_REPLY_GRACE_SECS
                connection.flush_scope.deadline = min(connection.flush_scope.deadline, deadline)

    async def _handle(self, stream: SocketStream, limiter: anyio.CapacityLimiter) -> None:
        """One client. A bug met here ends this connection, never the daemon."""
        try:
            await self._serve_connection(stream, limiter)
        except Exception:
            self.stats.errors["internal"] += 1
            log.exception("connection failed")

    async def _serve_connection(self, stream: SocketStream, limiter: anyio.CapacityLimiter) -> None:
        async with stream:
            origin = of_unix_peer(stream.extra(anyio.abc.SocketAttribute.raw_socket), "unix")
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                self.stats.errors["too_many_connections"] += 1
                await _send_quietly(
                    stream,
                    protocol.encode_line(
                        protocol.Error(
                            "too_many_connections",
                            f"at most {self.settings.max_connections} connections are served",
                        )
                    ),
                )
                return
            connection = _Connection(origin.encode(), LineFramer(self.settings.max_line_bytes))
            self.connections.add(connection)
            try:
                send, receive = anyio.create_memory_object_stream[bytes](REPLY_QUEUE_LINES)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_write_replies, stream, receive)
                    with send:
                        await self._read(stream, connection, send)
                    # Replies left for a client that does not read them must not hold the
                    # connection (or a shutdown) open: a short grace when stopping, else longer.
                    grace = STOP_REPLY_GRACE_SECS if self._stopping else EOF_REPLY_GRACE_SECS
                    tg.cancel_scope.deadline = anyio.current_time() + grace
                    connection.flush_scope = tg.cancel_scope
            finally:
                self.connections.discard(connection)
                limiter.release()

    async def _read(
        self, stream: SocketStream, connection: _Connection, replies: MemoryObjectSendStream[bytes]
    ) -> None:
        chunk_bytes = self.settings.read_chunk_bytes
        framer = connection.framer
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        while not self._stopping:
            try:
                chunk = await self._receive(sock, connection, chunk_bytes)
                if chunk is None:
                    return  # stop(): an unfinished line is the client's to resend, not a bad event
                if not chunk:
                    last = framer.close()  # the client is done: its unfinished line is its last
                    if last is not None:
                        await self._process(connection, [last], replies)
                    return
                frames = framer.feed(chunk)
                del chunk  # framed: a connection blocked on the bus holds its records only
                if frames:
                    await self._process(connection, frames, replies)
            finally:
                self._give_back(connection)

    async def _receive(
        self, sock: socket.socket, connection: _Connection, max_bytes: int
    ) -> bytes | None:
        """A chunk of at most the share of the budget it holds (`connection.share`); b"" at the
        end of the stream; None when stop() cancelled the read. A connection takes its share
        only once its socket is readable, so idle clients hold none of the budget."""
        budget = self.budget
        with anyio.CancelScope() as scope:
            connection.read_scope = scope
            try:
                # A turn of the loop before each read, as a stream's receive gives: a client
                # whose data is always there must not keep the sink workers from running (the
                # queue would then sit at its limit, adding its length to every latency).
                await anyio.lowlevel.checkpoint()
                while True:
                    share = budget.take_nowait(max_bytes)
                    if not share:
                        await anyio.wait_readable(sock)
                        share = await budget.take(max_bytes)
                    try:
                        chunk = sock.recv(share)
                    except BlockingIOError:
                        budget.give_back(share)
                        await anyio.wait_readable(sock)
                        continue
                    except OSError:
                        budget.give_back(share)
                        return b""  # reset by the peer: as the end of its stream
                    budget.give_back(share - len(chunk))
                    connection.share = len(chunk)
                    return chunk
            finally:
                connection.read_scope = None
        return None

    def _give_back(self, connection: _Connection) -> None:
        share, connection.share = connection.share, 0
        self.budget.give_back(share)

    async def _process(
        self, connection: _Connection, frames: list[Frame], replies: MemoryObjectSendStream[bytes]
    ) -> None:
        """Ingests and publishes `frames`, emptying the list once they are turned into records."""
        if (
            connection.lines == 0
            and not connection.acked
            and type(frames[0]) is bytes
            and protocol.is_hello(frames[0])
        ):
            connection.acked = True
            del frames[0]
            await replies.send(
                protocol.encode_line(
                    protocol.Hello(
                        protocol.HELLO_VALUE,
                        protocol.PROTOCOL_VERSION,
                        server=f"telemetryd/{__version__}",
                        max_line_bytes=self.settings.max_line_bytes,
                    )
                )
            )
            if not frames:
                return
        intake = self.intake
        arrival = intake.arrive(connection.origin, len(frames))
        first = connection.lines + 1
        connection.lines += len(frames)
        records, rejected = intake.validate(frames, arrival, first)
        frames.clear()  # the lines are records now: waiting for room must not hold both
        if records:
            await intake.publish(records)  # what does not get to the queues, it counts dropped
        if rejected:
            await intake.dead_letter(rejected, arrival)
        # Handed on: a client slow to read its replies must not keep the others from reading.
        self._give_back(connection)
        if rejected:
            await self._reply_rejections(connection, rejected, replies)
        if connection.acked:
            await replies.send(protocol.encode_line(protocol.Ack(connection.lines)))

    async def _reply_rejections(
        self,
        connection: _Connection,
        rejected: list[Rejection],
        replies: MemoryObjectSendStream[bytes],
    ) -> None:
        lines = b"".join(
            protocol.encode_line(protocol.Rejected(r.line, r.reason, r.message)) for r in rejected
        )
        if connection.acked:
            await replies.send(lines)  # an acknowledged client reads its replies: wait for it
            return
        try:
            replies.send_nowait(lines)
        except anyio.WouldBlock:
            self.replies_dropped += len(rejected)  # a plain client that never reads


async def _write_replies(
    stream: SocketStream, replies: anyio.abc.ObjectReceiveStream[bytes]
) -> None:
    """Writes control lines; after the peer goes away, keeps draining so senders never block."""
    broken = False
    async with replies:
        async for line in replies:
            if broken:
                continue
            try:
                await stream.send(line)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                broken = True


async def _send_quietly(stream: SocketStream, data: bytes) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(data)
