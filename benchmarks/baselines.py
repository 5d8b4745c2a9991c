"""What telemetryd is compared with, each run in a process of its own:

- jupyter_events: Jupyter Server's and JupyterHub's in-process event logger, `emit` into a
  `logging.FileHandler`, with the same contents_service schema and the same events (or, for
  jupyter_events_large_schema, the same large schema and events as socket_file_large_schema);
- python_minimal: a minimal single-process Python server (blocking sockets, no asyncio) that
  reads the Unix socket in large chunks and, per line, decodes, validates, builds the record and
  encodes it, one write per chunk: what a straightforward Python pipeline does here;
- the socket floor: a minimal Python server that copies the bytes it reads from the Unix
  socket into a file, parsing nothing: the most any socket-to-file pipeline could do here.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from benchmarks.events import SCHEMA_ID, SCHEMA_PATH, event_data
from benchmarks.load import cpu_seconds_self, max_rss_bytes_self

READ_BYTES = 1024 * 1024
#: python_minimal's read size: the same as the load's send chunks.
MINIMAL_READ_BYTES = 256 * 1024


class BaselineError(RuntimeError):
    pass


def nearest_rank(sorted_values: Any, q: float) -> float:
    """The q-quantile of an ascending sequence, by the nearest-rank method."""
    n = len(sorted_values)
    if not n:
        return 0.0
    return float(sorted_values[min(n - 1, max(0, int(q * n + 0.5) - 1))])


@dataclass(frozen=True)
class JupyterEventsReport:
    events: int
    elapsed_secs: float  # first emit to the handler's flush
    cpu_secs: float
    max_rss_bytes: int
    emit_p50_secs: float
    emit_p99_secs: float
    emit_mean_secs: float
    version: str
    emit_p999_secs: float = 0.0
    schema: str = "small"


def _jupyter_events_main(events: int, out_path: str, schema: str, conn: Connection) -> None:
    try:
        import jupyter_events
        from jupyter_events import EventLogger

        schema_id, schema_path, make_data = SCHEMA_ID, SCHEMA_PATH, event_data
        if schema == "large":
            from benchmarks import events_large

            schema_id = events_large.SCHEMA_ID
            schema_path = events_large.SCHEMA_PATH
            make_data = events_large.event_data_large
        handler = logging.FileHandler(out_path, encoding="utf-8")
        logger = EventLogger(handlers=[handler])
        logger.register_event_schema(schema_path)
        emit = logger.emit
        ns = time.perf_counter_ns
        timings = array("q", bytes(8 * events))
        conn.send(("ready", None))
        conn.recv()  # "go"
        cpu_before = cpu_seconds_self()
        start = time.perf_counter()
        for n in range(events):
            data = make_data(n)
            t0 = ns()
            emit(schema_id=schema_id, data=data)
            timings[n] = ns() - t0
        handler.flush()
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds_self() - cpu_before
        handler.close()
        ordered = sorted(timings)
        conn.send(
            (
                "done",
                JupyterEventsReport(
                    events=events,
                    elapsed_secs=elapsed,
                    cpu_secs=cpu,
                    max_rss_bytes=max_rss_bytes_self(),
                    emit_p50_secs=nearest_rank(ordered, 0.5) / 1e9,
                    emit_p99_secs=nearest_rank(ordered, 0.99) / 1e9,
                    emit_mean_secs=sum(ordered) / max(1, events) / 1e9,
                    version=getattr(jupyter_events, "__version__", "?"),
                    emit_p999_secs=nearest_rank(ordered, 0.999) / 1e9,
                    schema=schema,
                ),
            )
        )
    except Exception:
        conn.send(("error", traceback.format_exc()))


@dataclass(frozen=True)
class FloorReport:
    bytes_copied: int
    first_read: float  # perf_counter() when the first bytes arrived
    last_write: float  # perf_counter() after the last write, at the client's end of stream
    cpu_secs: float
    max_rss_bytes: int


def _floor_server_main(socket_path: str, out_path: str, conn: Connection) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(socket_path)
            listener.listen(1)
            conn.send(("ready", None))
            client, _ = listener.accept()
            cpu_before = cpu_seconds_self()
            buf = bytearray(READ_BYTES)
            view = memoryview(buf)
            total = 0
            first = 0.0
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                with client:
                    while n := client.recv_into(buf):
                        if not total:
                            first = time.perf_counter()
                        total += n
                        chunk = view[:n]
                        while chunk:
                            chunk = chunk[os.write(fd, chunk) :]
                    last = time.perf_counter()
            finally:
                os.close(fd)
        conn.send(
            (
                "done",
                FloorReport(
                    total, first, last, cpu_seconds_self() - cpu_before, max_rss_bytes_self()
                ),
            )
        )
    except Exception:
        conn.send(("error", traceback.format_exc()))


@dataclass(frozen=True)
class MinimalReport:
    records: int  # lines decoded, validated, encoded and written
    rejected: int  # lines that failed to decode or validate (none, with the benchmark's events)
    bytes_read: int
    chunks: int  # reads (and so writes)
    first_read: float  # perf_counter() when the first bytes arrived
    last_write: float  # perf_counter() after the last write, at the client's end of stream
    cpu_secs: float  # from the accept to the last write
    max_rss_bytes: int


def _minimal_server_main(
    socket_path: str, out_path: str, schema_path: str, conn: Connection
) -> None:
    """Accept one client; per chunk: split once, and per line decode (untyped), validate the
    data with the schema compiled once by fastjsonschema, build the record, encode it; then one
    write of the chunk's records. Nothing else: no asyncio, no queue, no batching across reads."""
    try:
        from datetime import UTC, datetime

        import fastjsonschema
        import msgspec
        import yaml

        with open(schema_path, encoding="utf-8") as f:
            schema = yaml.safe_load(f)
        validate = fastjsonschema.compile(schema)
        invalid = (
            msgspec.DecodeError,
            fastjsonschema.JsonSchemaValueException,
            KeyError,
            TypeError,
        )
        decode = msgspec.json.decode
        encode = msgspec.json.encode
        now = datetime.now
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(socket_path)
            listener.listen(1)
            conn.send(("ready", None))
            client, _ = listener.accept()
            cpu_before = cpu_seconds_self()
            records = rejected = total = chunks = 0
            first = 0.0
            tail = b""
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                with client:
                    while chunk := client.recv(MINIMAL_READ_BYTES):
                        if not total:
                            first = time.perf_counter()
                        total += len(chunk)
                        chunks += 1
                        lines = (tail + chunk).split(b"\n")
                        tail = lines.pop()  # the unfinished last line (b"" at a line's end)
                        timestamp = now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                        out = []
                        for line in lines:
                            try:
                                event = decode(line)
                                data = event["data"]
                                validate(data)
                                out.append(
                                    encode(
                                        {
                                            "__timestamp__": timestamp,
                                            "__schema__": event["schema_id"],
                                            "__schema_version__": "1",
                                            "__metadata_version__": 1,
                                            **data,
                                        }
                                    )
                                )
                            except invalid:
                                rejected += 1
                        if out:
                            records += len(out)
                            out.append(b"")  # the last record's newline
                            block = memoryview(b"\n".join(out))
                            while block:
                                block = block[os.write(fd, block) :]
                    if tail:
                        rejected += 1  # an unterminated last line: not a whole event
                    last = time.perf_counter()
            finally:
                os.close(fd)
        conn.send(
            (
                "done",
                MinimalReport(
                    records=records,
                    rejected=rejected,
                    bytes_read=total,
                    chunks=chunks,
                    first_read=first,
                    last_write=last,
                    cpu_secs=cpu_seconds_self() - cpu_before,
                    max_rss_bytes=max_rss_bytes_self(),
                ),
            )
        )
    except Exception:
        conn.send(("error", traceback.format_exc()))


