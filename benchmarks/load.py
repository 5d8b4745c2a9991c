"""Load generator processes: each one pre-builds its share of the events as NDJSON bytes,
connects to the Unix socket, and on "go" sends them in large `sendall` chunks (plain mode).

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
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from benchmarks.events import encode_events

CHUNK_BYTES = 256 * 1024
#: How long a load waits for the server to close the connection once everything is sent.
DRAIN_TIMEOUT_SECS = 600.0


@dataclass(frozen=True)
class LoadReport:
    start: int
    events: int
    bytes_sent: int
    first_byte: float  # perf_counter() just before the first sendall
    last_byte: float  # perf_counter() after the last sendall returned
    closed: float  # perf_counter() when the server closed its side (it read everything)
    reply_bytes: int  # what the server sent back (rejections, in plain mode)
    cpu_secs: float  # user + system CPU from "go" to the end
    max_rss_bytes: int


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


def _load_main(
    socket_path: str, start: int, count: int, chunk_bytes: int, conn: Connection
) -> None:
    try:
        payload = encode_events(start, count)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(socket_path)
            conn.send(("ready", len(payload)))
            conn.recv()  # "go"
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
        conn.send(
            (
                "done",
                LoadReport(
                    start=start,
                    events=count,
                    bytes_sent=len(payload),
                    first_byte=first,
                    last_byte=last,
                    closed=closed,
                    reply_bytes=reply_bytes,
                    cpu_secs=cpu_seconds_self() - cpu_before,
                    max_rss_bytes=max_rss_bytes_self(),
                ),
            )
        )
    except Exception:
        conn.send(("error", traceback.format_exc()))


class LoadError(RuntimeError):
    pass


class LoadGroup:
    """Load processes, one per share, started and made ready (payload built, connected) by
    `start`, released together by `go`. Always use as a context manager: leaving it ends every
    process it started."""

    def __init__(
        self, socket_path: Path, shares: list[tuple[int, int]], chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self.socket_path = socket_path
        self.shares = shares
        self.chunk_bytes = chunk_bytes
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[tuple[BaseProcess, Connection]] = []
        self._reports: list[LoadReport | None] = [None] * len(shares)

    def __enter__(self) -> LoadGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout_secs: float = 120.0) -> None:
        for start, count in self.shares:
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_load_main,
                args=(os.fspath(self.socket_path), start, count, self.chunk_bytes, child),
                name=f"bench-load-{start}",
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
