"""A disk that cannot take a write (full, over quota, failing), said in words, and said once.

A full disk is a state that lasts, not an event: the disk buffer and the file sinks retry with
backoff until space returns, report the reason as their health (/readyz), and log it through
`telemetryd.logs.Throttle`, so that an hour of a full disk is a line every few seconds, not one
per event, attempt or connection.
"""

from __future__ import annotations

import errno
from os import PathLike

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
