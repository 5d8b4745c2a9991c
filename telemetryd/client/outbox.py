"""The client's bounded buffer of encoded events, kept until the daemon acknowledges them.

Events get consecutive sequence numbers (the first is 1). The buffer holds a contiguous run of
them, oldest first: those already written to the current connection and not yet acknowledged,
then those not yet written. When it is full, the oldest event is dropped (and counted), whether
or not it was written: the newest events are the ones an operator looks at after an outage.

`put` is the only method the emitting threads call; everything else runs in the client's
writer. One lock guards the counters, held for a few hundred nanoseconds.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

#: An encoded event: (head, body, tail, size). The line written is head + body + the tail,
#: where a float tail is the emit time, formatted into `,"timestamp":"…"}` only when the line
#: is written, and a bytes tail is the end of the line as it is. `size` is what the entry
#: counts against max_bytes.
Entry = tuple[bytes, bytes, float | bytes, int]

#: What an entry costs beyond its bytes: the tuple, the deque slot, the timestamp.
ENTRY_OVERHEAD_BYTES = 120


@dataclass
class OutboxStats:
    """Counts since the client started. `buffered` events are not yet acknowledged."""

    emitted: int = 0
    acknowledged: int = 0  # settled by the daemon: accepted, or rejected (counted below)
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # reason → events
    buffered: int = 0
    buffered_bytes: int = 0
    written: int = 0  # lines written to a socket, resends included
    resent: int = 0  # lines written again after a reconnect
    connects: int = 0
    connect_failures: int = 0


class Outbox:
    """Two deques: `_inflight` (written to the current connection, not yet acknowledged) and
    `_unsent`, so the writer takes and the acknowledgements settle from the left ends in O(1).
    A new connection moves the in-flight events back in front of the unsent ones."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("the client's buffer needs room for at least one event")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._inflight: deque[Entry] = deque()
        self._unsent: deque[Entry] = deque()
        #: Sequence number of the oldest event buffered (in flight, else unsent).
        self.head = 1
        self._bytes = 0
        self.emitted = 0
        self.acknowledged = 0
        self.dropped: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        #: Set by the writer while it waits for events: put() then wakes it.
        self.idle = False

    def put(self, entry: Entry) -> bool:
        """Buffers one event; True when the writer is idle and should be woken."""
        with self.lock:
            unsent = self._unsent
            unsent.append(entry)
            self._bytes += entry[3]
            self.emitted += 1
            if len(unsent) + len(self._inflight) > self.max_events or self._bytes > self.max_bytes:
                self._drop_oldest()
            return self.idle

    def _drop_oldest(self) -> None:
        dropped = 0
        inflight, unsent = self._inflight, self._unsent
        while len(inflight) + len(unsent) > 1 and (
            len(inflight) + len(unsent) > self.max_events or self._bytes > self.max_bytes
        ):
            self._bytes -= (inflight or unsent).popleft()[3]
            self.head += 1
            dropped += 1
        self.dropped["buffer_full"] = self.dropped.get("buffer_full", 0) + dropped

    def drop_all(self, reason: str) -> int:
        """Gives up on every buffered event (close() past its timeout; a forked child)."""
        with self.lock:
            count = len(self._inflight) + len(self._unsent)
            self._inflight.clear()
            self._unsent.clear()
            self._bytes = 0
            self.head += count
            if count:
                self.dropped[reason] = self.dropped.get(reason, 0) + count
            return count

    @property
    def tail(self) -> int:
        """The sequence number the next event will get."""
        return self.head + len(self._inflight) + len(self._unsent)

    def __len__(self) -> int:
        return len(self._inflight) + len(self._unsent)

    def rewind(self) -> None:
        """A new connection: what was in flight on the last one is to be written again."""
        with self.lock:
            self._unsent.extendleft(reversed(self._inflight))
            self._inflight.clear()

    def take(self, max_events: int) -> tuple[int, list[Entry]]:
        """Up to `max_events` unsent events, now in flight: the first one's number, and them."""
        with self.lock:
            first = self.head + len(self._inflight)
            unsent = self._unsent
            count = min(max_events, len(unsent))
            taken = [unsent.popleft() for _ in range(count)]
            self._inflight.extend(taken)
            return first, taken

    def settle(self, upto: int) -> int:
        """Forgets the in-flight events numbered below `upto` (acknowledged); how many."""
        with self.lock:
            inflight = self._inflight
            count = min(upto - self.head, len(inflight))
            if count <= 0:
                return 0
            freed = 0
            for _ in range(count):
                freed += inflight.popleft()[3]
            self._bytes -= freed
            self.head += count
            self.acknowledged += count
            return count

    def rest(self) -> bool:
        """Marks the writer idle unless unsent events wait; True when it may sleep (put()
        will wake it)."""
        with self.lock:
            self.idle = not self._unsent
            return self.idle

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def get(self, seq: int) -> Entry | None:
        """The in-flight event numbered `seq`, if it is still buffered."""
        with self.lock:
            index = seq - self.head
            if 0 <= index < len(self._inflight):
                return self._inflight[index]
            return None

    def stats(self) -> OutboxStats:
        with self.lock:
            return OutboxStats(
                emitted=self.emitted,
                acknowledged=self.acknowledged,
                rejected=dict(self.rejected),
                dropped=dict(self.dropped),
                buffered=len(self._inflight) + len(self._unsent),
                buffered_bytes=self._bytes,
            )
