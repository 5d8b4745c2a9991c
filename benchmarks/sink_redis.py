"""The redis sink against redis-py XADDing directly, both into one redis-server.

- `redis_raw`: one process (redis-py's client, one connection) XADDs the same records (the
  bytes telemetryd stores, docs/events.md) with the sink's three fields to the sink's stream, in
  non-transactional pipelines of BATCH_EVENTS, each answered before the next is sent.
- `redis_sink`: telemetryd, fed over its Unix socket (benchmarks.load.unix_loads), with the
  redis sink as its only sink (its defaults: method = "script", batches of BATCH_EVENTS).

Both count entries in the stream (XLEN) from the load's first byte until the last one is
there, then read every entry back: a run that loses, duplicates or mangles an event is FAILED.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import msgspec
import redis

from benchmarks.events import SCHEMA_ID, SCHEMA_VERSION, event_data
from benchmarks.load import LoadGroup, LoadReport, ReadyFn, cpu_seconds_self
from benchmarks.scenarios import ProgressFn, ScenarioResult
from benchmarks.sink_run import (
    BackendCpu,
    SinkConfig,
    against_raw,
    check_delivery,
    client_report,
    delivery_of,
    finish,
    measure_sink,
    run_loads,
    sink_target,
)
from benchmarks.verify import Delivery, RecordPath
from tests.support.redis_process import RedisServer

BATCH_EVENTS = 1000
STREAM = f"telemetryd:{{{SCHEMA_ID}}}:{SCHEMA_VERSION}"  # the sink's default stream name
SINK_NAME = "streams"
POLL_SECS = 0.005
READ_COUNT = 10_000
STALLED = "the stream stopped growing at {count:,} of {expected:,} entries"

Entries = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE's answer, as redis-py returns it


class XlenCounter:
    """Entries in the stream (XLEN), on a connection of its own."""

    def __init__(self, server: RedisServer) -> None:
        self._client = server.client(socket_timeout=60)

    def poll(self) -> int:
        return int(self._client.xlen(STREAM))

    def close(self) -> None:
        self._client.close()


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
    return client_report(
        start,
        count,
        bytes_sent=sum(len(p) for p in payloads),
        first=first,
        last=last,
        cpu_secs=cpu_seconds_self() - cpu_before,
        requests=(count + batch - 1) // batch,
    )


@dataclass(frozen=True)
class RedisSinkConfig(SinkConfig):
    """A telemetryd whose only sink is the redis sink, at `url`."""

    url: str = ""

    def sink_table(self) -> dict[str, object]:
        return {"name": SINK_NAME, "type": "redis", "url": self.url}


_decode_record = msgspec.json.Decoder(RecordPath).decode


def _entry_path(fields: dict[bytes, bytes]) -> str | None:
    """The event path of an entry the sink (or redis_raw) wrote; None for any other entry."""
    if fields.get(b"schema_id") != SCHEMA_ID.encode():
        return None
    try:
        return _decode_record(fields[b"record"]).path
    except (KeyError, msgspec.DecodeError):
        return None


def verify_stream(client: redis.Redis, expected: int) -> Delivery:
    """Reads every entry back: each of events 0 .. expected-1 must be there once."""

    def entries() -> Iterator[dict[bytes, bytes]]:
        after = "-"
        while chunk := cast(Entries, client.xrange(STREAM, min=after, count=READ_COUNT)):
            for _, fields in chunk:
                yield fields
            after = "(" + chunk[-1][0].decode()  # exclusive: the entries after the last one read

    return delivery_of(expected, entries(), _entry_path, repr)


def _read_back(result: ScenarioResult, server: RedisServer) -> None:
    with server.client(socket_timeout=60) as client:
        check_delivery(result, verify_stream(client, result.events), "the stream", "entries")
        client.flushall()  # the next run starts empty


def run_raw(events: int, server: RedisServer, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "redis_raw",
        f"{events:,} records XADDed by redis-py (one process, one connection) in "
        f"non-transactional pipelines of {BATCH_EVENTS:,}, each answered before the next, "
        "into one stream of a local redis-server",
        events,
    )
    loads = LoadGroup(raw_xadd_load, [(server.port, 0, events, BATCH_EVENTS)])
    counter = XlenCounter(server)
    try:
        run = run_loads(
            result,
            loads,
            counter.poll,
            progress,
            clocks=(server.cpu_seconds,),
            stalled=STALLED,
            poll_secs=POLL_SECS,
        )
    finally:
        counter.close()
    result.details["redis_server_cpu_secs"] = run.cpu_secs[0]
    if run.reports:
        # The raw client's process does the sink's work.
        result.cpu_secs_server = run.reports[0].cpu_secs
        result.peak_rss_bytes = run.reports[0].max_rss_bytes
    _read_back(result, server)
    return finish(result)


def run_sink(
    events: int, server: RedisServer, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = ScenarioResult(
        "redis_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into "
        f"telemetryd's redis sink (method = script, batches of {BATCH_EVENTS:,}), into one "
        "stream of a local redis-server",
        events,
        target=sink_target("redis"),
        latency_kind="accept to XADD answered (daemon histogram)",
    )
    config = RedisSinkConfig(url=f"redis://127.0.0.1:{server.port}/0")
    result.details["daemon_config"] = asdict(config)
    stopped = measure_sink(
        result,
        folder,
        config,
        progress,
        sink_name=SINK_NAME,
        counter=lambda _: XlenCounter(server),
        backend=BackendCpu("redis_server_cpu_secs", server.cpu_seconds),
        stalled=STALLED,
        poll_secs=POLL_SECS,
        label="the redis sink",
    )
    result.details["daemon_stopped"] = stopped.stopped
    entry = stopped.sink(SINK_NAME)
    if entry is not None and entry.get("retries"):
        result.notes.append(f"the redis sink retried {entry.get('retries')} batches")
    _read_back(result, server)
    return finish(result)


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    with RedisServer(folder / "redis") as server:
        raw = run_raw(events, server, progress)
        sink = run_sink(events, server, folder / "redis_sink", progress)
    return against_raw(raw, sink)
