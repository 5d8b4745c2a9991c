"""A rate-limited (paced) socket load, open loop: it sends on a schedule, whatever the daemon
does, and records when it handed each piece of its payload to the kernel.

The schedule: `rate` events/s in ticks of `tick_secs` (10 ms). Event n (counted from the
load's first) is due in tick floor(n / (rate * tick_secs)); at the start of each tick the load
sends every event due by its end, in pieces of at most PIECE_BYTES (whole lines), then sleeps
until the next tick. When a send blocks (the daemon reads no more: back-pressure), the load
falls behind; it never skips, and catches up with what has fallen due as soon as it can, so
below the daemon's capacity it keeps the schedule and above it sends as fast as the daemon
takes the bytes (the offered rate is then not the achieved one: both are reported).

The report (PacedReport) holds, for every piece, its first event and perf_counter() just
before its `sendall`: benchmarks.latency_load times each record from there.
"""

from __future__ import annotations

import os
import socket
import time
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from benchmarks.events import SMALL, EventShape
from benchmarks.load import (
    DRAIN_TIMEOUT_SECS,
    LoadGroup,
    LoadReport,
    ReadyFn,
    cpu_seconds_self,
    max_rss_bytes_self,
)

TICK_SECS = 0.01
#: A piece is at most this many bytes (about 200 small events): its send time is each of its
#: events' send time, so pieces stay small next to the latencies measured (milliseconds).
PIECE_BYTES = 32 * 1024


@dataclass(frozen=True)
class PacedReport(LoadReport):
    rate: float = 0.0  # offered, events/s
    tick_secs: float = TICK_SECS
    #: array("q") bytes: the first event (absolute index) of each piece, ascending.
    piece_first: bytes = b""
    #: array("d") bytes: perf_counter() just before each piece's sendall.
    piece_sent: bytes = b""
    #: How far behind its schedule the load was when it started a piece: the most, and at
    #: the last piece (0 when it kept up).
    max_lag_secs: float = 0.0
    end_lag_secs: float = 0.0


def line_offsets(payload: bytes) -> array[int]:
    """offsets[i]: where line i starts; offsets[-1] = len(payload)."""
    out = array("q", [0])
    find = payload.find
    pos = find(b"\n")
    while pos >= 0:
        out.append(pos + 1)
        pos = find(b"\n", pos + 1)
    return out


def _due_tick(n: int, per_tick: float) -> int:
    """The tick whose sends include event n: the first k with int((k + 1) * per_tick) > n,
    the same arithmetic as the send loop's (n / per_tick alone can round to the tick before)."""
    k = int(n / per_tick)
    while k > 0 and int(k * per_tick) > n:
        k -= 1
    while int((k + 1) * per_tick) <= n:
        k += 1
    return k


def paced_load(
    ready: ReadyFn,
    socket_path: str,
    start: int,
    count: int,
    rate: float,
    *,
    tick_secs: float = TICK_SECS,
    shape: EventShape = SMALL,
) -> PacedReport:
    """Sends events start .. start+count-1 at `rate` events/s (see the module's doc), then
    waits for the daemon to close the connection."""
    payload = shape.encode(start, count)
    offsets = line_offsets(payload)
    if len(offsets) != count + 1:
        raise RuntimeError(f"payload has {len(offsets) - 1} lines, not {count}")
    per_tick = rate * tick_secs
    firsts = array("q")
    sent_at = array("d")
    max_lag = 0.0
    lag = 0.0
    clock = time.perf_counter
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        ready(len(payload))
        cpu_before = cpu_seconds_self()
        view = memoryview(payload)
        t0 = clock()
        n = 0  # the next event to send, counted from `start`
        while n < count:
            now = clock()
            tick = int((now - t0) / tick_secs)
            due = min(count, int((tick + 1) * per_tick))
            if due <= n:
                time.sleep(max(0.0, t0 + (tick + 1) * tick_secs - clock()))
                continue
            while n < due:
                end = bisect_right(offsets, offsets[n] + PIECE_BYTES) - 1
                end = min(due, max(end, n + 1))
                at = clock()
                lag = max(0.0, at - (t0 + _due_tick(n, per_tick) * tick_secs))
                max_lag = max(max_lag, lag)
                firsts.append(start + n)
                sent_at.append(at)
                sock.sendall(view[offsets[n] : offsets[end]])
                n = end
        last = clock()
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_TIMEOUT_SECS)
        reply_bytes = 0
        while data := sock.recv(65536):
            reply_bytes += len(data)
        closed = clock()
    return PacedReport(
        start=start,
        events=count,
        bytes_sent=len(payload),
        first_byte=t0,
        last_byte=last,
        closed=closed,
        reply_bytes=reply_bytes,
        cpu_secs=cpu_seconds_self() - cpu_before,
        max_rss_bytes=max_rss_bytes_self(),
        rate=rate,
        tick_secs=tick_secs,
        piece_first=firsts.tobytes(),
        piece_sent=sent_at.tobytes(),
        max_lag_secs=max_lag,
        end_lag_secs=lag,
    )


def paced_loads(
    socket_path: Path, events: int, rate: float, *, shape: EventShape = SMALL
) -> LoadGroup:
    """One paced load process sending events 0 .. events-1 at `rate` events/s."""
    return LoadGroup(paced_load, [(os.fspath(socket_path), 0, events, rate)], {"shape": shape})
