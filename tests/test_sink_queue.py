"""The bounded queue and the bus: properties a user relies on, checked with hypothesis.

block: nothing lost, nothing duplicated, order kept, limits never exceeded.
drop_newest / drop_oldest: every event is either delivered or counted as dropped, exactly.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus, Route
from telemetryd.delivery.routing import RouteFilter
from telemetryd.delivery.sink_queue import QueueClosed, SinkQueue
from telemetryd.sink import WhenFull


def rec(n: int, size: int = 10, schema: str = "s") -> Record:
    return Record(schema, "1", str(n).encode().ljust(size, b" "), 0.0)


def queue(max_events: int, max_bytes: int = 1 << 30, when_full: WhenFull = "block") -> SinkQueue:
    return SinkQueue(max_events, max_bytes, when_full, ComponentStats("sink", "t"))


async def drain(
    q: SinkQueue, out: list[Record], batch: int, observe: list[int] | None = None
) -> None:
    while True:
        got = await q.take(batch, 1 << 30, 0.0)
        if not got:
            return
        if observe is not None:
            observe.append(len(q))
        out.extend(got)
        await anyio.lowlevel.checkpoint()
        q.commit()


@settings(deadline=None, max_examples=60)
@given(
    producers=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=4),
    chunk=st.integers(min_value=1, max_value=17),
    max_events=st.integers(min_value=1, max_value=20),
    batch=st.integers(min_value=1, max_value=25),
)
def test_block_loses_nothing_duplicates_nothing_and_keeps_each_producers_order(
    producers: list[int], chunk: int, max_events: int, batch: int
) -> None:
    async def main() -> list[Record]:
        q = queue(max_events)
        out: list[Record] = []
        depths: list[int] = []

        async def produce(p: int, count: int) -> None:
            records = [rec(p * 1000 + i) for i in range(count)]
            for start in range(0, count, chunk):
                await q.put_many(records[start : start + chunk])
                assert len(q) <= max_events

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, q, out, batch, depths)
            async with anyio.create_task_group() as producers_tg:
                for p, count in enumerate(producers):
                    producers_tg.start_soon(produce, p, count)
            q.close()
        assert all(depth <= max_events for depth in depths)
        return out

    out = anyio.run(main)
    got = [int(r.payload) for r in out]
    assert sorted(got) == sorted(p * 1000 + i for p, n in enumerate(producers) for i in range(n))
    for p in range(len(producers)):
        mine = [g for g in got if g // 1000 == p]
        assert mine == sorted(mine)


@settings(deadline=None, max_examples=60)
@given(
    policy=st.sampled_from(["drop_newest", "drop_oldest"]),
    puts=st.lists(st.integers(min_value=0, max_value=30), max_size=12),
    max_events=st.integers(min_value=1, max_value=15),
    take_every=st.integers(min_value=1, max_value=4),
)
def test_drops_are_counted_exactly(
    policy: WhenFull, puts: list[int], max_events: int, take_every: int
) -> None:
    async def main() -> tuple[list[Record], SinkQueue]:
        q = queue(max_events, when_full=policy)
        out: list[Record] = []
        n = 0
        for i, count in enumerate(puts):
            await q.put_many([rec(n + k) for k in range(count)])
            n += count
            assert len(q) <= max_events
            if i % take_every == 0 and len(q):
                out.extend(await q.take(3, 1 << 30, 0.0))
                q.commit()
        q.close()
        await drain(q, out, 5)
        return out, q

    out, q = anyio.run(main)
    total = sum(puts)
    dropped = sum(q.stats.dropped.values())
    assert len(out) + dropped == total
    assert q.stats.received == total
    assert q.stats.sent == len(out)
    got = [int(r.payload) for r in out]
    assert got == sorted(got)  # order kept, whatever was dropped
    reason = DropReason.QUEUE_FULL if policy == "drop_newest" else DropReason.EVICTED_OLDEST
    assert set(q.stats.dropped) <= {reason, DropReason.QUEUE_FULL}


@pytest.mark.anyio
async def test_drop_oldest_keeps_the_newest() -> None:
    q = queue(3, when_full="drop_oldest")
    await q.put_many([rec(i) for i in range(10)])
    assert [int(r.payload) for r in await q.take(10, 1 << 30, 0)] == [7, 8, 9]
    assert q.stats.dropped == {DropReason.EVICTED_OLDEST: 7}


@pytest.mark.anyio
async def test_drop_newest_keeps_the_oldest() -> None:
    q = queue(3, when_full="drop_newest")
    await q.put_many([rec(i) for i in range(10)])
    assert [int(r.payload) for r in await q.take(10, 1 << 30, 0)] == [0, 1, 2]
    assert q.stats.dropped == {DropReason.QUEUE_FULL: 7}


@pytest.mark.anyio
async def test_byte_limit_blocks_and_a_single_oversized_record_still_passes() -> None:
    q = queue(100, max_bytes=25)
    await q.put_many([rec(1, 10), rec(2, 10)])
    with anyio.move_on_after(0.05) as scope:
        await q.put_many([rec(3, 10)])  # 30 bytes > 25: must wait
    assert scope.cancelled_caught
    batch = await q.take(10, 1 << 30, 0)
    q.commit()
    assert len(batch) == 2
    huge = queue(100, max_bytes=5)
    await huge.put_many(
        [rec(9, 50)]
    )  # alone in an empty queue it passes, or it would block forever
    assert len(huge) == 1


@pytest.mark.anyio
async def test_a_taken_batch_counts_until_committed() -> None:
    q = queue(2)
    await q.put_many([rec(1), rec(2)])
    await q.take(2, 1 << 30, 0)
    with anyio.move_on_after(0.05) as scope:
        await q.put_many([rec(3)])
    assert scope.cancelled_caught  # the worker still holds two: the sink has not taken them
    q.commit()
    await q.put_many([rec(3)])


@pytest.mark.anyio
async def test_take_waits_for_a_batch_to_fill_then_returns_partial() -> None:
    q = queue(100)
    await q.put_many([rec(1)])
    start = anyio.current_time()
    batch = await q.take(10, 1 << 30, 0.05)
    assert len(batch) == 1
    assert anyio.current_time() - start >= 0.04


@pytest.mark.anyio
async def test_close_wakes_a_blocked_putter_and_abandon_counts_losses() -> None:
    q = queue(1)
    await q.put_many([rec(1)])

    async def blocked() -> None:
        with pytest.raises(QueueClosed):
            await q.put_many([rec(2)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked)
        await anyio.wait_all_tasks_blocked()
        q.close()
    assert q.abandon() == 1
    # one was queued, one never got in: both are this sink's losses, and its counts stay whole
    assert q.stats.dropped == {"shutdown_timeout": 2}
    assert q.stats.received == 2
    assert await q.take(1, 1, 0) == []


@pytest.mark.anyio
async def test_bus_routes_by_include_and_exclude_and_a_full_drop_sink_costs_others_nothing() -> (
    None
):
    everything = queue(1000)
    jupyter_only = queue(1000)
    tiny = queue(1, when_full="drop_newest")
    bus = Bus(
        [
            Route("all", everything, RouteFilter()),
            Route(
                "jupyter",
                jupyter_only,
                RouteFilter(["https://events.jupyter.org/*"], ["*/gateway*"]),
            ),
            Route("tiny", tiny, RouteFilter()),
        ]
    )
    records = [
        rec(1, schema="https://events.jupyter.org/jupyter_server/contents_service/v1"),
        rec(2, schema="https://events.jupyter.org/jupyter_server/gateway_client/v1"),
        rec(3, schema="https://schema.jupyter.org/jupyterhub/events/server-action"),
    ]
    await bus.publish(records)
    assert len(everything) == 3
    assert [int(r.payload) for r in await jupyter_only.take(10, 1 << 30, 0)] == [1]
    assert len(tiny) == 1
    assert tiny.stats.dropped == {DropReason.QUEUE_FULL: 2}
    assert bus.wanted_by(records[0].schema_id) == ["all", "jupyter", "tiny"]


@settings(deadline=None, max_examples=80)
@given(
    count=st.integers(min_value=0, max_value=60),
    batch=st.integers(min_value=1, max_value=9),
    in_flight=st.integers(min_value=1, max_value=5),
    picks=st.lists(st.integers(min_value=0, max_value=4), max_size=80),
    max_events=st.integers(min_value=1, max_value=30),
)
def test_batches_in_flight_committed_in_any_order_free_exactly_their_room(
    count: int, batch: int, in_flight: int, picks: list[int], max_events: int
) -> None:
    # batches_in_flight > 1: the worker takes several batches and commits them as their
    # deliveries finish, in any order; every event is taken once, in order, and counted sent
    # once, and the queue's room comes back exactly.
    async def main() -> None:
        q = queue(max_events, when_full="block")
        taken: list[Record] = []
        outstanding: list[list[Record]] = []
        choices = iter(picks)

        async def produce() -> None:
            for i in range(count):
                await q.put_many([rec(i)])
            q.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            while True:
                # A take waits for events; with the queue's room all in flight, only a commit
                # makes more (the worker's deliveries run beside its takes).
                ready = q.statistics().queued_events > 0 or q.closed
                if len(outstanding) < in_flight and ready:
                    got = await q.take(batch, 1 << 30, 0.0)
                    if got:
                        taken.extend(got)
                        outstanding.append(got)
                        assert len(q) <= max(max_events, batch)
                        continue
                    if not outstanding:
                        break
                if not outstanding:
                    await anyio.lowlevel.checkpoint()  # the producer's turn
                    continue
                done = outstanding.pop(next(choices, 0) % len(outstanding))
                q.commit(done)
                stats = q.statistics()
                assert stats.inflight_events == sum(map(len, outstanding))
                await anyio.lowlevel.checkpoint()
        assert [int(r.payload) for r in taken] == list(range(count))
        assert q.stats.sent == count
        stats = q.statistics()
        assert (stats.queued_events, stats.queued_bytes, stats.inflight_events) == (0, 0, 0)

    anyio.run(main)


def test_a_batch_abandoned_at_the_shutdown_timeout_is_counted_once() -> None:
    # The stop's deadline abandons what is still held, deliveries in flight included; a
    # delivery finishing afterwards must not count its events again (nor fail).
    async def main() -> None:
        q = queue(100)
        await q.put_many([rec(i) for i in range(10)])
        first = await q.take(4, 1 << 30, 0.0)
        second = await q.take(4, 1 << 30, 0.0)
        assert q.abandon() == 10
        q.commit(second)
        q.commit(first)
        assert q.stats.sent == 0
        assert q.stats.dropped[DropReason.SHUTDOWN_TIMEOUT] == 10

    anyio.run(main)
