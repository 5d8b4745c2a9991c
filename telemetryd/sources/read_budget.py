"""The read budget: how many bytes all connections together may hold between reading them and
handing their records to the bus.

A socket connection takes its share before it reads and reads at most that much; an HTTP
request takes its body's size before turning it into records. Each gives its share back once the
records are published or rejected. While sinks push back, connections blocked on the bus keep
their shares, so the budget, not the number of clients, bounds what they hold. When the budget
is spent, they wait for it in arrival order (first come, first served), and a socket's share is
never smaller than `min_share` (or what it asked): each waiter is served in turn with a read
worth making, and none waits forever while the bus moves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio


@dataclass(eq=False)
class _Waiter:
    want: int
    least: int  # the smallest share worth having
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

    def take_nowait(self, want: int, *, whole: bool = False) -> int:
        """A share of up to `want` bytes (all of them if `whole`, or all of the budget if it is
        smaller), or 0 when the budget is spent or others wait first."""
        if self._waiters:
            return 0
        return self._grant(want, self._least(want, whole))

    async def take(self, want: int, *, whole: bool = False) -> int:
        """A share as take_nowait's, waiting in line for it while the budget is spent."""
        if want <= 0:
            return 0
        granted = self.take_nowait(want, whole=whole)
        if granted:
            return granted
        waiter = _Waiter(want, self._least(want, whole))
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

    def _least(self, want: int, whole: bool) -> int:
        return min(want, self.total if whole else self.min_share)

    def _grant(self, want: int, least: int) -> int:
        if self.available < least:
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
            granted = self._grant(waiter.want, waiter.least)
            if not granted:
                return
            waiters.popleft()
            waiter.granted = granted
            waiter.event.set()
