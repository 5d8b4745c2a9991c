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
    def __init__(self, max_events: int, max_bytes: int) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("the client's buffer needs room for at least one event")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._entries: deque[Entry] = deque()
        #: Sequence number of _entries[0]; the next event put gets head + len(_entries).
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
            entries = self._entries
            entries.append(entry)
            self._bytes += entry[3]
            self.emitted += 1
            if len(entries) > self.max_events or self._bytes > self.max_bytes:
                self._drop_oldest()
            return self.idle

    def _drop_oldest(self) -> None:
        dropped = 0
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_events or self._bytes > self.max_bytes
        ):
            self._bytes -= self._entries.popleft()[3]
            self.head += 1
            dropped += 1
        self.dropped["buffer_full"] = self.dropped.get("buffer_full", 0) + dropped

    def drop_all(self, reason: str) -> int:
        """Gives up on every buffered event (close() past its timeout; a forked child)."""
        with self.lock:
            count = len(self._entries)
            self._entries.clear()
            self._bytes = 0
            self.head += count
            if count:
                self.dropped[reason] = self.dropped.get(reason, 0) + count
            return count

    @property
    def tail(self) -> int:
        """The sequence number the next event will get."""
        return self.head + len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def settle(self, upto: int) -> int:
        """Forgets the events numbered below `upto` (acknowledged); returns how many."""
        with self.lock:
            count = min(upto - self.head, len(self._entries))
            if count <= 0:
                return 0
            entries = self._entries
            freed = 0
            for _ in range(count):
                freed += entries.popleft()[3]
            self._bytes -= freed
            self.head += count
            self.acknowledged += count
            return count

    def rest(self, written_upto: int) -> bool:
        """Marks the writer idle unless events from `written_upto` on are waiting; True when
        it may sleep (put() will wake it)."""
        with self.lock:
            self.idle = self.head + len(self._entries) <= written_upto
            return self.idle

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def get(self, seq: int) -> Entry | None:
        """The buffered event numbered `seq`, if it is still here."""
        with self.lock:
            index = seq - self.head
            if 0 <= index < len(self._entries):
                return self._entries[index]
            return None

    def take(self, start: int, max_events: int) -> tuple[int, list[Entry]]:
        """Up to `max_events` events from number `start` on (or from the oldest, if `start`
        was dropped): the first one's number and the entries."""
        with self.lock:
            first = max(start, self.head)
            index = first - self.head
            entries = self._entries
            stop = min(len(entries), index + max_events)
            # A deque slices no faster than this; the events taken are near its left end
            # unless the daemon lags far behind.
            return first, [entries[i] for i in range(index, stop)]

    def stats(self) -> OutboxStats:
        with self.lock:
            return OutboxStats(
                emitted=self.emitted,
                acknowledged=self.acknowledged,
                rejected=dict(self.rejected),
                dropped=dict(self.dropped),
                buffered=len(self._entries),
                buffered_bytes=self._bytes,
            )
