"""The contract every sink implements, and the settings every sink shares.

A sink is deliberately small: it is constructed with its validated settings, started once,
handed batches, asked for its health and closed. Everything else (queueing, batching, retries
with backoff, routing, drop policies, counting) belongs to the sink worker that drives it, so
a plugin author writes only the part that talks to the destination.

This module is the plugin API: the core drives sinks through it and never imports a sink;
plugins (the shipped ones in sinks/, third-party ones) import it as `telemetryd.sink`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from telemetryd.core.record import Record
from telemetryd.delivery.routing import Rule

# Record is re-exported: a plugin needs nothing but this module.
__all__ = [
    "PartialDelivery",
    "Record",
    "RetryLater",
    "Sink",
    "SinkHealth",
    "SinkSettings",
    "WhenFull",
]

WhenFull = Literal["block", "drop_newest", "drop_oldest"]


class SinkSettings(BaseModel):
    """Settings every sink accepts; a sink's own model subclasses this and adds its keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique name, used in logs and metrics.")
    type: str = Field(description="The sink plugin, by its entry-point name.")
    when_full: WhenFull = Field(
        "block",
        description="What to do when the queue is full: push back on ingestion (block), "
        "drop the incoming event (drop_newest) or evict the oldest queued one (drop_oldest).",
    )
    buffer: Literal["memory", "disk"] = Field(
        "memory",
        description="Where queued events are kept: in memory (lost if the daemon crashes) or "
        "on disk (a segmented, checksummed log that survives a crash and a restart).",
    )
    buffer_path: str | None = Field(
        None,
        description='The disk buffer\'s directory; default "var/buffer/<sink name>" (relative '
        "to the daemon's working directory, as other relative paths).",
    )
    buffer_max_bytes: int = Field(
        1 << 30, gt=0, description="The disk buffer's limit: undelivered records, in bytes."
    )
    buffer_segment_bytes: int = Field(
        16 << 20, gt=0, description="Size at which the disk buffer starts a new segment file."
    )
    buffer_fsync: Literal["batch", "never"] = Field(
        "batch",
        description="batch: fsync each write before the events are acknowledged (survives a "
        "power loss); never: leave it to the OS (survives a crash of the daemon, not of the "
        "machine).",
    )
    # A memory queue absorbs bursts and short outages; longer ones are the disk buffer's job.
    # At these limits a queue costs at most some 10-35 MB of the daemon's memory (a record
    # is its payload plus about 110 B of Python objects), and backpressure starts within a second
    # of a sink stopping at full load, or after 20 s at 1,000 events/s.
    queue_max_events: int = Field(20_000, gt=0, description="Queue limit, in events.")
    queue_max_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Queue limit, in bytes.")
    batch_max_events: int = Field(1_000, gt=0, description="Most events handed over at once.")
    batches_in_flight: int = Field(
        1,
        ge=1,
        le=64,
        description="Batches handed to the sink at once, each retried on its own, so the next "
        "is on its way while the destination answers the last (sinks that allow it: http, "
        "postgres). Records of different batches may then arrive out of order; with a disk "
        "buffer, a crash redelivers any batch behind one still in flight.",
    )
    batch_max_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Most bytes in one batch.")
    batch_max_delay_secs: float = Field(
        0.05, ge=0, description="How long a partial batch waits for more events."
    )
    retry_initial_secs: float = Field(0.1, gt=0, description="First retry delay after a failure.")
    retry_max_secs: float = Field(30.0, gt=0, description="Cap of the exponential retry delay.")
    include: list[Rule] = Field(
        default_factory=list,
        description="What this sink receives: schema id globs, or {schema, versions} tables; "
        "empty means every schema.",
    )
    exclude: list[Rule] = Field(
        default_factory=list,
        description="What this sink never receives: schema id globs, or {schema, versions} tables.",
    )


class RetryLater(Exception):
    """Raised by write_batch when the destination asked to be retried later (HTTP 429 or 503
    with Retry-After, a server's own backpressure): the worker waits at least
    `retry_after_secs` before the next attempt, instead of its backoff if that is shorter."""

    def __init__(self, message: str, retry_after_secs: float) -> None:
        super().__init__(message)
        self.retry_after_secs = max(0.0, retry_after_secs)


class PartialDelivery(Exception):
    """Raised by write_batch when part of the batch landed and the rest did not.

    `remaining` are the records that did not land (taken from the batch, in its order);
    `cause` is the error that stopped them. The worker retries only `remaining`, with the same
    backoff as after any failure, so what landed is not written twice; once they land, the
    whole batch is delivered. A sink that cannot tell what landed raises the error itself, and
    the whole batch is retried.
    """

    def __init__(self, remaining: Sequence[Record], cause: BaseException) -> None:
        super().__init__(f"{len(remaining)} records not delivered: {_describe(cause)}")
        self.remaining = remaining
        self.cause = cause


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass(frozen=True)
class SinkHealth:
    healthy: bool
    detail: str = ""


class Sink(ABC):
    """One destination for records. Subclasses set `settings_model` to their settings class."""

    settings_model: ClassVar[type[SinkSettings]] = SinkSettings
    #: Whether write_batch may run for several batches at once (`batches_in_flight` > 1).
    concurrent_batches: ClassVar[bool] = False

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name

    async def start(self) -> None:  # noqa: B027 - a sink with nothing to open needs no start
        """Open files or connections. An exception here stops the daemon from starting."""

    @abstractmethod
    async def write_batch(self, batch: Sequence[Record]) -> None:
        """Deliver every record of `batch`, or raise; the worker then retries the batch.

        Returning means the batch is delivered (durably, as far as the sink's settings say):
        the worker then forgets it. Raising any exception but PartialDelivery means nothing of
        it is known to have landed: the worker hands the whole batch over again, after its
        backoff. Raising `PartialDelivery(remaining, cause)` says that every record but
        `remaining` landed: the worker hands over only `remaining` (a new, shorter batch) at
        the next attempt. At least once: a record may be handed over again after a failure
        that happened after it was written, but a sink that knows what landed (a record
        acknowledged on its own, a destination split over several servers) should say so, so
        that a failure of one part of the destination does not duplicate the others.
        """

    def health(self) -> SinkHealth:
        return SinkHealth(True)

    async def close(self) -> None:  # noqa: B027 - a sink with nothing to close needs no close
        """Flush and release resources; called once, after the last write_batch."""
