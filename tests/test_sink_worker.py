"""The sink worker keeps up with a source that brings more than a batch per turn of the loop.

A source that reads a large chunk publishes a few batches' worth of records at once. A worker
delivering one batch per turn of the event loop would fall further behind at every turn until
the queue sat at its limit: memory at the limit, and the queue's length added to every event's
latency, though the sink is faster than the source. The worker must stay within a turn's worth.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from telemetryd.disk_queue import DiskQueue
from telemetryd.record import Record
from telemetryd.sink_queue import EventQueue, SinkQueue
from telemetryd.sink_worker import SinkWorker
from telemetryd.sinks.blackhole import BlackholeSettings, BlackholeSink
from telemetryd.stats import ComponentStats

BATCH = 100
PER_TURN = 3 * BATCH  # what the source brings at each turn of the loop
TURNS = 200
LIMIT = 50_000  # far above a turn's worth: only the worker's pace keeps the queue short


class ConcurrentBlackhole(BlackholeSink):
    concurrent_batches = True


def make_queue(kind: str, folder: Path, stats: ComponentStats) -> EventQueue:
    if kind == "memory":
        return SinkQueue(LIMIT, 1 << 30, "block", stats)
    return DiskQueue(
        folder / "buffer",
        max_bytes=1 << 30,
        segment_bytes=1 << 20,
        fsync="never",
        when_full="block",
        stats=stats,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "disk"])
@pytest.mark.parametrize("in_flight", [1, 3])
async def test_the_queue_stays_within_a_turn_of_the_source(
    kind: str, in_flight: int, tmp_path: Path
) -> None:
    settings = BlackholeSettings(
        name="fast", type="blackhole", batch_max_events=BATCH, batches_in_flight=in_flight
    )
    sink = ConcurrentBlackhole(settings)
    stats = ComponentStats("sink", "fast")
    queue = make_queue(kind, tmp_path, stats)
    worker = SinkWorker(sink, queue, stats)
    depths: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        for turn in range(TURNS):
            start = turn * PER_TURN
            records = [
                Record("s", "1", b'{"n":%d}' % n, 0.0) for n in range(start, start + PER_TURN)
            ]
            await queue.put_many(records)
            depths.append(len(queue))
            await anyio.lowlevel.checkpoint()
        queue.close()
    assert sink.records == TURNS * PER_TURN
    assert stats.sent == TURNS * PER_TURN
    # A few turns' worth while the worker starts, never a backlog growing with the run (one
    # batch a turn would have left some 40,000 records queued by the end).
    assert max(depths) <= 3 * PER_TURN, depths
