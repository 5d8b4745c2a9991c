"""Why an event did not get through: one vocabulary for the whole daemon.

Two kinds, counted apart in every component's stats (telemetryd.core.stats) and in the metrics'
`reason` labels:

- `Reason`: an input was rejected (bad input): it is answered to the client with the reason,
  counted in `rejected`, and kept by the dead-letter sink.
- `DropReason`: a good event was dropped, counted in `dropped`. `intended` says whether the
  configuration chose the drop (a `drop_newest`/`drop_oldest` queue, a bounded subscriber, a
  request refused with 429/503 so that its client retries) or the event was lost.

The values are the daemon's public vocabulary (logs, metrics, the HTTP and socket replies, the
dead-letter records): they never change. Every module counts with these members; none keeps
a reason string of its own.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an input was rejected."""

    EMPTY_LINE = "empty_line"
    LINE_TOO_LONG = "line_too_long"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNKNOWN_SCHEMA = "unknown_schema"
    UNKNOWN_VERSION = "unknown_version"
    SCHEMA_NOT_ALLOWED = "schema_not_allowed"
    INVALID_DATA = "invalid_data"
    RESERVED_FIELD = "reserved_field"
    INVALID_PIONEER = "invalid_pioneer"  # POST /api/pioneer: not a remote_exporter body


class DropReason(StrEnum):
    """Why a good event was dropped."""

    QUEUE_FULL = "queue_full"  # when_full = "drop_newest" (or a disk buffer's limit)
    EVICTED_OLDEST = "evicted_oldest"  # when_full = "drop_oldest"
    SUBSCRIBER_QUEUE_FULL = "subscriber_queue_full"  # a live subscriber too slow to keep up
    SUBSCRIBER_CLOSED = "subscriber_closed"  # waiting for a subscriber that left (or the stop)
    TOO_MANY_WAITING = "too_many_waiting"  # HTTP 429: http_max_waiting_requests
    ENQUEUE_TIMEOUT = "enqueue_timeout"  # HTTP 503: http_enqueue_timeout_secs
    SHUTDOWN_TIMEOUT = "shutdown_timeout"  # the stop's deadline came first
    DISK_DAMAGED = "disk_damaged"  # a disk buffer's records that did not check
    DISK_FULL = "disk_full"  # the disk refused a disk buffer's write (full, quota, failing)

    @property
    def intended(self) -> bool:
        """Whether the configuration chose this drop, rather than an event being lost."""
        return self in _INTENDED


_INTENDED = frozenset(
    {
        DropReason.QUEUE_FULL,
        DropReason.EVICTED_OLDEST,
        DropReason.SUBSCRIBER_QUEUE_FULL,
        DropReason.SUBSCRIBER_CLOSED,  # live views are best effort: the sinks have every record
        DropReason.TOO_MANY_WAITING,
        DropReason.ENQUEUE_TIMEOUT,
    }
)
