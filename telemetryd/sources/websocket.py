"""WebSocket for GET /api/events/subscribe (RFC 6455, framed by wsproto).

The HTTP/1.1 handshake is checked by telemetryd.http_api (`websocket_key`) and answered 101
here through h11, which then hands over the bytes after the request; wsproto frames from there.
Each record is one text message with its §4 JSON, as Jupyter Server's own subscribe socket
sends events. Client messages other than ping and close are ignored. A quiet connection gets a
ping; the daemon stopping sends close 1001 (going away).
"""

from __future__ import annotations

from typing import Final

import anyio
import h11
from anyio.abc import SocketStream
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from telemetryd.subscribers import Subscription

GOING_AWAY: Final = 1001
#: After sending close, how long the client has to answer it before the socket is closed.
CLOSE_WAIT_SECS: Final = 2.0
RECEIVE_BYTES: Final = 16 * 1024


def accept_headers(key: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key.encode("ascii"))),
    ]


class _Socket:
    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.SERVER)
        self._lock = anyio.Lock()  # the reader answers pings while the writer sends records
        self.closed = anyio.Event()

    async def send(self, *events: Event) -> None:
        if self.ws.state is not ConnectionState.OPEN and not isinstance(events[0], CloseConnection):
            return
        data = b"".join(self.ws.send(event) for event in events)
        async with self._lock:
            await self.stream.send(data)

    async def read(self, first: bytes, scope: anyio.CancelScope) -> None:
        """Answers pings and the close handshake; the end of the stream ends the subscription."""
        data = first
        try:
            while True:
                if data:
                    self.ws.receive_data(data)
                    for event in self.ws.events():
                        await self._on(event)
                if self.closed.is_set():
                    break
                data = await self.stream.receive(RECEIVE_BYTES)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self.closed.set()
        scope.cancel()

    async def _on(self, event: Event) -> None:
        if isinstance(event, Ping):
            await self.send(event.response())
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self.send(event.response())
            self.closed.set()
        elif isinstance(event, Message):
            pass  # a subscriber has nothing to say; its filter is in the URL


async def serve_websocket(
    stream: SocketStream,
    connection: h11.Connection,
    subscription: Subscription,
    key: str,
    keepalive_secs: float,
) -> None:
    """Completes the handshake, then streams records until either side closes."""
    await stream.send(
        connection.send(h11.InformationalResponse(status_code=101, headers=accept_headers(key)))
        or b""
    )
    trailing, _ = connection.trailing_data
    socket = _Socket(stream)
    async with anyio.create_task_group() as group:
        group.start_soon(socket.read, trailing, group.cancel_scope)
        while True:
            batch = await subscription.next_batch(keepalive_secs)
            if batch is None:
                break
            if batch.records:
                await socket.send(
                    *(TextMessage(data=r.payload.decode("utf-8")) for r in batch.records)
                )
                subscription.delivered(len(batch.records))
            elif not batch.dropped:
                await socket.send(Ping(payload=b"keepalive"))
        # The daemon stops: say so, and give the client a moment to answer the close.
        await socket.send(CloseConnection(code=GOING_AWAY, reason="the daemon is stopping"))
        with anyio.move_on_after(CLOSE_WAIT_SECS):
            await socket.closed.wait()
        group.cancel_scope.cancel()
