"""Intake: what every source does with the events it read, in one place.

A source frames what it reads and knows its peer; the rest is the same for all of them and is
done here, once per chunk (a socket read, a request body), never per event:

    arrive        stamp the chunk's time of arrival; count it received
    validate      the Ingestor's verdicts, then what the peer's token may send; count the
                  rejections at once (a stop while publishing must not leave them uncounted)
    publish       hand the records to the bus, waiting while `block` queues are full; count
                  them sent, or dropped with the reason they were lost
    dead_letter   turn the rejections into dead-letter records for the dead-letter sink

How long a source's clients may wait for room is its `Patience`: a socket client waits as
long as the queues push back (its writes block); an HTTP request waits a bounded time and is
refused after it, or at once when enough requests already wait. The source turns a `Refusal`
into its own answer (an HTTP status); what was refused is counted here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, cast

import anyio
import msgspec

from telemetryd.core.framing import Frame
from telemetryd.core.ingest import Ingestor
from telemetryd.core.reasons import DropReason, Reason
from telemetryd.core.record import Record
from telemetryd.core.rejections import Rejection, dead_letter_record
from telemetryd.core.stats import ComponentStats
from telemetryd.core.timestamps import now_utc
from telemetryd.delivery.bus import Bus
from telemetryd.delivery.sink_queue import EventQueue, QueueClosed

if TYPE_CHECKING:
    from telemetryd.auth import Identity


@dataclass(frozen=True, slots=True)
class Patience:
    """How long a source's clients wait for room in full `block` queues."""

    timeout_secs: float  # then the publish is refused (HTTP: 503)
    max_waiting: int  # waiting already: a new publish is refused at once (HTTP: 429)


class Arrival(msgspec.Struct, frozen=True, gc=False):  # one per chunk: made in ~40 ns
    """A chunk's peer and time of arrival, shared by its records and its dead letters."""

    origin: bytes  # `__origin__`, encoded once per connection or request
    timestamp: str  # RFC 3339: `__timestamp__` of the events that carry none
    received: float  # time.monotonic(): where each record's latency starts


class Refusal(Enum):
    """Why a publish did not get its records into the queues (they are counted); an impatient
    one's only ever STOPPING."""

    TOO_MANY_WAITING = "too_many_waiting"  # refused at once: `max_waiting` already wait
    STOPPING = "stopping"  # the queues are closed
    DISK_FULL = "disk_full"  # waited `timeout_secs`; a disk buffer's disk is why
    QUEUES_FULL = "queues_full"  # waited `timeout_secs` for full queues