class BaselineProcess:
    """A baseline's child process and the pipe it reports on; a context manager that always
    ends the process."""

    def __init__(self, target: Callable[..., None], *args: object) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc: BaseProcess = ctx.Process(
            target=target, args=(*args, child), name="bench-baseline", daemon=True
        )
        self._proc.start()
        child.close()

    def __enter__(self) -> BaselineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    def receive(self, expected: str, timeout_secs: float) -> object:
        if not self._conn.poll(timeout_secs):
            raise BaselineError(f"no {expected!r} from the baseline process in {timeout_secs}s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise BaselineError("the baseline process died") from None
        if kind != expected:
            raise BaselineError(f"baseline process failed:\n{value}")
        return value

    def poll(self) -> bool:
        return self._conn.poll()

    def go(self) -> None:
        self._conn.send("go")


def start_jupyter_events(events: int, out_path: Path, schema: str = "small") -> BaselineProcess:
    """schema: "small" (contents_service) or "large" (benchmarks/schemas/large/v1.yaml)."""
    return BaselineProcess(_jupyter_events_main, events, os.fspath(out_path), schema)


def start_minimal_server(socket_path: Path, out_path: Path) -> BaselineProcess:
    return BaselineProcess(
        _minimal_server_main,
        os.fspath(socket_path),
        os.fspath(out_path),
        os.fspath(SCHEMA_PATH),
    )


def start_floor_server(socket_path: Path, out_path: Path) -> BaselineProcess:
    return BaselineProcess(_floor_server_main, os.fspath(socket_path), os.fspath(out_path))
