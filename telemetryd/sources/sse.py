"""Server-Sent Events for GET /api/events/subscribe: a subscription's records as a text stream.

After the response head, each record is `event: record` with its §4 JSON as one `data:` line
(JSON from msgspec never holds a raw newline), a gap is `event: dropped` with how many records
this subscriber missed, and a quiet stream gets a `: keepalive` comment. The stream ends when
the client goes away or the daemon stops (the chunked body is then finished properly).
"""

from __future__ import annotations

from typing import Final

import anyio
import h11
from anyio.abc import SocketStream

from telemetryd.subscribers import DROP_SUBSCRIBER_FULL, Subscription

CONTENT_TYPE: Final = "text/event-stream"
KEEPALIVE: Final = b": keepalive\n\n"
_RECORD: Final = b"event: record\ndata: "
_END: Final = b"\n\n"


def encode_batch(records: list[bytes], dropped: int) -> bytes:
    """The SSE text of one batch: a `dropped` event first when records were missed."""
    parts: list[bytes] = []
    if dropped:
        parts.append(
            b'event: dropped\ndata: {"dropped":%d,"reason":"%s"}\n\n'
            % (dropped, DROP_SUBSCRIBER_FULL.encode())
        )
    for payload in records:
        parts += (_RECORD, payload, _END)
    return b"".join(parts) or KEEPALIVE


async def serve_sse(
    stream: SocketStream,
    connection: h11.Connection,
    subscription: Subscription,
    head: h11.Response,
    keepalive_secs: float,
) -> None:
    """Streams until the client disconnects or the subscription closes. Raises
    anyio.BrokenResourceError (or ClosedResourceError) when the client is gone mid-write."""
    await stream.send(connection.send(head) or b"")
    async with anyio.create_task_group() as group:
        group.start_soon(_until_client_leaves, stream, group.cancel_scope)
        while True:
            batch = await subscription.next_batch(keepalive_secs)
            if batch is None:
                break
            text = encode_batch([r.payload for r in batch.records], batch.dropped)
            await stream.send(connection.send(h11.Data(data=text)) or b"")
            subscription.delivered(len(batch.records))
        await stream.send(connection.send(h11.EndOfMessage()) or b"")
        group.cancel_scope.cancel()


async def _until_client_leaves(stream: SocketStream, scope: anyio.CancelScope) -> None:
    """A subscriber sends nothing after its request: the end of its stream means it left."""
    try:
        while await stream.receive(4096):
            pass  # a pipelined request or stray bytes: not answered on a streaming connection
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    scope.cancel()