class Intake:
    """One source's intake: the shared Ingestor, bus and dead-letter queue, its own counters."""

    def __init__(
        self,
        ingestor: Ingestor,
        bus: Bus,
        dead_letter: EventQueue,
        stats: ComponentStats,
        *,
        patience: Patience | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.bus = bus
        self.dead_letter_queue = dead_letter
        self.stats = stats
        self.patience = patience  # None: wait as long as the queues push back
        #: Clients waiting for room: in publish, or for what the source waits on first (an HTTP
        #: body's share of the read budget); more than a few only while `block` queues are full.
        self.waiting = 0

    def arrive(self, origin: bytes, count: int) -> Arrival:
        """Stamps a chunk of `count` events from `origin` with the time it arrived."""
        received = time.monotonic()
        self.stats.received += count
        return Arrival(origin, now_utc(), received)

    def validate(
        self,
        lines: Sequence[Frame],
        arrival: Arrival,
        first: int = 1,
        identity: Identity | None = None,
    ) -> tuple[list[Record], list[Rejection]]:
        """Records and rejections of `lines` (numbered from `first`), in order. An `identity`
        whose token allows only some schemas refuses the records of the others."""
        records, rejected = self.ingestor.process(
            lines, arrival.origin, arrival.timestamp, arrival.received, first
        )
        if identity is not None and identity.permits is not None and records:
            records, rejected = _permitted(identity, lines, first, records, rejected)
        if rejected:
            counts = self.stats.rejected
            for rejection in rejected:
                counts[rejection.reason] += 1
        return records, rejected

    async def reject(self, rejection: Rejection, arrival: Arrival) -> None:
        """A chunk rejected whole, before it had lines to validate (HTTP: a body that is not a
        JupyterLab Pioneer event): counted, and dead-lettered."""
        self.stats.rejected[rejection.reason] += 1
        await self.dead_letter([rejection], arrival)

    @property
    def crowded(self) -> bool:
        """Whether a patient client is refused at once: enough already wait for room."""
        patience = self.patience
        return patience is not None and self.waiting >= patience.max_waiting

    @contextlib.contextmanager
    def waiting_for_room(self) -> Iterator[None]:
        """Counts a client as waiting (see `crowded`) while it waits for room."""
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    async def publish(self, records: list[Record]) -> Refusal | None:
        """Hands records to the bus; None once every queue that wants them has them.

        Whatever does not get there is counted as dropped: refused (a patient publish), the
        queues already closed, or the stop's deadline cancelling the wait (then raised)."""
        if not records:
            return None
        patience = self.patience
        if patience is not None:
            return await self._publish_within(records, patience)
        # As long as it takes, without a cancel scope: a socket's chunk may be a single event.
        try:
            await self.bus.publish(records)
        except QueueClosed:
            self._count_lost(len(records))
            return Refusal.STOPPING
        except BaseException:  # cancelled by the stop's deadline: never accepted
            self._count_lost(len(records))
            raise
        self.stats.sent += len(records)
        return None

    async def _publish_within(self, records: list[Record], patience: Patience) -> Refusal | None:
        count = len(records)
        stats = self.stats
        if self.crowded:
            # Queues are full and enough clients already wait: shed this one at once.
            stats.dropped[DropReason.TOO_MANY_WAITING] += count
            return Refusal.TOO_MANY_WAITING
        self.waiting += 1
        try:
            with anyio.move_on_after(patience.timeout_secs) as waited:
                await self.bus.publish(records, lost_reason=DropReason.ENQUEUE_TIMEOUT)
        except QueueClosed:
            self._count_lost(count)
            return Refusal.STOPPING
        except BaseException:  # cancelled by the stop's deadline: the client gets no answer
            self._count_lost(count)
            raise
        finally:
            self.waiting -= 1
        if waited.cancelled_caught:
            if self._disk_full():
                stats.dropped[DropReason.DISK_FULL] += count
                return Refusal.DISK_FULL
            stats.dropped[DropReason.ENQUEUE_TIMEOUT] += count
            return Refusal.QUEUES_FULL
        stats.sent += count
        return None

    def _count_lost(self, count: int) -> None:
        """Records read but never accepted: the stop came first (or a full disk held them)."""
        self.stats.dropped[self.bus.lost_reason(DropReason.SHUTDOWN_TIMEOUT)] += count

    def _disk_full(self) -> bool:
        """Whether a disk buffer's full disk holds records back (the dead letter's too)."""
        if self.dead_letter_queue.problem is not None:
            return True
        return any(route.queue.problem is not None for route in self.bus.routes)

    async def dead_letter(self, rejected: list[Rejection], arrival: Arrival, held: int = 0) -> None:
        """Hands rejections to the dead-letter sink, under its own when_full policy.

        A patient client waits for it at most its timeout (then counted as an error). The stop's
        deadline may cancel the wait: the `held` records of the chunk, not yet published, are
        then never accepted, and counted so."""
        if self.patience is None:
            await self._put_dead_letters(rejected, arrival)
            return
        try:
            with anyio.move_on_after(self.patience.timeout_secs) as waited:
                await self._put_dead_letters(rejected, arrival)
        except BaseException:
            self.stats.dropped[DropReason.SHUTDOWN_TIMEOUT] += held
            raise
        if waited.cancelled_caught:
            self.stats.errors["dead_letter_timeout"] += 1

    async def _put_dead_letters(self, rejected: list[Rejection], arrival: Arrival) -> None:
        origin, timestamp, received = arrival.origin, arrival.timestamp, arrival.received
        records = [dead_letter_record(r, origin, timestamp, received) for r in rejected]
        with contextlib.suppress(QueueClosed):  # the closed queue counted them as its losses
            await self.dead_letter_queue.put_many(records)


def _permitted(
    identity: Identity,
    lines: Sequence[Frame],
    first: int,
    records: list[Record],
    rejected: list[Rejection],
) -> tuple[list[Record], list[Rejection]]:
    """The records the token's allowed_schemas permit; the others become rejections."""
    allows = identity.allows
    if all(allows(record.schema_id) for record in records):
        return records, rejected
    # Records keep no line number: the accepted lines are those not rejected, in order.
    refused = {r.line for r in rejected}
    numbers = (n for n in range(first, first + len(lines)) if n not in refused)
    kept: list[Record] = []
    for record, number in zip(records, numbers, strict=False):
        if allows(record.schema_id):
            kept.append(record)
            continue
        raw = cast(bytes, lines[number - first])
        rejected.append(
            Rejection(
                Reason.SCHEMA_NOT_ALLOWED,
                f"the token of {identity.user!r} may not send schema {record.schema_id!r} "
                f"(its {identity.allowed_schemas_key})",
                raw,
                len(raw),
                number,
                record.schema_id,
                record.version,
            )
        )
    rejected.sort(key=lambda r: r.line)
    return kept, rejected
