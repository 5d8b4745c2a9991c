"""Load processes that emit through telemetryd's client library, timing every call in the
caller's thread: what an application pays per event.

    client                 telemetryd.client.Client.emit
    jupyter_events_handler jupyter_events' EventLogger.emit with a TelemetrydHandler as its
                           only handler (jupyter_events still validates in-process)
    jupyter_server_fast    the same EventLogger with the fast path the Jupyter Server
                           extension installs (telemetryd.jupyter, validate_in_process=False):
                           what a Jupyter Server's own emit costs with the extension

Each reports a LoadReport (benchmarks.load) whose `latencies_ns` are the emit calls' times; its
`closed` is when the client's flush returned, i.e. when the daemon had acknowledged every event.
"""

from __future__ import annotations

import logging
import os
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.events import SCHEMA_ID, SCHEMA_PATH, SCHEMA_VERSION, event_data
from benchmarks.load import LoadGroup, LoadReport, ReadyFn, cpu_seconds_self, max_rss_bytes_self

KINDS = ("client", "jupyter_events_handler", "jupyter_server_fast")
FLUSH_TIMEOUT_SECS = 600.0


def emit_load(ready: ReadyFn, socket_path: str, start: int, count: int, kind: str) -> LoadReport:
    from telemetryd.client import Client, TelemetrydHandler

    # The buffer holds the whole run: emit outpaces the daemon for a moment, and this
    # measures what emit costs, not what the client drops when its buffer is full.
    client = Client(socket_path, max_buffer_events=count + 1, max_buffer_bytes=1 << 34)
    datas = [event_data(n) for n in range(start, start + count)]
    timings = array("q", bytes(8 * count))
    ns = time.perf_counter_ns
    call: Callable[[dict[str, Any]], object] | None = None
    if kind == "client":
        pass  # timed without a wrapper, below
    elif kind in ("jupyter_events_handler", "jupyter_server_fast"):
        from jupyter_events import EventLogger

        handler = TelemetrydHandler(client=client)
        logger = EventLogger(handlers=[handler])
        logger.register_event_schema(SCHEMA_PATH)
        if kind == "jupyter_server_fast":
            from telemetryd.jupyter import install_fast_emit

            install_fast_emit(logger, handler)
        log_emit = logger.emit

        def call(data: dict[str, Any]) -> object:
            return log_emit(schema_id=SCHEMA_ID, data=data)

    else:
        raise ValueError(f"unknown emit kind {kind!r}; one of {KINDS}")
    if not client.flush(timeout=60):  # connected before the clock starts
        raise RuntimeError(f"the client did not connect to {socket_path}: {client.last_error}")
    ready(0)
    cpu_before = cpu_seconds_self()
    first = time.perf_counter()
    if call is None:
        emit = client.emit
        for i, data in enumerate(datas):
            t0 = ns()
            emit(SCHEMA_ID, SCHEMA_VERSION, data)
            timings[i] = ns() - t0
    else:
        for i, data in enumerate(datas):
            t0 = ns()
            call(data)
            timings[i] = ns() - t0
    last = time.perf_counter()
    flushed = client.flush(timeout=FLUSH_TIMEOUT_SECS)
    closed = time.perf_counter()
    cpu = cpu_seconds_self() - cpu_before
    stats = client.stats()
    client.close(timeout=1)
    if not flushed or stats.dropped or stats.rejected:
        raise RuntimeError(f"the client did not deliver every event: {stats}")
    logging.shutdown()
    return LoadReport(
        start=start,
        events=count,
        bytes_sent=0,
        first_byte=first,
        last_byte=last,
        closed=closed,
        reply_bytes=0,
        cpu_secs=cpu,
        max_rss_bytes=max_rss_bytes_self(),
        accepted=stats.acknowledged,
        latencies_ns=timings.tobytes(),
    )


def emit_loads(socket_path: Path, count: int, kind: str) -> LoadGroup:
    return LoadGroup(emit_load, [(os.fspath(socket_path), 0, count, kind)])
