"""The socket source in process: a client whose data is always there must not starve the sinks.

A connection reads, ingests and publishes in a loop. If a read returns at once whenever the
kernel has data, a fast client keeps the event loop to itself: the sink workers run only when
the queue is full and publishing blocks, so the queue sits at its limit (memory at the limit,
and its length added to every event's latency) though the sink is far faster than the client.
Each read must give the loop a turn first, as a stream's receive does.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from telemetryd.config import ServerSettings
from telemetryd.core.ingest import Ingestor
from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus, Route
from telemetryd.delivery.intake import Intake
from telemetryd.delivery.routing import RouteFilter
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.delivery.sink_worker import SinkWorker
from telemetryd.sources.unix import UnixSource
from telemetryd_sinks.blackhole import BlackholeSettings, BlackholeSink
from tests.support.socket_client import event_line

EVENTS = 60_000
LIMIT = 50_000  # far above a read's worth (some 1,700 events): only pace keeps it short


class DepthRecordingQueue(SinkQueue):
    """A memory queue that remembers the most it held after a put."""

    deepest = 0

    async def put_many(
        self, records: Sequence[Record], *, lost_reason: str = DropReason.SHUTDOWN_TIMEOUT
    ) -> None:
        await super().put_many(records, lost_reason=lost_reason)
        self.deepest = max(self.deepest, len(self))


class CountingBlackhole(BlackholeSink):
    """Takes every batch at once; `all_in` is set once it took EVENTS records."""

    def __init__(self) -> None:
        super().__init__(BlackholeSettings(name="fast", type="blackhole"))
        self.taken = 0
        self.all_in = anyio.Event()

    async def write_batch(self, batch: Sequence[Record]) -> None:
        await super().write_batch(batch)
        self.taken += len(batch)
        if self.taken >= EVENTS:
            self.all_in.set()


def stream_events(path: Path) -> None:
    """Writes every event as fast as the socket takes them, then closes."""
    lines = b"".join(event_line(f"p/{i}") + b"\n" for i in range(EVENTS))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.sendall(lines)


@pytest.mark.anyio
async def test_a_fast_client_leaves_the_sink_worker_its_turns(tmp_path: Path) -> None:
    path = tmp_path / "telemetryd.sock"
    sink_stats = ComponentStats("sink", "fast")
    queue = DepthRecordingQueue(LIMIT, 1 << 30, "block", sink_stats)
    sink = CountingBlackhole()
    worker = SinkWorker(sink, queue, sink_stats)

    dead_letter = SinkQueue(LIMIT, 1 << 30, "drop_newest", ComponentStats("sink", "rejected"))
    source = UnixSource(
        ServerSettings(unix_socket=str(path)),
        Intake(
            Ingestor(SchemaRegistry.load()),
            Bus([Route("fast", queue, RouteFilter())]),
            dead_letter,
            ComponentStats("source", "unix"),
        ),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await tg.start(source.serve)
        client = threading.Thread(target=stream_events, args=(path,))
        client.start()
        with anyio.fail_after(60):
            await sink.all_in.wait()
        client.join()
        source.stop()
        queue.close()
    assert sink_stats.sent == EVENTS
    assert not source.stats.rejected, source.stats.rejected
    # A read's worth at a time, and the worker takes it before the next: a few reads at most.
    assert queue.deepest <= 10_000, f"the queue reached {queue.deepest} events"
