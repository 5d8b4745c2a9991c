"""The redis sink against redis-py XADDing directly, both into one redis-server.

- `redis_raw`: one process (redis-py's client, one connection) XADDs the same records (the
  bytes telemetryd stores, DESIGN.md §4) with the sink's three fields to the sink's stream, in
  non-transactional pipelines of BATCH_EVENTS, each answered before the next is sent.
- `redis_sink`: telemetryd, fed over its Unix socket (benchmarks.load.unix_loads), with the
  redis sink as its only sink (its defaults: method = "script", batches of BATCH_EVENTS).

Both count entries in the stream (XLEN) from the load's first byte until the last one is
there, then read every entry back: a run that loses, duplicates or mangles an event is FAILED.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import msgspec
import redis

from benchmarks.daemon_metrics import sink_latency
from benchmarks.daemon_process import (
    DaemonConfig,
    DaemonProcess,
    DaemonResult,
    _table,
    cpu_seconds,
)
from benchmarks.events import SCHEMA_ID, SCHEMA_VERSION, event_data, event_index
from benchmarks.load import (
    LoadError,
    LoadGroup,
    LoadReport,
    ReadyFn,
    cpu_seconds_self,
    max_rss_bytes_self,
    split,
    unix_loads,
)
from benchmarks.scenarios import ScenarioResult
from benchmarks.verify import Delivery

BATCH_EVENTS = 1000
STREAM = f"telemetryd:{{{SCHEMA_ID}}}:{SCHEMA_VERSION}"  # the sink's default stream name
TARGET = "the redis sink delivers >= 80% of redis_raw's rate"
STALL_SECS = 30.0
POLL_SECS = 0.005
READ_COUNT = 10_000

ProgressFn = Callable[[int, int], None]
Entries = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE's answer, as redis-py returns it


class RedisServerProcess:
    """A redis-server on 127.0.0.1, no persistence, its files in `folder`; killed on exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServerProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (.ci/run installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                *(binary, "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--dir", str(self.folder), "--save", "", "--appendonly", "no"),
                *("--logfile", str(self.folder / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=60)


def records(start: int, count: int) -> list[bytes]:
    """Events start .. start+count-1 as the records telemetryd would store for them."""
    origin = {
        "transport": "unix",
        "user": getpass.getuser(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
    }
    encode = msgspec.json.encode
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    head = {
        "__timestamp__": now,
        "__schema__": SCHEMA_ID,
        "__schema_version__": SCHEMA_VERSION,
        "__metadata_version__": 1,
        "__origin__": origin,
    }
    return [encode(head | event_data(n)) for n in range(start, start + count)]


def raw_xadd_load(ready: ReadyFn, port: int, start: int, count: int, batch: int) -> LoadReport:
    """redis-py pipelines of `batch` XADDs, each executed (answered) before the next."""
    payloads = records(start, count)
    fields = {b"schema_id": SCHEMA_ID.encode(), b"version": SCHEMA_VERSION.encode()}
    with redis.Redis(port=port, socket_timeout=60) as client:
        client.ping()  # connected before "go"
        ready(sum(len(p) for p in payloads))
        cpu_before = cpu_seconds_self()
        first = time.perf_counter()
        for offset in range(0, count, batch):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[offset : offset + batch]:
                pipe.xadd(STREAM, {b"record": payload, **fields})
            pipe.execute()
        last = time.perf_counter()
    return LoadReport(
        start=start,
        events=count,
        bytes_sent=sum(len(p) for p in payloads),
        first_byte=first,
        last_byte=last,
        closed=last,
        reply_bytes=0,
        cpu_secs=cpu_seconds_self() - cpu_before,
        max_rss_bytes=max_rss_bytes_self(),
        requests=(count + batch - 1) // batch,
    )


@dataclass(frozen=True)
class RedisSinkConfig(DaemonConfig):
    """A telemetryd whose only sink is the redis sink, at `url`."""

    url: str = ""

    def render(self, folder: Path) -> str:
        server = {
            "unix_socket": folder / "run" / "telemetryd.sock",
            "shutdown_timeout_secs": self.shutdown_timeout_secs,
            "http": "127.0.0.1:0",  # GET /metrics: the latency histogram's p99.9
        }
        sink = {
            "name": "streams",
            "type": "redis",
            "url": self.url,
            "batch_max_events": self.batch_max_events,
            "when_full": "block",
        }
        dead_letter = {
            "name": "dead-letter",
            "type": "file",
            "path": folder / "out" / "rejected.jsonl",
            "when_full": "drop_newest",
        }
        return "\n".join(
            [
                _table("[server]", server),
                _table("[schemas]", {"builtin": True}),
                _table("[log]", {"level": "info", "format": "json", "stats_interval_secs": 0}),
                _table("[[sinks]]", sink),
                _table("[dead_letter]", dead_letter),
            ]
        )


class _Record(msgspec.Struct):
    path: str


def verify_stream(client: redis.Redis, expected: int) -> Delivery:
    """Reads every entry back: each of events 0 .. expected-1 must be there once."""
    result = Delivery(expected)
    seen = bytearray(expected)
    decode = msgspec.json.Decoder(_Record).decode
    after = "-"
    while True:
        chunk = cast(Entries, client.xrange(STREAM, min=after, count=READ_COUNT))
        if not chunk:
            return result
        for _, fields in chunk:
            result.lines += 1
            try:
                n = event_index(decode(fields[b"record"]).path)
            except (KeyError, msgspec.DecodeError):
                n = None
            if n is None or n >= expected or fields.get(b"schema_id") != SCHEMA_ID.encode():
                result.foreign += 1
                if len(result.samples) < 5:
                    result.samples.append(repr(fields)[:200])
            elif seen[n]:
                result.duplicates += 1
            else:
                seen[n] = 1
                result.unique += 1
        after = "(" + chunk[-1][0].decode()  # exclusive: the entries after the last one read


def _wait_for_entries(
    client: redis.Redis, expected: int, progress: ProgressFn, loads_done: Callable[[], bool]
) -> float | None:
    """perf_counter() when the stream holds `expected` entries; None if it stops growing."""
    last_count, last_change = -1, time.monotonic()
    while True:
        count = int(client.xlen(STREAM))
        if count >= expected:
            progress(count, expected)
            return time.perf_counter()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
            progress(count, expected)
        elif time.monotonic() - last_change > STALL_SECS or (
            loads_done() and time.monotonic() - last_change > STALL_SECS / 3
        ):
            return None
        time.sleep(POLL_SECS)


def _check_stopped(result: ScenarioResult, daemon: DaemonResult) -> None:
    events = result.events
    if daemon.exit_code != 0:
        result.problems.append(f"telemetryd exited with {daemon.exit_code}")
    entry = daemon.sink("streams")
    if entry is None:
        result.problems.append('no "streams" sink in the "stopped" line')
        return
    if entry.get("sent") != events:
        result.problems.append(f"the redis sink sent {entry.get('sent')} of {events}")
    if entry.get("dropped"):
        result.problems.append(f"the redis sink dropped {entry.get('dropped')}")
    if entry.get("retries"):
        result.notes.append(f"the redis sink retried {entry.get('retries')} batches")
    result.latency_p50_secs = entry.get("latency_p50_secs")
    result.latency_p99_secs = entry.get("latency_p99_secs")
    result.latency_kind = "accept to XADD answered (daemon histogram)"
    dead = daemon.sink("dead-letter")
    if dead is not None and dead.get("received"):
        result.problems.append(f"{dead.get('received')} events went to the dead-letter sink")


def _measure(
    result: ScenarioResult,
    server: RedisServerProcess,
    progress: ProgressFn,
    loads: LoadGroup,
    daemon: DaemonProcess | None,
) -> None:
    """Releases the loads, waits for every entry, records time, CPU and memory."""
    events = result.events
    with server.client() as client, loads:
        loads.start()
        # The process doing the sink's work: the daemon, or (below) the raw client's report.
        cpu_before = cpu_seconds(daemon.pid) if daemon is not None else 0.0
        redis_before = cpu_seconds(server.pid)
        loads.go()
        written_at = _wait_for_entries(client, events, progress, loads.done)
        result.details["redis_server_cpu_secs"] = cpu_seconds(server.pid) - redis_before
        if daemon is not None:
            result.cpu_secs_server = cpu_seconds(daemon.pid) - cpu_before
            result.peak_rss_bytes = daemon.peak_rss_bytes()
        if written_at is None:
            result.problems.append(
                f"the stream stopped growing at {client.xlen(STREAM):,} of {events:,} entries"
            )
        elif daemon is not None:
            histogram = sink_latency(daemon.http_port(), "streams", events)
            if histogram is not None:
                result.latency_p999_secs = histogram.p999_secs
        try:
            reports = loads.reports(timeout_secs=60 if written_at is not None else 10)
        except LoadError as e:
            result.problems.append(str(e))
            reports = []
        if daemon is not None:
            stopped = daemon.stop()
            _check_stopped(result, stopped)
            result.details["daemon_stopped"] = stopped.stopped
            result.details["daemon_log_problems"] = stopped.error_lines[:10]
        delivery = verify_stream(client, events)
        client.flushall()
    if reports:
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        if written_at is not None:
            result.elapsed_secs = written_at - min(r.first_byte for r in reports)
        result.details["load"] = [
            {k: v for k, v in asdict(r).items() if k != "latencies_ns"} for r in reports
        ]
        if daemon is None:
            result.cpu_secs_server = reports[0].cpu_secs
            result.peak_rss_bytes = reports[0].max_rss_bytes
    result.delivery = delivery.as_dict()
    if not delivery.complete:
        result.problems.append(
            f"the stream holds {delivery.unique:,} of {events:,} events "
            f"({delivery.duplicates:,} duplicated, {delivery.foreign:,} foreign entries)"
        )
    if result.elapsed_secs:
        result.events_per_sec = events / result.elapsed_secs
    result.status = "FAILED" if result.problems else "OK"


def run_raw(events: int, server: RedisServerProcess, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "redis_raw",
        f"{events:,} records XADDed by redis-py (one process, one connection) in "
        f"non-transactional pipelines of {BATCH_EVENTS:,}, each answered before the next, "
        "into one stream of a local redis-server",
        events,
    )
    loads = LoadGroup(raw_xadd_load, [(server.port, 0, events, BATCH_EVENTS)])
    _measure(result, server, progress, loads, None)
    return result


def run_sink(
    events: int, server: RedisServerProcess, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = ScenarioResult(
        "redis_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into "
        f"telemetryd's redis sink (method = script, batches of {BATCH_EVENTS:,}), into one "
        "stream of a local redis-server",
        events,
        target=TARGET,
    )
    folder.mkdir(parents=True)
    config = RedisSinkConfig(url=f"redis://127.0.0.1:{server.port}/0")
    result.details["daemon_config"] = asdict(config)
    with DaemonProcess(folder, config) as daemon:
        daemon.start()
        loads = unix_loads(daemon.socket_path, split(events, 1))
        _measure(result, server, progress, loads, daemon)
    return result


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    with RedisServerProcess(folder / "redis") as server:
        raw = run_raw(events, server, progress)
        sink = run_sink(events, server, folder / "redis_sink", progress)
    if raw.events_per_sec and sink.events_per_sec:
        sink.target_ratio = sink.events_per_sec / (0.8 * raw.events_per_sec)
        sink.details["ratio_to_redis_raw"] = sink.events_per_sec / raw.events_per_sec
    return [raw, sink]
