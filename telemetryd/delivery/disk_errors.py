"""A disk that cannot take a write (full, over quota, failing), said in words, and said once.

A full disk is a state that lasts, not an event: the disk buffer and the file sinks retry with
backoff until space returns, report the reason as their health (/readyz), and log it through a
`Throttle`, so that an hour of a full disk is a line every LOG_INTERVAL_SECS, not one per event,
attempt or connection.
"""

from __future__ import annotations

import errno
import time
from os import PathLike

#: How often a problem that lasts is logged again (with the count of what happened meanwhile).
LOG_INTERVAL_SECS = 10.0

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def describe(exc: OSError, path: str | PathLike[str], doing: str = "writing") -> str:
    """What went wrong `doing` (writing, reading, creating) `path`, e.g. "disk full: No space
    left on device writing /var/buffer/archive/00000003.seg"."""
    what = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return f"disk full: {what} {doing} {path}"
    if exc.errno == errno.EIO:
        return f"disk error: {what} {doing} {path}"
    verb = {"writing": "write", "creating": "create"}.get(doing, doing.removesuffix("ing"))
    return f"cannot {verb}: {what} {doing} {path}"


class Throttle:
    """Says when a repeated message is due: the first time, then at most once per
    `interval_secs`, whether the problem ended in between or not (one that comes and goes
    must not be said each time); `due()` returns how many were held back meanwhile."""

    def __init__(self, interval_secs: float = LOG_INTERVAL_SECS) -> None:
        self.interval_secs = interval_secs
        self._last = -float("inf")
        self._held = 0
        self._said = False

    def due(self) -> int | None:
        """None: stay quiet (counted); else the number held back since the last message."""
        now = time.monotonic()
        if now - self._last < self.interval_secs:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        self._said = True
        return held

    def ended(self) -> bool:
        """The problem is over: True if a message said it since the last end (then its end
        is worth saying too)."""
        said, self._said = self._said, False
        return said
