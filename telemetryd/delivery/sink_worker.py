"""Drives one sink: takes batches from its queue, delivers them, retries until they land.

One worker per sink, each in its own task, so a slow or dead sink never slows the others. A
failed batch is retried with exponential backoff and full jitter, without limit: the queue
keeps the batch (and counts it against its limits) until the sink takes it. When the sink says
that part of a batch landed (PartialDelivery), only the rest is retried, and the batch is
committed whole once all of it landed. The failures of an outage that lasts are logged once per
interval (telemetryd.logs.Throttle), not per try.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

import anyio

from telemetryd.core.latency import BATCH_SIZE_BUCKETS, Histogram, LatencyHistogram
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.sink_queue import EventQueue
from telemetryd.logs import Throttle
from telemetryd.sink import PartialDelivery, RetryLater, Sink, SinkHealth

log = logging.getLogger("telemetryd.sink")


class SinkWorker:
    def __init__(self, sink: Sink, queue: EventQueue, stats: ComponentStats) -> None:
        self.sink = sink
        self.queue = queue
        self.stats = stats
        self.latency = LatencyHistogram()
        self.batch_sizes = Histogram(BATCH_SIZE_BUCKETS)  # events per delivered batch
        self.batches = 0
        self.retries = 0
        self.consecutive_failures = 0
        self.last_error = ""
        self._failure_log = Throttle()
        self.done = anyio.Event()

    @property
    def name(self) -> str:
        return self.sink.name

    def health(self) -> SinkHealth:
        if self.queue.problem is not None:  # a disk buffer that cannot write
            return SinkHealth(False, self.queue.problem)
        if self.consecutive_failures:
            return SinkHealth(
                False, f"{self.consecutive_failures} failed attempts: {self.last_error}"
            )
        return self.sink.health()

    async def run(self) -> None:
        """Delivers until the queue is closed and drained."""
        try:
            # Up to batches_in_flight batches at once, each retried on its own: while one
            # waits for the destination's answer, the next is on its way (with 1, the next
            # batch is taken once the last is committed).
            slots = anyio.Semaphore(self.sink.settings.batches_in_flight)
            async with anyio.create_task_group() as deliveries:
                while True:
                    await slots.acquire()
                    batch = await self._take()
                    if not batch:
                        slots.release()
                        break
                    deliveries.start_soon(self._deliver_in_slot, batch, slots)
        finally:
            self.done.set()

    async def _take(self) -> list[Record]:
        settings = self.sink.settings
        return await self.queue.take(
            settings.batch_max_events, settings.batch_max_bytes, settings.batch_max_delay_secs
        )

    async def _deliver_in_slot(self, batch: list[Record], slots: anyio.Semaphore) -> None:
        settings = self.sink.settings
        try:
            while True:
                await self._deliver_and_commit(batch)
                # A full batch already waiting goes out from this slot now. Handing it back
                # to the loop above costs turns of the event loop, in which a source reading
                # more than a batch per turn gets ahead: the queue would then sit at its limit,
                # holding memory and adding its length to every event's latency.
                if not self.queue.has_full_batch(
                    settings.batch_max_events, settings.batch_max_bytes
                ):
                    return
                batch = await self._take()
                if not batch:
                    return
        finally:
            slots.release()

    async def _deliver_and_commit(self, batch: list[Record]) -> None:
        await self._deliver(batch)
        self.latency.observe_batch(batch, time.monotonic())
        self.batch_sizes.observe(len(batch))
        self.batches += 1
        self.queue.commit(batch)

    async def _deliver(self, batch: list[Record]) -> None:
        """Returns once every record of `batch` landed. After a PartialDelivery the next
        attempt hands over only what did not land (the queue holds `batch` until its commit)."""
        settings = self.sink.settings
        delay = settings.retry_initial_secs
        pending: Sequence[Record] = batch
        while True:
            try:
                await self.sink.write_batch(pending)
            except Exception as raised:
                e: BaseException = raised
                if isinstance(raised, PartialDelivery):
                    pending = raised.remaining
                    if not pending:  # all of it landed after all
                        break
                    e = raised.cause
                self.consecutive_failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if pending is not batch:
                    self.last_error += f" ({len(pending)} of {len(batch)} records left)"
                self.stats.errors[type(e).__name__] += 1
                self.retries += 1
                pause = random.uniform(0, delay)  # full jitter: spreads retries of many daemons
                if isinstance(e, RetryLater):  # the destination said when: never sooner
                    pause = max(pause, min(e.retry_after_secs, settings.retry_max_secs))
                held = self._failure_log.due()
                if held is not None:
                    log.warning(
                        "sink write failed; retrying",
                        extra={
                            "fields": {
                                "sink": self.name,
                                "error": self.last_error,
                                "attempt": self.consecutive_failures,
                                "retry_in_secs": round(pause, 3),
                                "batch": len(batch),
                                "retrying": len(pending),
                                "failures_not_logged": held,
                            }
                        },
                    )
                await anyio.sleep(pause)
                delay = min(delay * 2, settings.retry_max_secs)
                continue
            break
        if self.consecutive_failures and self._failure_log.ended():
            log.info(
                "sink recovered",
                extra={"fields": {"sink": self.name, "after_attempts": self.consecutive_failures}},
            )
        self.consecutive_failures = 0
