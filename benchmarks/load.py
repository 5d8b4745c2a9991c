"""Load generator processes. A LoadGroup runs one process per job; each pre-builds its share of
the events, connects, reports "ready", and on "go" sends. `unix_load` sends NDJSON over the
Unix socket in large `sendall` chunks (plain mode); benchmarks.http_load sends HTTP requests.

Times are `time.perf_counter()`, which on Linux is CLOCK_MONOTONIC and so comparable between
the processes of one machine. CPU is the load process's own, from "go" to the end.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from benchmarks.events import SMALL, EventShape

CHUNK_BYTES = 256 * 1024
#: How long a load waits for the server to close the connection once everything is sent.
DRAIN_TIMEOUT_SECS = 600.0


@dataclass(frozen=True)
class LoadReport:
    start: int
    events: int
    bytes_sent: int
    first_byte: float  # perf_counter() just before the first send
    last_byte: float  # perf_counter() after the last send returned
    closed: float  # perf_counter() when the server closed its side / answered the last request
    reply_bytes: int  # what the server sent back (rejections in plain mode; HTTP responses)
    cpu_secs: float  # user + system CPU from "go" to the end
    max_rss_bytes: int
    # HTTP loads only (benchmarks.http_load)
    connections: int = 1
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # responses by status code
    accepted: int = 0  # events the server said it took (a batch's "accepted"; 1 per 204)
    error_samples: list[str] = field(default_factory=list)  # the first unexpected responses
    #: Each request's round trip (send to whole response), array("q") bytes, in nanoseconds.
    latencies_ns: bytes = field(default=b"", repr=False)


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def max_rss_bytes_self() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def split(events: int, clients: int) -> list[tuple[int, int]]:
    """(start, count) for each client: `events` cut into `clients` contiguous shares."""
    base, extra = divmod(events, clients)
    shares = []
    start = 0
    for i in range(clients):
        count = base + (1 if i < extra else 0)
        shares.append((start, count))
        start += count
    return shares


#: What a load process runs: `work(ready, *args)` prepares (builds its payload, connects),
#: calls `ready(payload_bytes)`, which returns at "go", then sends and reports.
ReadyFn = Callable[[int], None]
LoadWork = Callable[..., LoadReport]


def _child_main(
    work: LoadWork, args: tuple[object, ...], kwargs: dict[str, object], conn: Connection
) -> None:
    def ready(payload_bytes: int) -> None:
        conn.send(("ready", payload_bytes))
        conn.recv()  # "go"

    try:
        conn.send(("done", work(ready, *args, **kwargs)))
    except Exception:
        conn.send(("error", traceback.format_exc()))


def unix_load(
    ready: ReadyFn,
    socket_path: str,
    start: int,
    count: int,
    chunk_bytes: int,
    *,
    shape: EventShape = SMALL,
) -> LoadReport:
    """Sends events start .. start+count-1 over the Unix socket in `chunk_bytes` sendall calls,
    then waits for the server to close the connection (it has read every line)."""
    payload = shape.encode(start, count)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        ready(len(payload))
        cpu_before = cpu_seconds_self()
        view = memoryview(payload)
        first = time.perf_counter()
        for offset in range(0, len(view), chunk_bytes):
            sock.sendall(view[offset : offset + chunk_bytes])
        last = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_TIMEOUT_SECS)
        reply_bytes = 0
        while data := sock.recv(65536):
            reply_bytes += len(data)
        closed = time.perf_counter()
    return LoadReport(
        start=start,
        events=count,
        bytes_sent=len(payload),
        first_byte=first,
        last_byte=last,
        closed=closed,
        reply_bytes=reply_bytes,
        cpu_secs=cpu_seconds_self() - cpu_before,
        max_rss_bytes=max_rss_bytes_self(),
    )


class LoadError(RuntimeError):
    pass


class LoadGroup:
    """Load processes, one per job, each running `work(ready, *job, **kwargs)`: started and
    made ready (payload built, connected) by `start`, released together by `go`. Always use as
    a context manager: leaving it ends every process it started. `unix_loads` makes the socket
    loads."""

    def __init__(
        self,
        work: LoadWork,
        jobs: list[tuple[object, ...]],
        kwargs: dict[str, object] | None = None,
    ) -> None:
        self.work = work
        self.jobs = jobs
        self.kwargs = kwargs or {}
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[tuple[BaseProcess, Connection]] = []
        self._reports: list[LoadReport | None] = [None] * len(jobs)

    def __enter__(self) -> LoadGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout_secs: float = 120.0) -> None:
        for i, job in enumerate(self.jobs):
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_child_main,
                args=(self.work, job, self.kwargs, child),
                name=f"bench-load-{i}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs.append((proc, parent))
        deadline = time.monotonic() + timeout_secs
        for _, conn in self._procs:
            kind, value = self._receive(conn, deadline)
            if kind != "ready":
                raise LoadError(f"load process failed to start:\n{value}")

    def go(self) -> None:
        for _, conn in self._procs:
            conn.send("go")

    def done(self) -> bool:
        """True once every load process has reported; collects what arrived."""
        for i, (_, conn) in enumerate(self._procs):
            if self._reports[i] is None and conn.poll():
                self._reports[i] = self._report(conn)
        return all(r is not None for r in self._reports)

    def reports(self, timeout_secs: float = DRAIN_TIMEOUT_SECS) -> list[LoadReport]:
        deadline = time.monotonic() + timeout_secs
        out = []
        for i, (_, conn) in enumerate(self._procs):
            report = self._reports[i]
            if report is None:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise LoadError("a load process did not finish in time")
                report = self._reports[i] = self._report(conn)
            out.append(report)
        return out

    def close(self) -> None:
        for proc, conn in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self._procs.clear()

    @staticmethod
    def _receive(conn: Connection, deadline: float) -> tuple[str, object]:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise LoadError("a load process did not answer in time")
        try:
            message: tuple[str, object] = conn.recv()
        except EOFError:
            raise LoadError("a load process died") from None
        return message

    def _report(self, conn: Connection) -> LoadReport:
        kind, value = self._receive(conn, time.monotonic())
        if kind != "done" or not isinstance(value, LoadReport):
            raise LoadError(f"a load process failed:\n{value}")
        return value


def unix_loads(
    socket_path: Path,
    shares: list[tuple[int, int]],
    chunk_bytes: int = CHUNK_BYTES,
    *,
    shape: EventShape = SMALL,
) -> LoadGroup:
    """One socket load process per (start, count) share, sending events of `shape`."""
    path = os.fspath(socket_path)
    return LoadGroup(
        unix_load,
        [(path, start, count, chunk_bytes) for start, count in shares],
        {"shape": shape},
    )
