"""The contract every source keeps with the daemon, beside the sinks' (telemetryd.sink).

A source listens, reads bytes, frames them and knows its peer; it hands each chunk to its
intake (telemetryd.delivery.intake), which validates, publishes, dead-letters and counts, and
it answers its clients in its own protocol. The daemon only starts it, stops it and reads its
counters, through this protocol: the Unix socket (telemetryd.sources.unix) and the HTTP API
(telemetryd.sources.http.server) keep it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus

from telemetryd.core.stats import ComponentStats

__all__ = ["Source"]


@runtime_checkable
class Source(Protocol):
    @property
    def stats(self) -> ComponentStats:
        """Its counters: those its intake keeps (received, sent, rejected, dropped) and its
        own errors."""
        ...

    @property
    def config_key(self) -> str:
        """The configuration key of what it listens on, named when it cannot start."""
        ...

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listens, then calls `task_status.started()`; serves until stop(), and returns once
        every connection has finished. An OSError before it started refuses the start."""
        ...

    def stop(self) -> None:
        """Stop accepting and reading; what was read is still handed on and answered."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """What it adds to its counters in the stats log line (connections, ...)."""
        ...
