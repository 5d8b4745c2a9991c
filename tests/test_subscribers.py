"""The subscriber hub: bounded per subscriber, never waits, every record delivered or counted."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus, Route
from telemetryd.delivery.routing import RouteFilter
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.delivery.subscribers import BATCH_MAX_EVENTS, SubscriberHub, TooManySubscribers

A = "https://example.org/a/v1"
B = "https://example.org/b/v1"


def record(schema_id: str, n: int, size: int = 10) -> Record:
    return Record(schema_id, "1", b"%d:" % n + b"x" * size, 0.0)


# Each step: ("offer", [(schema, size)...]) or ("take", None).
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("offer"),
            st.lists(st.tuples(st.sampled_from([A, B]), st.integers(0, 40)), max_size=30),
        ),
        st.tuples(st.just("take"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    steps=steps,
    max_events=st.integers(1, 20),
    max_bytes=st.integers(50, 600),
    patterns=st.sampled_from([[], [A], ["*/b/*"]]),
)
def test_every_wanted_record_is_delivered_in_order_or_counted(
    steps: list[tuple[str, list[tuple[str, int]] | None]],
    max_events: int,
    max_bytes: int,
    patterns: list[str],
) -> None:
    async def scenario() -> None:
        hub = SubscriberHub(4, max_events, max_bytes)
        subscription = hub.subscribe(patterns)
        wanted: list[bytes] = []
        got: list[bytes] = []
        stream: list[bytes | int] = []  # records and announced gaps, in the order received
        announced = 0
        n = 0
        for kind, offered in steps:
            if kind == "offer":
                assert offered is not None
                records = []
                for schema_id, size in offered:
                    records.append(record(schema_id, n, size))
                    n += 1
                hub.offer(records)
                wanted += [r.payload for r in records if subscription.wants(r.schema_id)]
            else:
                batch = await subscription.next_batch(0)
                assert batch is not None
                assert len(batch.records) <= BATCH_MAX_EVENTS
                got += [r.payload for r in batch.records]
                announced += batch.dropped
                stream += [batch.dropped] if batch.dropped else []
                stream += [r.payload for r in batch.records]
            # bounded at every step, in events and bytes
            assert subscription._events <= max_events
            assert subscription._bytes <= max_bytes
        while True:
            batch = await subscription.next_batch(0)
            assert batch is not None
            if not batch.records and not batch.dropped:
                break
            got += [r.payload for r in batch.records]
            announced += batch.dropped
            stream += [batch.dropped] if batch.dropped else []
            stream += [r.payload for r in batch.records]
        # Each gap is announced exactly where the records are missing: replaying the stream
        # over the wanted records skips N at each announcement and matches every record.
        position = 0
        for item in stream:
            if isinstance(item, int):
                position += item
            else:
                assert wanted[position] == item
                position += 1
        assert position == len(wanted)
        # what arrived is the wanted records in order, minus the dropped ones
        it = iter(wanted)
        assert all(any(g == w for w in it) for g in got)
        assert len(got) + announced == len(wanted)
        assert hub.stats.dropped[DropReason.SUBSCRIBER_QUEUE_FULL] == announced
        assert hub.stats.received == len(got) + announced  # each counted once: sent or dropped

    anyio.run(scenario)


def test_filter_and_token_permissions_combine() -> None:
    hub = SubscriberHub(4, 100, 10_000)
    subscription = hub.subscribe(["https://example.org/*"], allows=lambda s: s != B)
    hub.offer([record(A, 1), record(B, 2), record("https://other.org/c/v1", 3)])

    async def take() -> list[bytes]:
        batch = await subscription.next_batch(0)
        assert batch is not None
        return [r.payload for r in batch.records]

    assert anyio.run(take) == [record(A, 1).payload]


def test_subscriber_limit_and_removal() -> None:
    hub = SubscriberHub(1, 10, 1000)
    first = hub.subscribe([])
    with pytest.raises(TooManySubscribers, match="subscribe_max_subscribers"):
        hub.subscribe([])
    first.close()
    assert hub.subscriptions == []
    hub.subscribe([])  # room again


def test_close_wakes_a_waiting_subscriber_and_ends_it() -> None:
    async def scenario() -> None:
        hub = SubscriberHub(2, 10, 1000)
        subscription = hub.subscribe([])
        results: list[object] = []

        async def wait() -> None:
            results.append(await subscription.next_batch(60))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                hub.close()
        assert results == [None]
        with pytest.raises(TooManySubscribers):
            hub.subscribe([])

    anyio.run(scenario)


def test_a_subscriber_that_never_reads_does_not_hold_up_the_bus() -> None:
    """A full subscriber drops; the sink queue still takes every record, publish never waits."""

    async def scenario() -> None:
        hub = SubscriberHub(2, 5, 1 << 20)
        stats = ComponentStats("sink", "archive")
        queue = SinkQueue(10_000, 1 << 24, "block", stats)
        bus = Bus([Route("archive", queue, RouteFilter())], hub)
        subscription = hub.subscribe([])
        with anyio.fail_after(5):
            for n in range(100):
                await bus.publish([record(A, n)])
        assert queue.statistics().queued_events == 100
        batch = await subscription.next_batch(0)
        assert batch is not None
        assert (len(batch.records), batch.dropped) == (5, 0)
        batch = await subscription.next_batch(0)
        assert batch is not None
        assert (len(batch.records), batch.dropped) == (0, 95)  # the gap comes after them

    anyio.run(scenario)
