"""A sink's queue kept on disk (`buffer = "disk"`): the SinkQueue contract over a DiskLog.

Every record put is appended to the sink's log before `put_many` returns, and (with
`buffer_fsync = "batch"`, the default) fsynced: an event a source acknowledges is on disk for
every sink with a disk buffer. The worker takes batches read back from the log, and a commit
moves the log's cursor past them, so after a crash or a SIGKILL the daemon delivers, from the
cursor on, everything not yet delivered: at least once (a batch in flight at the crash is
delivered again).

Bounded by `buffer_max_bytes` of undelivered records on disk; beyond it `when_full` applies as
for a memory queue (block, drop_newest, drop_oldest). Memory holds only the batch in flight.
At shutdown nothing is abandoned: what was not delivered stays on disk for the next start.

A full disk (or one that fails writes) is backpressure, not an error: with `block`, a put waits
and retries the write with backoff (DISK_RETRY_*), so its events are acknowledged once they are
on disk and not before; with `drop_newest` or `drop_oldest` what cannot be written is dropped
and counted as `disk_full`. Meanwhile `problem` says why (the sink's /readyz detail), the log
says it once per interval, and once everything is delivered the log starts a new segment to
free the space it took. A buffer the full disk has no room to create (its directory, lock or
first segment) is the same: the daemon starts, and puts (and the idle worker) create it once
there is room; any other error opening it still refuses the start.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio

from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.disk_errors import describe
from telemetryd.delivery.disk_log import DiskLog, Frame, Position, encode_frame
from telemetryd.delivery.sink_queue import QueueClosed, QueueSignals, QueueStatistics
from telemetryd.logs import Throttle
from telemetryd.sink import WhenFull

log = logging.getLogger("telemetryd.disk_buffer")

Fsync = Literal["batch", "never"]

#: Backoff of a write the disk refused: cheap to retry, and space may return any moment.
DISK_RETRY_INITIAL_SECS = 0.05
DISK_RETRY_MAX_SECS = 1.0

_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(slots=True)
class _Taken:
    events: int
    size: int
    after: Position  # the read position after the batch
    done: bool = False


class DiskQueue(QueueSignals):
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: Fsync,
        when_full: WhenFull,
        stats: ComponentStats,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_events = 0  # no limit in events: bytes on disk bound it
        self.when_full = when_full
        self.fsync = fsync
        self.stats = stats
        self.segment_bytes = segment_bytes
        self._events = 0  # undelivered, in flight included
        self._bytes = 0
        self._read = Position(1, 0)  # where the next take() reads
        # Batches taken, by id() of the list take returned, in the order taken; the cursor
        # advances over the delivered ones at the front only, so a crash redelivers (at least
        # once) whatever a batch still in flight ahead of them held.
        self._inflight: dict[int, _Taken] = {}
        super().__init__()
        self._disk_log = Throttle()
        self._read_log = Throttle()
        self._disk_retry_secs = DISK_RETRY_INITIAL_SECS
        self._disk_trouble_since = 0.0
        self.recovered = 0
        #: None until the disk had room to create the buffer; with records, never None.
        self._log: DiskLog | None = None
        self._open_log(at_start=True)

    @property
    def log(self) -> DiskLog:
        """The open log: wherever records are (written, taken, delivered), it is open."""
        if self._log is None:
            raise RuntimeError(f"the disk buffer {self.directory} is not created yet")
        return self._log

    def _open_log(self, *, at_start: bool = False) -> bool:
        """Opens (creates) the log if not yet open; False if the disk has no room for it yet
        (`problem` says why). At start, only a full disk is worth starting without it: any
        other error (a lock held, permissions) is the configuration's, and refuses the start;
        later, with the daemon running, every error is retried like a full disk's."""
        if self._log is not None:
            return True
        try:
            opened = DiskLog(self.directory, self.segment_bytes)
        except OSError as exc:
            if at_start and exc.errno not in _FULL:  # BufferLocked has no errno
                raise
            self._disk_trouble(exc, "creating", self.directory)
            return False
        self._log = opened
        self._read = opened.cursor
        self.recovered = self._recover()
        if self.problem is not None:
            self._disk_recovered()
        self._wake(room=True)  # opened by the idle worker: putters held back need not wait
        return True

    def _recover(self) -> int:
        """Counts what the log holds after the cursor; cuts a torn tail. Blocking, at open."""
        cut = self.log.truncate_torn_tail()
        events = size = damaged = 0
        for frames, skipped in self.log.scan(self.log.cursor):
            events += len(frames)
            size += sum(f.size for f in frames)
            damaged += skipped
        self._events, self._bytes = events, size
        self.stats.received += events  # received = sent + dropped + queued holds across starts
        if cut or damaged:
            self.stats.errors["disk_damaged_bytes"] += cut + damaged
            log.error(
                "disk buffer damaged; skipped what does not check",
                extra={
                    "fields": {
                        "buffer": str(self.directory),
                        "torn_tail_bytes": cut,
                        "damaged_bytes": damaged,
                    }
                },
            )
        if events:
            log.info(
                "disk buffer recovered",
                extra={"fields": {"buffer": str(self.directory), "events": events, "bytes": size}},
            )
        return events

    # -- producers ---------------------------------------------------------------------------

    async def put_many(
        self, records: Sequence[Record], *, lost_reason: str = DropReason.SHUTDOWN_TIMEOUT
    ) -> None:
        if self._closed:
            self.count_lost(len(records))
            raise QueueClosed
        frames = [encode_frame(r.schema_id, r.version, r.payload) for r in records]
        if self.when_full == "block":
            await self._put_blocking(frames, lost_reason)
            return
        if self.when_full == "drop_oldest":
            self._evict_for(sum(map(len, frames)))
        end = self._fits(frames, 0)
        if end < len(frames):
            self.stats.received += len(frames) - end
            self.stats.dropped[DropReason.QUEUE_FULL] += len(frames) - end
        if end:
            written = self._write(frames[:end])
            if written < end:  # the disk refused them: as for a full queue, the policy drops them
                self.stats.received += end - written
                self.stats.dropped[DropReason.DISK_FULL] += end - written
            if written:
                await self._sync()
        self._wake(ready=True)

    async def _put_blocking(self, frames: Sequence[bytes], lost_reason: str) -> None:
        start = 0
        waiting_for_disk = False
        try:
            while start < len(frames):
                end = self._fits(frames, start)
                if end == start:
                    await self._wait_as_putter(math.inf)
                    continue
                written = self._write(frames[start:end])
                if not written:
                    waiting_for_disk = True
                    await self._wait_as_putter(self._disk_retry_secs)
                    self._disk_retry_secs = min(self._disk_retry_secs * 2, DISK_RETRY_MAX_SECS)
                    continue
                waiting_for_disk = False
                start += written
                await self._sync()
        except BaseException:
            # Never written: a full disk's losses are the disk's, whatever stopped the wait.
            self.count_lost(
                len(frames) - start, DropReason.DISK_FULL if waiting_for_disk else lost_reason
            )
            raise
        self._wake(ready=True)

    async def _wait_as_putter(self, at_most_secs: float) -> None:
        """Waits for room (a commit) or, with a timeout, for the next try at the disk."""
        self._wake(ready=True)  # a putter must not wait while the worker sleeps
        self._waiting_putters += 1
        try:
            with anyio.move_on_after(at_most_secs):
                await self._wait("_room")
        finally:
            self._waiting_putters -= 1
        if self._closed:
            raise QueueClosed

    def _fits(self, frames: Sequence[bytes], start: int) -> int:
        total = self._bytes
        end = start
        while end < len(frames):
            size = len(frames[end])
            if total + size > self.max_bytes and not (total == 0 and end == start):
                break
            total += size
            end += 1
        return end

    def _write(self, frames: Sequence[bytes]) -> int:
        """Appends as many of `frames` (in order) as the disk takes; how many. 0: it took none
        (`problem` says why), and nothing of them was written."""
        if not self._open_log():
            return 0
        count = len(frames)
        while True:
            data = b"".join(frames[:count])
            try:
                self.log.append(data)
            except OSError as exc:
                if self._reclaim():
                    continue  # the space the buffer itself held is back
                if count > 1:
                    # The space left may take a part: a put must not wait for more room than
                    # the disk may ever have (the buffer frees its own only once delivered).
                    count //= 2
                    continue
                self._disk_trouble(exc)
                return 0
            break
        self._events += count
        self._bytes += len(data)
        self.stats.received += count
        if self.problem is not None:
            self._disk_recovered()
        return count

    async def _sync(self) -> None:
        """fsync (with `buffer_fsync = "batch"`), retried until it succeeds: the put (and so
        the source's acknowledgement) waits for it, so an acknowledged event is on the disk."""
        if self.fsync != "batch":
            return
        delay = DISK_RETRY_INITIAL_SECS
        while True:
            try:
                # Off the event loop: an fsync takes milliseconds.
                await anyio.to_thread.run_sync(self.log.fsync)
            except OSError as exc:
                self._disk_trouble(exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, DISK_RETRY_MAX_SECS)
                continue
            if self.problem is not None:
                self._disk_recovered()
            return

    def _reclaim(self) -> bool:
        """With nothing undelivered, frees the delivered segment the log is writing to."""
        if self._events or self._inflight or not self.log.reclaim():
            return False
        self._read = self.log.cursor
        return True

    def _disk_trouble(self, exc: OSError, doing: str = "writing", path: Path | None = None) -> None:
        """The disk refused a write: say why (health), and in the log once per interval."""
        if self.problem is None:
            self._disk_trouble_since = time.monotonic()
        self.problem = describe(exc, path or self.log.write_path, doing)
        self.stats.errors["disk_full" if exc.errno in _FULL else "disk_error"] += 1
        held = self._disk_log.due()
        if held is not None:
            log.error(
                "disk buffer cannot write; holding events back until there is space"
                if self.when_full == "block"
                else "disk buffer cannot write; dropping what does not fit",
                extra={
                    "fields": {
                        "buffer": str(self.directory),
                        "error": self.problem,
                        "when_full": self.when_full,
                        "failures_not_logged": held,
                    }
                },
            )

    def _disk_recovered(self) -> None:
        if self._disk_log.ended():
            log.info(
                "disk buffer writable again",
                extra={
                    "fields": {
                        "buffer": str(self.directory),
                        "after_secs": round(time.monotonic() - self._disk_trouble_since, 3),
                    }
                },
            )
        self.problem = None
        self._disk_retry_secs = DISK_RETRY_INITIAL_SECS

    def _evict_for(self, size: int) -> None:
        """drop_oldest: skips the oldest undelivered records (not the batch in flight) until
        `size` more bytes fit."""
        if self._log is None:
            return  # nothing written yet, nothing to evict
        evicted = 0
        while self._bytes + size > self.max_bytes and self._read < self.log.end:
            start = self._read
            frames, after, skipped = self.log.read(start, 64 << 10)
            if skipped:
                self._damaged(skipped)
            if not frames:
                if after == start:
                    break
                self._read = after
                continue
            for frame in frames:
                self._events -= 1
                self._bytes -= frame.size
                evicted += 1
                self._read = self.log.frame_end(frame)
                if self._bytes + size <= self.max_bytes:
                    break
            else:
                self._read = after
        if evicted:
            self.stats.dropped[DropReason.EVICTED_OLDEST] += evicted
            if not self._inflight:
                self.log.commit(self._read)

    # -- the worker --------------------------------------------------------------------------

    async def take(self, max_events: int, max_bytes: int, max_delay_secs: float) -> list[Record]:
        while self._events - self._inflight_events() <= 0:
            if self._closed:
                return []
            if self._log is None:
                # Not created yet (a full disk at start): the idle worker retries, so that the
                # sink is healthy again once there is room even if no put comes to try.
                with anyio.move_on_after(self._disk_retry_secs):
                    await self._wait("_ready")
                if not self._open_log():
                    self._disk_retry_secs = min(self._disk_retry_secs * 2, DISK_RETRY_MAX_SECS)
                continue
            await self._wait("_ready")
        if self._events - self._inflight_events() < max_events and max_delay_secs > 0:
            with anyio.move_on_after(max_delay_secs):
                while (
                    self._events - self._inflight_events() < max_events
                    and not self._closed
                    and not self._waiting_putters
                ):
                    await self._wait("_ready")
        frames, after = await self._read_batch_retrying(max_events, max_bytes)
        self._read = after
        now = time.monotonic()
        batch = [Record(f.schema_id, f.version, f.payload, now) for f in frames]
        if batch:
            self._inflight[id(batch)] = _Taken(len(frames), sum(f.size for f in frames), after)
        return batch

    def has_full_batch(self, max_events: int, max_bytes: int) -> bool:
        events, size = self._in_flight()
        return self._events - events >= max_events or self._bytes - size >= max_bytes

    def _inflight_events(self) -> int:
        return self._in_flight()[0]

    def _in_flight(self) -> tuple[int, int]:
        """Events and bytes of the batches taken and not yet delivered."""
        pending = [t for t in self._inflight.values() if not t.done]
        return sum(t.events for t in pending), sum(t.size for t in pending)

    async def _read_batch_retrying(
        self, max_events: int, max_bytes: int
    ) -> tuple[list[Frame], Position]:
        """_read_batch, retried with backoff while the disk fails the read (EIO): delivery
        waits, the daemon goes on, and `problem` says why."""
        delay = DISK_RETRY_INITIAL_SECS
        while True:
            try:
                read = self._read_batch(max_events, max_bytes)
            except OSError as exc:
                self.problem = describe(exc, self.directory, "reading")
                self.stats.errors["disk_read_error"] += 1
                held = self._read_log.due()
                if held is not None:
                    log.error(
                        "disk buffer cannot read; delivery waits and retries",
                        extra={
                            "fields": {
                                "buffer": str(self.directory),
                                "error": self.problem,
                                "failures_not_logged": held,
                            }
                        },
                    )
                await anyio.sleep(delay)
                delay = min(delay * 2, DISK_RETRY_MAX_SECS)
                continue
            if delay > DISK_RETRY_INITIAL_SECS:  # it failed before
                self.problem = None
            return read

    def _read_batch(self, max_events: int, max_bytes: int) -> tuple[list[Frame], Position]:
        frames: list[Frame] = []
        size = 0
        position = self._read
        while len(frames) < max_events and size < max_bytes and position < self.log.end:
            room = max_events - len(frames)
            got, after, skipped = self.log.read(
                position, min(max(1, max_bytes - size), room * self._mean_frame_bytes()), room
            )
            if skipped:
                self._damaged(skipped)
            if not got:
                if after == position:
                    break
                position = after  # past damage, or into the next segment
                continue
            frames.extend(got)
            size += sum(f.size for f in got)
            position = after
        return frames, position

    def _mean_frame_bytes(self) -> int:
        """What a read of n frames should fetch: n times the mean frame, and some more."""
        return self._bytes // self._events + 64 if self._events else 1024

    def _damaged(self, skipped: int) -> None:
        self.stats.errors["disk_damaged_bytes"] += skipped
        log.error(
            "disk buffer damaged; skipped what does not check",
            extra={"fields": {"buffer": str(self.directory), "damaged_bytes": skipped}},
        )

    def commit(self, batch: Sequence[Record] | None = None) -> None:
        """`batch` (by default the oldest batch in flight) is delivered."""
        if batch is None:
            key = next((k for k, t in self._inflight.items() if not t.done), None)
        else:
            key = id(batch)
        taken = self._inflight.get(key) if key is not None else None
        if taken is None or taken.done:
            return
        taken.done = True
        self.stats.sent += taken.events
        self._events -= taken.events
        self._bytes -= taken.size
        if self._events <= 0:
            self._events = self._bytes = 0
        delivered_to: Position | None = None
        while self._inflight:
            first = next(iter(self._inflight))
            if not self._inflight[first].done:
                break
            delivered_to = self._inflight.pop(first).after
        if delivered_to is not None:
            # With nothing left in flight, up to the read position: records evicted past the
            # batches (drop_oldest) are done with too.
            self.log.commit(delivered_to if self._inflight else self._read)
        self._wake(room=True)

    def abandon(self, reason: str = DropReason.SHUTDOWN_TIMEOUT) -> int:
        """Shutdown timeout: nothing is dropped, the rest waits on disk for the next start."""
        left = self._events
        if left:
            log.warning(
                "disk buffer keeps undelivered events for the next start",
                extra={"fields": {"buffer": str(self.directory), "events": left}},
            )
        self._wake(room=True)
        return 0

    def shutdown(self) -> None:
        if self._log is not None:
            self._log.close()

    # -- state -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._events

    def statistics(self) -> QueueStatistics:
        inflight_events, inflight_bytes = self._in_flight()
        return QueueStatistics(
            queued_events=self._events - inflight_events,
            queued_bytes=self._bytes - inflight_bytes,
            inflight_events=inflight_events,
            max_events=self.max_events,
            max_bytes=self.max_bytes,
            waiting_putters=self._waiting_putters,
        )
