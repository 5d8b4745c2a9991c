"""Accepting connections, shared by the socket and HTTP sources."""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

import anyio

from telemetryd.core.stats import ComponentStats

#: Pause after a failed accept (EMFILE and its kind) before trying again.
ACCEPT_RETRY_SECS = 0.1

log = logging.getLogger("telemetryd.accept")

T_co = TypeVar("T_co", covariant=True)


class Accepting(Protocol[T_co]):
    async def accept(self) -> T_co: ...


async def accept_or_pause(listener: Accepting[T_co], stats: ComponentStats) -> T_co | None:
    """The next connection, or None after a failed accept: running out of descriptors must
    not stop the source; the clients already connected go on, and accepting resumes later."""
    try:
        return await listener.accept()
    except OSError as e:
        stats.errors["accept"] += 1
        log.warning("accept failed", extra={"fields": {"source": stats.name, "error": str(e)}})
        await anyio.sleep(ACCEPT_RETRY_SECS)
        return None
