"""WebSocket for GET /api/events/subscribe (RFC 6455, framed by wsproto).

The HTTP/1.1 handshake is checked by telemetryd.sources.http.app (`websocket_key`) and answered 101
here; the bytes the client sent after its request, and all it sends from then on, go to
wsproto. Each record is one text message with its §4 JSON, as Jupyter Server's own subscribe
socket sends events. Client messages other than ping and close are ignored: pings are answered
as they arrive, a close is answered and ends the subscription. A quiet connection gets a ping;
the daemon stopping sends close 1001 (going away).
"""

from __future__ import annotations

from typing import Final

import anyio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from telemetryd.delivery.subscribers import Subscription
from telemetryd.sources.http.channel import Channel

GOING_AWAY: Final = 1001
#: After sending close, how long the client has to answer it before the socket is closed.
CLOSE_WAIT_SECS: Final = 2.0


def accept_headers(key: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key.encode("ascii"))),
    ]


def switching_protocols(key: str) -> bytes:
    """The 101 response that completes the handshake."""
    lines = [b"HTTP/1.1 101 \r\n"]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in accept_headers(key)]
    return b"".join(lines) + b"\r\n"


class _Socket:
    def __init__(self, channel: Channel, scope: anyio.CancelScope) -> None:
        self.channel = channel
        self.scope = scope  # cancelled when the client closes or leaves
        self.ws = Connection(ConnectionType.SERVER)
        self.closed = anyio.Event()

    def _frames(self, events: tuple[Event, ...]) -> bytes | None:
        if self.ws.state is not ConnectionState.OPEN and not isinstance(events[0], CloseConnection):
            return None
        return b"".join(self.ws.send(event) for event in events)

    async def send(self, *events: Event) -> None:
        data = self._frames(events)
        if data is not None:
            await self.channel.send(data)

    def received(self, data: bytes) -> None:
        """Answers pings and the close handshake as the client's bytes arrive."""
        if self.closed.is_set():
            return  # after the close handshake: nothing more is read
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Ping):
                self._write(event.response())
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self._write(event.response())
                self.ended()
            elif isinstance(event, Message):
                pass  # a subscriber has nothing to say; its filter is in the URL

    def _write(self, event: Event) -> None:
        data = self._frames((event,))
        if data is not None:
            self.channel.write(data)

    def ended(self) -> None:
        """The client closed the WebSocket, or the connection: the subscription ends."""
        self.closed.set()
        self.scope.cancel()


async def serve_websocket(
    channel: Channel,
    subscription: Subscription,
    key: str,
    received: bytes,
    keepalive_secs: float,
) -> None:
    """Completes the handshake, then streams records until either side closes. `received`:
    what the client sent after its request, already read."""
    await channel.send(switching_protocols(key))
    with anyio.CancelScope() as scope:
        socket = _Socket(channel, scope)
        channel.on_data(socket.received)
        channel.on_end(socket.ended)
        if received:
            socket.received(received)
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
