"""JetStream publishing with a bounded window of outstanding acknowledgements.

Each message is a plain NATS publish whose reply subject is `<inbox>.<n>`, with one
subscription on `<inbox>.*` receiving JetStream's acknowledgements: the `PubAck` JSON, an
`{"error": ...}`, or a 503 status when no stream (or no stream leader) answers. This is what
nats-py's `publish_async` does, without a Future, a done-callback and a semaphore per message
(measured: 2.2x the rate of publish_async on the same records).

`n` counts up over the connection's life, so an acknowledgement of a batch that was given up
(timed out, then retried) is recognised as stale and ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from telemetryd.core.record import Record
from telemetryd_sinks.nats.subjects import MSG_ID_HEADER, msg_id

#: nats-py buffers what is published until its flusher task runs: yielding this often lets it
#: write while later messages are built, so the server works on a batch as it is made.
YIELD_EVERY = 50

_NO_RESPONDERS = "503"
_STATUS = "Status"


class PublishError(Exception):
    """JetStream refused a message, or no stream answered for its subject."""


class AckTimeout(TimeoutError):
    """No acknowledgement arrived for ack_timeout_secs while some were outstanding."""


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class AckWindow:
    """Publishes batches on one connection; at most `window` messages await their ack."""

    def __init__(self, nc: Client, window: int, ack_timeout_secs: float) -> None:
        self._nc = nc
        self._window = window
        # Waking the publisher at every ack would cost a task switch per message: it waits
        # for half the window to drain instead, which keeps the server busy meanwhile.
        self._resume_at = max(0, window // 2)
        self._ack_timeout = ack_timeout_secs
        self._inbox = nc.new_inbox()
        self._reply_prefix = self._inbox + "."
        self._prefix_len = len(self._reply_prefix)
        self._subscription: Subscription | None = None
        self._next = 0  # the reply number of the next message
        self._first = 0  # the reply number of the current batch's first message
        self._acked = bytearray()  # per message of the current batch: any answer came
        self._stored = bytearray()  # per message of the current batch: a PubAck came
        self._batch: Sequence[Record] = ()
        self._outstanding = 0
        self._acks_seen = 0
        self._wanted = -1  # wake the publisher when _outstanding <= this
        self._progress: anyio.Event | None = None
        self._error: Exception | None = None
        self.published = 0  # messages JetStream acknowledged, duplicates included
        self.duplicates = 0  # of which JetStream's duplicate window had already stored

    async def open(self) -> None:
        self._subscription = await self._nc.subscribe(self._reply_prefix + "*", cb=self._on_ack)

    def fail(self, error: Exception) -> None:
        """Ends the wait of the current batch with `error` (the connection was closed)."""
        if self._error is None:
            self._error = error
        self._wake()

    async def publish(self, batch: Sequence[Record], subject_of: Callable[[Record], str]) -> None:
        """Publishes every record and returns when JetStream acknowledged each of them."""
        self._first = self._next
        self._next += len(batch)
        self._batch = batch
        self._acked = bytearray(len(batch))
        self._stored = bytearray(len(batch))
        self._outstanding = 0
        self._error = None
        publish = self._nc.publish
        prefix = self._reply_prefix
        number = self._first
        for record in batch:
            if self._outstanding >= self._window:
                await self._wait_until(self._resume_at)
            elif number % YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
            if self._error is not None:
                raise self._error
            payload = record.payload
            self._outstanding += 1
            await publish(
                subject_of(record),
                payload,
                reply=prefix + str(number),
                headers={MSG_ID_HEADER: msg_id(payload)},
            )
            number += 1
        await self._wait_until(0)
        if self._error is not None:
            raise self._error

    def unstored(self, batch: Sequence[Record]) -> list[Record]:
        """The records of `batch` (the last one published) that JetStream has not acknowledged
        so far: after a failure, what has to be published again."""
        if batch is not self._batch:
            return list(batch)
        return [record for record, stored in zip(batch, self._stored, strict=True) if not stored]

    async def _wait_until(self, outstanding: int) -> None:
        """Waits until at most `outstanding` acks are missing; AckTimeout if none comes."""
        while self._outstanding > outstanding and self._error is None:
            seen = self._acks_seen
            self._wanted = outstanding
            self._progress = anyio.Event()
            with anyio.move_on_after(self._ack_timeout):
                await self._progress.wait()
            self._progress = None
            if self._acks_seen == seen and self._error is None:
                raise AckTimeout(
                    f"no JetStream acknowledgement for {self._ack_timeout} s "
                    f"({self._outstanding} of {len(self._acked)} outstanding)"
                )

    async def _on_ack(self, msg: Msg) -> None:
        try:
            index = int(msg.subject[self._prefix_len :]) - self._first
        except ValueError:
            return
        if not 0 <= index < len(self._acked) or self._acked[index]:
            return  # an ack of a batch given up on, or a repeat
        self._acked[index] = 1
        self._outstanding -= 1
        self._acks_seen += 1
        refusal = self._refusal(msg)
        if refusal is None:
            self._stored[index] = 1
        elif self._error is None:
            self._error = refusal
        if self._error is not None or self._outstanding <= self._wanted:
            self._wake()

    def _refusal(self, msg: Msg) -> Exception | None:
        """None for a PubAck; otherwise the error that fails the batch."""
        headers = msg.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS:
            return PublishError(
                "no JetStream stream answered (no stream for the subject, or its leader is "
                "being elected)"
            )
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError:
            return PublishError(f"unreadable JetStream acknowledgement: {msg.data[:200]!r}")
        if ack.error is not None:
            error = ack.error
            return PublishError(
                f"JetStream refused a message: {error.description} "
                f"(code {error.code}, err_code {error.err_code})"
            )
        self.published += 1
        if ack.duplicate:
            self.duplicates += 1
        return None

    def _wake(self) -> None:
        if self._progress is not None:
            self._progress.set()

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None and not self._nc.is_closed:
            await subscription.unsubscribe()
