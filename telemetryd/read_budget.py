"""The read budget: how many bytes all connections together may hold between reading them and
handing their records to the bus.

A connection takes its share before it reads and reads at most that much; it gives the share
back once the records are published or rejected. While sinks push back, connections blocked on
the bus keep their shares, so the budget, not the number of clients, bounds what they hold.
When the budget is spent, connections wait for it in arrival order (first come, first served),
and a share is never smaller than `min_share` (or what was asked): each waiter is served in turn
with a read worth making, and none waits forever while the bus moves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio


@dataclass(eq=False)
class _Waiter:
    want: int
    granted: int = 0
    event: anyio.Event = field(default_factory=anyio.Event)


class ReadBudget:
    def __init__(self, total: int, min_share: int) -> None:
        if total <= 0 or min_share <= 0:
            raise ValueError("a read budget needs a positive total and share")
        self.total = total
        self.min_share = min(min_share, total)
        self.available = total
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """Connections waiting for a share."""
        return len(self._waiters)

    def take_nowait(self, want: int) -> int:
        """A share of up to `want` bytes, or 0 when the budget is spent or others wait first."""
        if self._waiters:
            return 0
        return self._grant(want)

    async def take(self, want: int) -> int:
        """A share of up to `want` bytes, waiting in line for it while the budget is spent."""
        granted = self.take_nowait(want)
        if granted:
            return granted
        waiter = _Waiter(want)
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # granted while being cancelled: not ours to keep
                self.give_back(waiter.granted)
            else:
                self._waiters.remove(waiter)
                self._serve()  # the head may have left: the next may fit
            raise
        return waiter.granted

    def give_back(self, size: int) -> None:
        if size:
            self.available += size
            self._serve()

    def _grant(self, want: int) -> int:
        if self.available < min(want, self.min_share):
            return 0
        granted = min(want, self.available)
        self.available -= granted
        return granted

    def _serve(self) -> None:
        """Hands what is available to the waiters, in order, stopping at the first that does not
        fit: nobody overtakes a connection that waits longer."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            granted = self._grant(waiter.want)
            if not granted:
                return
            waiters.popleft()
            waiter.granted = granted
            waiter.event.set()
