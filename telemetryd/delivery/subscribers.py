"""Live subscribers: a copy of the accepted records for whoever watches (GET /api/events/subscribe).

A subscriber is not a sink: it wants what happens from now on, and nothing it does may slow the
bus. So the bus hands each subscription its records without waiting (`SubscriberHub.offer`), each
subscription holds at most `max_events` records and `max_bytes` of them, and what does not fit is
dropped for that subscriber alone, counted, and announced to it (`Batch.dropped`) so it knows its
view has a gap. The transports (sse and websocket in telemetryd.sources.http) take batches
with `Subscription.next_batch` and write them at the subscriber's own pace, and close the
subscription when done: what it still held then is counted as dropped, so that the hub's counts
add up (received = sent + dropped).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import anyio

from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.routing import RouteFilter

#: A subscriber's records dropped because it read slower than they came.
#: Records handed to a transport at most at once.
BATCH_MAX_EVENTS: Final = 512


class TooManySubscribers(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Batch:
    records: list[Record]
    dropped: int  # records dropped for this subscriber since the previous batch


class _Gap:
    """Where records were dropped in a subscription's queue, and how many."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Subscription:
    def __init__(
        self,
        hub: SubscriberHub,
        wants: Callable[[str], bool],
        max_events: int,
        max_bytes: int,
    ) -> None:
        self._hub = hub
        self.wants = wants
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._queue: deque[Record | _Gap] = deque()
        self._events = 0
        self._bytes = 0
        self._handed = 0  # records of batches taken but not yet delivered
        self._ready = anyio.Event()
        self.closed = False
        self._counted = False  # whether what it held at the end is counted

    def offer(self, records: Sequence[Record]) -> None:
        """Keeps what this subscriber wants and what fits; never waits."""
        wants = self.wants
        queue = self._queue
        kept = dropped = 0
        for record in records:
            if not wants(record.schema_id):
                continue
            size = len(record.payload)
            if self._events >= self.max_events or self._bytes + size > self.max_bytes:
                gap = queue[-1] if queue else None
                if not isinstance(gap, _Gap):
                    gap = _Gap()
                    queue.append(gap)
                gap.count += 1
                dropped += 1
                continue
            queue.append(record)
            self._events += 1
            self._bytes += size
            kept += 1
        if dropped:
            self._hub.stats.dropped[DropReason.SUBSCRIBER_QUEUE_FULL] += dropped
        if kept or dropped:
            self._hub.stats.received += kept + dropped
            self._ready.set()

    async def next_batch(self, wait_secs: float) -> Batch | None:
        """The records waiting (up to BATCH_MAX_EVENTS), after waiting at most `wait_secs` for
        some; None once the subscription is closed (the daemon stops)."""
        queue = self._queue
        if not queue and not self.closed:
            with anyio.move_on_after(wait_secs):
                await self._ready.wait()
        if self.closed:
            return None
        # A gap first is announced before the records after it; a batch stops at the next gap.
        dropped = 0
        head = queue[0] if queue else None
        if isinstance(head, _Gap):
            queue.popleft()
            dropped = head.count
        records: list[Record] = []
        while queue and len(records) < BATCH_MAX_EVENTS:
            item = queue[0]
            if isinstance(item, _Gap):
                break
            queue.popleft()
            records.append(item)
        self._events -= len(records)
        self._bytes -= sum(len(r.payload) for r in records)
        self._handed += len(records)
        if not queue:
            self._ready = anyio.Event()
        return Batch(records, dropped)

    def delivered(self, count: int) -> None:
        self._handed -= count
        self._hub.stats.sent += count

    def end(self) -> None:
        """No more batches: next_batch returns None (the transport then closes it)."""
        self.closed = True
        self._ready.set()

    def close(self) -> None:
        """The transport is done with it: what it still held is dropped, and counted."""
        self.end()
        self._hub.remove(self)
        if not self._counted:
            self._counted = True
            held = self._events + self._handed
            if held:
                self._hub.stats.dropped[DropReason.SUBSCRIBER_CLOSED] += held
            self._queue.clear()
            self._events = self._bytes = self._handed = 0


class SubscriberHub:
    """Every live subscription; the bus offers each published batch to all of them."""

    def __init__(self, max_subscribers: int, max_events: int, max_bytes: int) -> None:
        self.max_subscribers = max_subscribers
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.subscriptions: list[Subscription] = []
        self.stats = ComponentStats("subscribers", "subscribers")
        self.closed = False

    def subscribe(
        self, patterns: Sequence[str], allows: Callable[[str], bool] | None = None
    ) -> Subscription:
        """A new subscription to the schemas matching `patterns` (all when empty) that `allows`
        permits. Raises TooManySubscribers at the limit."""
        if self.closed or len(self.subscriptions) >= self.max_subscribers:
            self.stats.errors["too_many_subscribers"] += 1
            raise TooManySubscribers(
                f"at most {self.max_subscribers} subscribers are served (subscribe_max_subscribers)"
            )
        route = RouteFilter(include=patterns)
        wants = route.wants if allows is None else _both(route.wants, allows)
        subscription = Subscription(self, wants, self.max_events, self.max_bytes)
        self.subscriptions.append(subscription)
        return subscription

    def offer(self, records: Sequence[Record]) -> None:
        for subscription in self.subscriptions:
            subscription.offer(records)

    def remove(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)

    def close(self) -> None:
        """The daemon stops: every subscription ends after what it has already taken (its
        transport closes it once that is written or the subscriber is gone)."""
        self.closed = True
        for subscription in list(self.subscriptions):
            subscription.end()


def _both(first: Callable[[str], bool], second: Callable[[str], bool]) -> Callable[[str], bool]:
    cache: dict[str, bool] = {}

    def wants(schema_id: str) -> bool:
        decision = cache.get(schema_id)
        if decision is None:
            decision = first(schema_id) and second(schema_id)
            if len(cache) < 10_000:
                cache[schema_id] = decision
        return decision

    return wants
