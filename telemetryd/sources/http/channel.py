"""What a streaming response (telemetryd.sources.http: sse, websocket) has of its
HTTP connection once the response head is decided: bytes out, with the transport's flow
control, and notice of the bytes the client sends and of its leaving."""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class ChannelClosed(Exception):
    """The client went away: nothing more can be sent."""


def _ignore(data: bytes) -> None:
    pass


class Channel:
    def __init__(
        self, write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]]
    ) -> None:
        self._write = write
        self._drain = drain
        self._on_data: Callable[[bytes], None] = _ignore
        self._on_end: Callable[[], None] | None = None
        self.ended = False  # the client closed its side, or the connection is gone

    def write(self, data: bytes) -> None:
        """Queues bytes on the connection without waiting (dropped once the client is gone)."""
        if not self.ended:
            self._write(data)

    async def send(self, data: bytes) -> None:
        """Writes, then waits until the transport's buffer is below its high mark again.
        Raises ChannelClosed when the client is gone."""
        if self.ended:
            raise ChannelClosed
        self._write(data)
        await self._drain()

    def on_data(self, handler: Callable[[bytes], None]) -> None:
        """`handler` gets the bytes the client sends from now on."""
        self._on_data = handler

    def on_end(self, handler: Callable[[], None]) -> None:
        """`handler` is called once when the client leaves (at once if it already has)."""
        self._on_end = handler
        if self.ended:
            handler()

    # -- the connection's side ---------------------------------------------------------------

    def received(self, data: bytes) -> None:
        if not self.ended:
            self._on_data(data)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._on_end is not None:
            self._on_end()
