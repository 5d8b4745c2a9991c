"""A sink's bounded queue, with the sink's `when_full` policy.

Bounded by events and by bytes. The batch a worker has taken stays counted against the limits
until the worker commits it, so a sink that cannot deliver holds at most its limits in memory.
`block` makes `put_many` wait for room (backpressure reaches the source, which stops reading);
`drop_newest` refuses what does not fit; `drop_oldest` evicts queued events to make room. Every
drop is counted with its reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Protocol

import anyio

from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.sink import WhenFull

_payload = attrgetter("payload")


class QueueClosed(Exception):
    """put_many after close: the daemon is shutting down."""


@dataclass(frozen=True)
class QueueStatistics:
    queued_events: int
    queued_bytes: int
    inflight_events: int
    max_events: int
    max_bytes: int
    waiting_putters: int


class EventQueue(Protocol):
    """What the bus, the sink worker and the daemon need of a sink's queue: SinkQueue (memory)
    and telemetryd.delivery.disk_queue.DiskQueue (disk) both provide it."""

    max_events: int  # 0: no limit in events
    max_bytes: int
    when_full: WhenFull
    stats: ComponentStats
    #: Why the queue cannot take records now (a disk buffer's full disk), for the sink's health.
    problem: str | None

    async def put_many(
        self, records: Sequence[Record], *, lost_reason: str = DropReason.SHUTDOWN_TIMEOUT
    ) -> None: ...

    def count_lost(self, count: int, reason: str = DropReason.SHUTDOWN_TIMEOUT) -> None: ...

    async def take(
        self, max_events: int, max_bytes: int, max_delay_secs: float
    ) -> list[Record]: ...

    def has_full_batch(self, max_events: int, max_bytes: int) -> bool:
        """Whether take(max_events, max_bytes, ...) would return a full batch at once."""
        ...

    def commit(self, batch: Sequence[Record] | None = None) -> None: ...

    def close(self) -> None: ...

    def abandon(self, reason: str = DropReason.SHUTDOWN_TIMEOUT) -> int: ...

    def shutdown(self) -> None: ...

    def __len__(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def statistics(self) -> QueueStatistics: ...


class QueueSignals:
    """What every sink queue shares: closing, counting what never got in, and the two
    wake-ups (`_ready` for the worker waiting for events, `_room` for putters waiting for
    space), each an anyio.Event made only when someone waits."""

    stats: ComponentStats

    def __init__(self) -> None:
        self.problem: str | None = None
        self._closed = False
        self._room: anyio.Event | None = None
        self._ready: anyio.Event | None = None
        self._waiting_putters = 0

    def count_lost(self, count: int, reason: str = DropReason.SHUTDOWN_TIMEOUT) -> None:
        """Events meant for this sink that never reached its queue (the daemon is stopping)."""
        if count:
            self.stats.received += count
            self.stats.dropped[reason] += count

    def close(self) -> None:
        """No more puts; take() returns [] once the queue is drained."""
        self._closed = True
        self._wake(ready=True, room=True)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _wait(self, name: str) -> None:
        event: anyio.Event | None = getattr(self, name)
        if event is None:
            event = anyio.Event()
            setattr(self, name, event)
        await event.wait()

    def _wake(self, *, ready: bool = False, room: bool = False) -> None:
        if ready and self._ready is not None:
            self._ready.set()
            self._ready = None
        if room and self._room is not None:
            self._room.set()
            self._room = None


class SinkQueue(QueueSignals):
    def __init__(
        self, max_events: int, max_bytes: int, when_full: WhenFull, stats: ComponentStats
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.stats = stats
        self._items: deque[Record] = deque()
        self._bytes = 0  # queued and in flight
        # Batches taken and not yet committed, by id() of the list take returned (alive, so
        # unique, until committed), in the order taken: (events, bytes).
        self._inflight: dict[int, tuple[int, int]] = {}
        self._inflight_events = 0
        self._inflight_bytes = 0
        super().__init__()

    # -- producers ---------------------------------------------------------------------------

    async def put_many(
        self, records: Sequence[Record], *, lost_reason: str = DropReason.SHUTDOWN_TIMEOUT
    ) -> None:
        """Enqueue in order; per the policy, waits for room or drops what does not fit.

        `lost_reason` labels what a cancelled `block` put leaves out of the queue."""
        if self._closed:
            self.count_lost(len(records))
            raise QueueClosed
        if self.when_full == "block":
            await self._put_blocking(records, lost_reason)
            return
        self.stats.received += len(records)  # each one is queued now, or counted as dropped
        if self.when_full == "drop_newest":
            self._put_dropping_newest(records)
        else:
            self._put_evicting_oldest(records)
        self._wake(ready=True)

    async def _put_blocking(self, records: Sequence[Record], lost_reason: str) -> None:
        items = self._items
        start = 0
        try:
            while start < len(records):
                end = self._fits(records, start)
                if end == start:
                    self._wake(ready=True)  # a putter must not wait while the worker sleeps
                    self._waiting_putters += 1
                    try:
                        await self._wait("_room")
                    finally:
                        self._waiting_putters -= 1
                    if self._closed:
                        raise QueueClosed
                    continue
                items.extend(records[start:end])
                self.stats.received += end - start  # counted as they enter
                start = end
        except BaseException:
            # Cancelled by the stop's deadline, or closed, while waiting for room: the rest
            # never entered this queue. They are this sink's losses; count them as such.
            self.count_lost(len(records) - start, lost_reason)
            raise
        self._wake(ready=True)

    def _put_dropping_newest(self, records: Sequence[Record]) -> None:
        end = self._fits(records, 0)
        self._items.extend(records[:end])
        if end < len(records):
            self.stats.dropped[DropReason.QUEUE_FULL] += len(records) - end

    def _put_evicting_oldest(self, records: Sequence[Record]) -> None:
        items = self._items
        evicted = refused = 0
        for record in records:
            size = len(record.payload)
            while items and (
                len(items) + self._inflight_events >= self.max_events
                or self._bytes + size > self.max_bytes
            ):
                self._bytes -= len(items.popleft().payload)
                evicted += 1
            if self._has_room_for(size):
                items.append(record)
                self._bytes += size
            else:  # everything left is in flight: the newest one cannot be kept
                refused += 1
        if evicted:
            self.stats.dropped[DropReason.EVICTED_OLDEST] += evicted
        if refused:
            self.stats.dropped[DropReason.QUEUE_FULL] += refused

    def _has_room_for(self, size: int) -> bool:
        total = len(self._items) + self._inflight_events
        if total == 0:
            return True  # one record over max_bytes still passes alone, or it would block forever
        return total < self.max_events and self._bytes + size <= self.max_bytes

    def _fits(self, records: Sequence[Record], start: int) -> int:
        """Index after the last record from `start` that fits; adds their bytes to the count."""
        room = self.max_events - len(self._items) - self._inflight_events
        if room >= len(records) - start:  # the common case: all of it fits, one sum decides
            size = sum(map(len, map(_payload, records[start:] if start else records)))
            if self._bytes + size <= self.max_bytes:
                self._bytes += size
                return len(records)
        end = start
        stop = min(len(records), start + max(room, 0))
        total = self._bytes
        limit = self.max_bytes
        while end < stop:
            size = len(records[end].payload)
            if total + size > limit and not (total == 0 and end == start):
                break
            total += size
            end += 1
        self._bytes = total
        return end

    # -- the worker --------------------------------------------------------------------------

    async def take(self, max_events: int, max_bytes: int, max_delay_secs: float) -> list[Record]:
        """The next batch, in order; [] once the queue is closed and empty.

        Waits for a first event, then up to `max_delay_secs` for the batch to fill. Batches
        taken stay counted against the limits until they are committed (in any order).
        """
        while not self._items:
            if self._closed:
                return []
            await self._wait("_ready")
        if len(self._items) < max_events and max_delay_secs > 0 and not self._closed:
            with anyio.move_on_after(max_delay_secs):
                # A putter waiting for room means the queue is full: filling more is impossible.
                while (
                    len(self._items) < max_events and not self._closed and not self._waiting_putters
                ):
                    await self._wait("_ready")
        items = self._items
        popleft = items.popleft
        batch = [popleft() for _ in range(min(max_events, len(items)))]
        size = sum(map(len, map(_payload, batch)))
        while size > max_bytes and len(batch) > 1:  # rare: give back what is over the limit
            record = batch.pop()
            items.appendleft(record)
            size -= len(record.payload)
        if batch:
            self._inflight[id(batch)] = (len(batch), size)
            self._inflight_events += len(batch)
            self._inflight_bytes += size
        return batch

    def has_full_batch(self, max_events: int, max_bytes: int) -> bool:
        return len(self._items) >= max_events or self._bytes - self._inflight_bytes >= max_bytes

    def commit(self, batch: Sequence[Record] | None = None) -> None:
        """`batch` (by default the oldest batch taken) is delivered: free its room."""
        key = next(iter(self._inflight), None) if batch is None else id(batch)
        taken = self._inflight.pop(key, None) if key is not None else None
        if taken is None:  # abandoned at the shutdown timeout while it was being delivered
            return
        events, size = taken
        self.stats.sent += events
        self._bytes -= size
        self._inflight_events -= events
        self._inflight_bytes -= size
        self._wake(room=True)

    def abandon(self, reason: str = DropReason.SHUTDOWN_TIMEOUT) -> int:
        """Drop everything still held (shutdown timeout); returns how many events, counted."""
        lost = len(self._items) + self._inflight_events
        self._items.clear()
        self._inflight.clear()
        self._bytes = self._inflight_events = self._inflight_bytes = 0
        if lost:
            self.stats.dropped[reason] += lost
        self._wake(room=True)
        return lost

    def shutdown(self) -> None:
        """Nothing to release: the memory goes with the queue."""

    # -- state -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items) + self._inflight_events

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            queued_events=len(self._items),
            queued_bytes=self._bytes - self._inflight_bytes,
            inflight_events=self._inflight_events,
            max_events=self.max_events,
            max_bytes=self.max_bytes,
            waiting_putters=self._waiting_putters,
        )
