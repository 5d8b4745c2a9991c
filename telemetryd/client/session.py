"""One connection of the acknowledged protocol, sans-IO (docs/socket-protocol.md,
telemetryd.core.protocol).

The writer feeds it the bytes the daemon sends (`receive`) and asks it what to write
(`next_batch`); it maps the connection's line numbers to the outbox's sequence numbers, settles
the outbox on each `{"ack": N}`, and reports each rejection. It does no I/O and holds no lock of
its own, so both the threaded and the asyncio client drive it, and tests drive it byte by byte.

Line numbers count from 1 after the hello, on each connection. A new connection starts at the
outbox's oldest event, so everything not acknowledged on the last one is written again: the
daemon may receive the last unacknowledged batch twice, and nothing fewer than once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import msgspec

from telemetryd.client.encoding import render, schema_of
from telemetryd.client.outbox import Outbox
from telemetryd.core import protocol

#: The longest reply line the daemon sends is a rejection with its message; anything longer
#: than this without a newline is not the daemon.
MAX_REPLY_BYTES = 1 << 20


class ProtocolError(Exception):
    """The peer does not speak telemetryd's protocol (or said it refuses the connection)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    seq: int  # the event's sequence number in the client (the first emitted is 1)
    reason: str
    message: str
    schema_id: str | None  # None when the event had already been dropped from the buffer


class Session:
    def __init__(self, outbox: Outbox, *, batch_events: int = 1024, written_upto: int = 0) -> None:
        self.outbox = outbox
        self.batch_events = batch_events
        self.greeted = False
        self.server: str | None = None
        self.max_line_bytes: int | None = None
        #: (first line, first sequence number) of each run of consecutive events written; a
        #: new run starts only when the outbox dropped unwritten events in between.
        self._runs: deque[tuple[int, int]] = deque()
        self._lines = 0  # event lines written on this connection
        outbox.rewind()
        self._next = outbox.head  # sequence number of the next event to write
        self._acked_line = 0
        self._buffer = b""
        self.resent = 0
        #: Events numbered below this were written on an earlier connection.
        self._resend_until = written_upto

    def hello(self) -> bytes:
        return protocol.client_hello()

    # -- what to write -----------------------------------------------------------------------

    def next_batch(self) -> bytes:
        """The next lines to write (b"" when there are none, or before the daemon's hello)."""
        if not self.greeted:
            return b""
        first, entries = self.outbox.take(self.batch_events)
        if not entries:
            return b""
        if first != self._next or not self._runs:
            self._runs.append((self._lines + 1, first))
        count = len(entries)
        self._lines += count
        self._next = first + count
        if first < self._resend_until:
            self.resent += min(count, self._resend_until - first)
        return render(entries)

    @property
    def next_seq(self) -> int:
        """The sequence number of the next event to write."""
        return self._next

    @property
    def unacknowledged(self) -> int:
        return self._lines - self._acked_line

    # -- what was read -----------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Rejection]:
        """Processes the daemon's replies; raises ProtocolError for a peer to drop."""
        buffer = self._buffer + data if self._buffer else data
        *lines, self._buffer = buffer.split(b"\n")
        if len(self._buffer) > MAX_REPLY_BYTES:
            raise ProtocolError("a reply line from the daemon is over 1 MiB")
        rejections: list[Rejection] = []
        for line in lines:
            if line:
                self._reply(line, rejections)
        return rejections

    def _reply(self, line: bytes, rejections: list[Rejection]) -> None:
        try:
            reply = protocol.decode_reply(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
            raise ProtocolError(f"the daemon sent a line that is not JSON: {e}") from None
        if not self.greeted:
            self._greeting(reply)
        elif "ack" in reply:
            self._ack(_int(reply, "ack"))
        elif "rejected" in reply:
            seq = self._seq(_int(reply, "rejected"))
            entry = self.outbox.get(seq)
            reason = str(reply.get("reason", "unknown"))
            self.outbox.reject(reason)
            rejections.append(
                Rejection(
                    seq,
                    reason,
                    str(reply.get("message", "")),
                    None if entry is None else schema_of(entry),
                )
            )
        elif "error" in reply:
            raise ProtocolError(f"{reply['error']}: {reply.get('message', '')}")

    def _greeting(self, reply: dict[str, Any]) -> None:
        if "error" in reply:
            raise ProtocolError(f"{reply['error']}: {reply.get('message', '')}")
        if reply.get(protocol.HELLO_KEY) != protocol.HELLO_VALUE:
            raise ProtocolError(f"the peer is not telemetryd: it answered {reply!r:.200}")
        if reply.get("protocol") != protocol.PROTOCOL_VERSION:
            raise ProtocolError(f"unsupported protocol version {reply.get('protocol')!r}")
        self.greeted = True
        server = reply.get("server")
        self.server = server if isinstance(server, str) else None
        limit = reply.get("max_line_bytes")
        self.max_line_bytes = limit if isinstance(limit, int) else None

    def _seq(self, line: int) -> int:
        """The sequence number of the event written as this connection's line `line`."""
        if not 1 <= line <= self._lines:
            raise ProtocolError(f"the daemon answered line {line} of {self._lines} written")
        runs = self._runs
        for first_line, first_seq in reversed(runs):
            if first_line <= line:
                return first_seq + (line - first_line)
        raise ProtocolError(f"the daemon answered line {line}, which was never written")

    def _ack(self, line: int) -> None:
        if not 0 <= line <= self._lines:
            raise ProtocolError(f"the daemon acknowledged line {line} of {self._lines} written")
        if line <= self._acked_line:
            return
        self._acked_line = line
        self.outbox.settle(self._seq(line) + 1)
        runs = self._runs
        while len(runs) > 1 and runs[1][0] <= line:
            runs.popleft()


def _int(reply: dict[str, Any], key: str) -> int:
    value = reply.get(key)
    if type(value) is not int:
        raise ProtocolError(f"the daemon sent {key}={value!r}, not a line number")
    return value
