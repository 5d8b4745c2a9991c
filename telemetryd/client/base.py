"""What the threaded and the asyncio client share: options, `emit`, rejections, backoff."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec

from telemetryd.client.encoding import LineEncoder, raw_entry
from telemetryd.client.outbox import ENTRY_OVERHEAD_BYTES, Outbox, OutboxStats
from telemetryd.client.session import Rejection, Session

log = logging.getLogger("telemetryd.client")

#: Where the systemd unit in docs/operations.md puts the socket; $TELEMETRYD_SOCKET overrides it.
DEFAULT_SOCKET: Final = "/run/telemetryd/telemetryd.sock"
SOCKET_ENV: Final = "TELEMETRYD_SOCKET"

RejectionCallback = Callable[[Rejection], None]

_time = time.time
#: Float timestamps below this (9999-12-31T23:59:59Z) are kept as floats until written; NaN,
#: negative or later ones take the checked path, which refuses what cannot be formatted.
_MAX_FLOAT_TIMESTAMP: Final = 253402300799.0
#: What encoding data can raise: msgspec's errors, and RecursionError for data that contains
#: itself. Anything else that msgspec cannot encode is written as its str(), as json.dumps(
#: default=str) would, and left to the daemon's validation to judge.
_UNENCODABLE = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


def socket_path(path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        return os.fspath(path)
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class ClientBase:
    """Options, in the units their names carry:

    - `max_buffer_events`, `max_buffer_bytes`: the buffer of events not yet acknowledged; when
      it is full the oldest event is dropped and counted (`stats().dropped["buffer_full"]`).
    - `batch_events`: events written at most in one go.
    - `linger_secs`: when the writer wakes for a new event, how long it lets more events join
      the batch before writing (0: write at once); `flush()` cuts it short.
    - `connect_timeout_secs`; `reconnect_initial_secs` and `reconnect_max_secs`: the backoff
      between attempts while the daemon is away (doubling, with jitter).
    - `on_rejected`: called in the writer with each event the daemon refused; by default
      the first refusal of each schema is logged (warning, logger `telemetryd.client`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_buffer_events: int = 100_000,
        max_buffer_bytes: int = 64 << 20,
        batch_events: int = 1024,
        linger_secs: float = 0.005,
        connect_timeout_secs: float = 5.0,
        reconnect_initial_secs: float = 0.05,
        reconnect_max_secs: float = 5.0,
        on_rejected: RejectionCallback | None = None,
    ) -> None:
        self.path = socket_path(path)
        self.batch_events = batch_events
        self.linger_secs = linger_secs
        self.connect_timeout_secs = connect_timeout_secs
        self.reconnect_initial_secs = reconnect_initial_secs
        self.reconnect_max_secs = reconnect_max_secs
        self.on_rejected = on_rejected
        self._outbox = Outbox(max_buffer_events, max_buffer_bytes)
        self._encoder = LineEncoder()
        self._heads = self._encoder.heads
        self._encode = self._encoder.encode
        self._closed = False
        self._logged_schemas: set[str | None] = set()
        self._logged_unencodable = False
        self._outage_logged = False
        self.server: str | None = None  # the daemon's name and version, once connected
        #: Why the last connection attempt failed or the last connection ended.
        self.last_error: str | None = None
        self._written = 0
        #: One past the highest sequence number written on any connection so far.
        self._written_upto = 0
        self._resent = 0
        self._connects = 0
        self._connect_failures = 0

    # -- the caller's side -------------------------------------------------------------------

    def emit(
        self,
        schema_id: str,
        version: str | int,
        data: dict[str, Any],
        timestamp: str | datetime | float | None = None,
    ) -> None:
        """Queues one event for the daemon and returns at once; never raises because of it.

        `timestamp` (RFC 3339 text, a datetime, or seconds since the epoch) defaults to now.
        Data that cannot be encoded as JSON is dropped and counted (`unencodable`), logged once.
        """
        # The common case inlined (a known head; no timestamp, or seconds since the epoch as
        # time.time() gives them, formatted by the writer): this is the caller's cost.
        head = self._heads.get((schema_id, version))
        if head is None or (
            timestamp is not None
            and not (type(timestamp) is float and 0.0 <= timestamp < _MAX_FLOAT_TIMESTAMP)
        ):
            try:
                entry = self._encoder.entry(schema_id, version, data, timestamp)
            except _UNENCODABLE as e:
                self._unencodable(schema_id, e)
                return
        else:
            try:
                body = self._encode(data)
            except _UNENCODABLE as e:
                self._unencodable(schema_id, e)
                return
            entry = (
                head,
                body,
                _time() if timestamp is None else timestamp,
                len(head) + len(body) + ENTRY_OVERHEAD_BYTES,
            )
        if self._closed:
            self._count_drop("closed")
        elif self._outbox.put(entry):
            self._wake()

    def emit_line(self, line: bytes) -> None:
        """Queues an event line already encoded as docs/events.md describes (a relay, `telemetryd
        send`); it is written as it is, and the daemon judges it."""
        if self._closed:
            self._count_drop("closed")
        elif self._outbox.put(raw_entry(line)):
            self._wake()

    def _wake(self) -> None:
        raise NotImplementedError

    def stats(self) -> OutboxStats:
        """A snapshot of the counts (emitted, acknowledged, rejected, dropped, buffered...)."""
        stats = self._outbox.stats()
        stats.written = self._written
        stats.resent = self._resent  # of connections that ended
        stats.connects = self._connects
        stats.connect_failures = self._connect_failures
        return stats

    # -- the writer's side -------------------------------------------------------------------

    def _unencodable(self, schema_id: str, error: Exception) -> None:
        self._count_drop("unencodable")
        if not self._logged_unencodable:
            self._logged_unencodable = True
            log.error(
                "telemetryd client: dropped an event of %s: its data is not JSON (%s); "
                "further ones are counted, not logged",
                schema_id,
                error,
            )

    def _count_drop(self, reason: str) -> None:
        outbox = self._outbox
        with outbox.lock:
            outbox.dropped[reason] = outbox.dropped.get(reason, 0) + 1

    def _rejected(self, rejections: list[Rejection]) -> None:
        callback = self.on_rejected
        for rejection in rejections:
            if callback is not None:
                try:
                    callback(rejection)
                except Exception:
                    log.exception("telemetryd client: on_rejected failed")
            elif rejection.schema_id not in self._logged_schemas:
                self._logged_schemas.add(rejection.schema_id)
                log.warning(
                    "telemetryd rejected an event of %s: %s: %s (further rejections of this "
                    "schema are counted in stats(), not logged)",
                    rejection.schema_id or "(an event no longer buffered)",
                    rejection.reason,
                    rejection.message,
                )

    def _session(self) -> Session:
        return Session(
            self._outbox, batch_events=self.batch_events, written_upto=self._written_upto
        )

    def _connected(self, session: Session) -> None:
        self.server = session.server
        self._connects += 1
        if self._outage_logged:
            self._outage_logged = False
            outbox = self._outbox
            log.warning(
                "telemetryd client: connected again to %s at %s; %d events buffered, %d of "
                "them written before and not acknowledged, written again",
                session.server,
                self.path,
                len(outbox),
                max(0, self._written_upto - outbox.head),
            )

    def _disconnected(self, session: Session | None, error: BaseException) -> None:
        """After a failed attempt (session None) or the end of a connection."""
        if session is not None:
            self._written_upto = max(self._written_upto, session.next_seq)
            self._resent += session.resent
        if session is None or not session.greeted:
            self._connect_failures += 1
        self.last_error = str(error)
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "telemetryd client: %s telemetryd at %s (%s); buffering up to %d events and "
                "retrying",
                "lost the connection to"
                if session is not None and session.greeted
                else "cannot reach",
                self.path,
                error,
                self._outbox.max_events,
            )

    def _backoff(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures: doubling, equal jitter."""
        ceiling = min(
            self.reconnect_max_secs, self.reconnect_initial_secs * (1 << min(failures, 30))
        )
        return ceiling / 2 + random.uniform(0, ceiling / 2)
