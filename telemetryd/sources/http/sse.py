"""Server-Sent Events for GET /api/events/subscribe: a subscription's records as a text stream.

After the response head, each record is `event: record` with its §4 JSON as one `data:` line
(JSON from msgspec never holds a raw newline), a gap is `event: dropped` with how many records
this subscriber missed, and a quiet stream gets a `: keepalive` comment. The stream ends when
the client goes away or the daemon stops (the chunked body is then finished properly).
"""

from __future__ import annotations

from typing import Final

import anyio
import msgspec

from telemetryd.core.reasons import DropReason
from telemetryd.delivery.subscribers import Subscription
from telemetryd.sources.http.bodies import Dropped
from telemetryd.sources.http.channel import Channel

CONTENT_TYPE: Final = "text/event-stream"
KEEPALIVE: Final = b": keepalive\n\n"
_RECORD: Final = b"event: record\ndata: "
_DROPPED: Final = b"event: dropped\ndata: "
_END: Final = b"\n\n"
_encode = msgspec.json.Encoder().encode
#: The last chunk of a chunked body (no trailers).
LAST_CHUNK: Final = b"0\r\n\r\n"


def encode_batch(records: list[bytes], dropped: int) -> bytes:
    """The SSE text of one batch: a `dropped` event first when records were missed."""
    parts: list[bytes] = []
    if dropped:
        parts += (_DROPPED, _encode(Dropped(dropped, DropReason.SUBSCRIBER_QUEUE_FULL)), _END)
    for payload in records:
        parts += (_RECORD, payload, _END)
    return b"".join(parts) or KEEPALIVE


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (HTTP/1.1 Transfer-Encoding: chunked)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve_sse(
    channel: Channel, subscription: Subscription, head: bytes, keepalive_secs: float
) -> None:
    """Sends the response head, then a chunk per batch until the subscription closes (the
    daemon stops: the body is then finished properly) or the client leaves (a subscriber sends
    nothing after its request: the end of its side means it went away). Raises
    telemetryd.sources.http.channel.ChannelClosed when the client is gone mid-write."""
    with anyio.CancelScope() as scope:
        channel.on_end(scope.cancel)
        await channel.send(head)
        while True:
            batch = await subscription.next_batch(keepalive_secs)
            if batch is None:
                break
            text = encode_batch([r.payload for r in batch.records], batch.dropped)
            await channel.send(chunk(text))
            subscription.delivered(len(batch.records))
        await channel.send(LAST_CHUNK)
