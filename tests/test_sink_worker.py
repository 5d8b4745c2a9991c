"""The sink worker keeps up with a source that brings more than a batch per turn of the loop,
and retries only what a sink says did not land.

A source that reads a large chunk publishes a few batches' worth of records at once. A worker
delivering one batch per turn of the event loop would fall further behind at every turn until
the queue sat at its limit: memory at the limit, and the queue's length added to every event's
latency, though the sink is faster than the source. The worker must stay within a turn's worth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.disk_queue import DiskQueue
from telemetryd.delivery.sink_queue import EventQueue, SinkQueue
from telemetryd.delivery.sink_worker import SinkWorker
from telemetryd.sink import PartialDelivery, Sink, SinkSettings
from telemetryd_sinks.blackhole import BlackholeSettings, BlackholeSink

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


# --- PartialDelivery: only what did not land is sent again --------------------------------------


class TwoServers(Sink):
    """A destination of two servers that answer on their own, by the records' schema id ("a"
    or "b"): b is down for its first `b_down` attempts, and the sink says what landed."""

    def __init__(self, settings: SinkSettings, b_down: int) -> None:
        super().__init__(settings)
        self.b_down = b_down
        self.attempts: list[list[Record]] = []
        self.landed: dict[str, list[Record]] = {"a": [], "b": []}
        self.fourth_attempt = anyio.Event()

    async def write_batch(self, batch: Sequence[Record]) -> None:
        self.attempts.append(list(batch))
        if len(self.attempts) == 4:
            self.fourth_attempt.set()
        await anyio.lowlevel.checkpoint()
        failed = []
        for record in batch:
            if record.schema_id == "b" and self.b_down:
                failed.append(record)
            else:
                self.landed[record.schema_id].append(record)
        if not failed:
            return
        self.b_down -= 1
        error = ConnectionError("server b is down")
        if len(failed) == len(batch):
            raise error  # nothing landed
        raise PartialDelivery(failed, error)


def mixed(start: int, count: int) -> list[Record]:
    return [Record("ab"[n % 2], "1", b'{"n":%d}' % n, 0.0) for n in range(start, start + count)]


def two_servers(b_down: int) -> TwoServers:
    settings = SinkSettings(
        name="two",
        type="two_servers",
        batch_max_events=BATCH,
        batch_max_delay_secs=0,
        retry_initial_secs=0.001,
        retry_max_secs=0.002,
    )
    return TwoServers(settings, b_down)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_a_partial_delivery_retries_only_what_did_not_land(kind: str, tmp_path: Path) -> None:
    sink = two_servers(b_down=3)
    stats = ComponentStats("sink", "two")
    queue = make_queue(kind, tmp_path, stats)
    worker = SinkWorker(sink, queue, stats)
    records = mixed(0, 2 * BATCH)
    await queue.put_many(records)
    queue.close()
    await worker.run()

    first, second = records[:BATCH], records[BATCH:]
    halves = [r for r in first if r.schema_id == "b"]
    # The whole batch once; then b's half alone, failing twice more (nothing of it landed,
    # so the same half again), then landing; then the next batch, whole.
    assert [[r.payload for r in a] for a in sink.attempts] == [
        [r.payload for r in batch] for batch in (first, halves, halves, halves, second)
    ]
    # Every record landed once, in its order on its server.
    for server in "ab":
        assert [r.payload for r in sink.landed[server]] == [
            r.payload for r in records if r.schema_id == server
        ]
    assert worker.retries == 3
    assert stats.errors["ConnectionError"] == 3
    assert "ConnectionError: server b is down" in worker.last_error
    assert worker.consecutive_failures == 0
    assert worker.health().healthy
    # The queue commits each batch whole, once, and the statistics count it once.
    assert stats.sent == 2 * BATCH
    assert len(queue) == 0
    assert queue.statistics().inflight_events == 0
    assert worker.batches == 2
    assert worker.batch_sizes.count == 2
    assert worker.latency.count == 2 * BATCH
    queue.shutdown()
    if kind == "disk":  # the log's cursor is past both batches: nothing to deliver again
        reopened = make_queue(kind, tmp_path, ComponentStats("sink", "two"))
        assert isinstance(reopened, DiskQueue)
        assert reopened.recovered == 0
        reopened.shutdown()


@pytest.mark.anyio
async def test_the_health_names_the_cause_and_what_is_left_while_retrying() -> None:
    sink = two_servers(b_down=1_000_000)
    stats = ComponentStats("sink", "two")
    queue = make_queue("memory", Path("unused"), stats)
    worker = SinkWorker(sink, queue, stats)
    await queue.put_many(mixed(0, BATCH))
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await sink.fourth_attempt.wait()  # the worker has handled three failures
        health = worker.health()
        tg.cancel_scope.cancel()
    assert not health.healthy
    assert f"ConnectionError: server b is down ({BATCH // 2} of {BATCH} records left)" in (
        health.detail
    )
    assert len(sink.landed["a"]) == BATCH // 2  # once, however many retries
    assert stats.sent == 0  # not committed while part of it is undelivered
    assert len(queue) == BATCH
