"""The postgres sink against asyncpg copying directly, into one throwaway PostgreSQL cluster.

- `postgres_raw`: one process builds the rows the sink would make of the same events (the same
  records, as jsonb, with their metadata columns) and copies them with asyncpg's
  `copy_records_to_table` in batches of BATCH_EVENTS, one COPY at a time, into a table of the
  sink's layout. Timed from its first COPY to the answer to its last; building the rows is not
  timed, so this is the client library's best case.
- `postgres_sink`: telemetryd, fed over its Unix socket (benchmarks.load.unix_loads), with the
  postgres sink (batches of BATCH_EVENTS) as its only sink. Timed from the load's first byte
  until the daemon's /metrics counts every event sent by the sink (a batch counts once its COPY
  has committed); polling the table itself (count(*)) would cost the server a scan each time.

Both tables are then read back: every event 0 .. n-1 must be there exactly once, or the run is
FAILED. The cluster keeps PostgreSQL's durable defaults (fsync, synchronous_commit); each run
starts on an empty cluster (the raw table is dropped, and a checkpoint taken, before the sink's).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

from benchmarks.daemon_metrics import sink_latency
from benchmarks.daemon_process import DaemonConfig, DaemonProcess, DaemonResult, _table
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
from benchmarks.postgres_cluster import PostgresCluster
from benchmarks.scenarios import ScenarioResult
from benchmarks.verify import Delivery
from telemetryd.sinks.postgres import COLUMNS, TableName, create_table_sql

BATCH_EVENTS = 1000
TARGET = "the postgres sink delivers >= 80% of postgres_raw's rate"
RAW_TABLE = "raw_events"
SINK_TABLE = "sink_events"
SINK_NAME = "db"
STALL_SECS = 30.0
POLL_SECS = 0.01

ProgressFn = Callable[[int, int], None]

#: PostgreSQL's defaults (durable: fsync, synchronous_commit), but no autovacuum: a vacuum of
#: a table just filled, started at a random moment, would be measured with the next run.
CLUSTER_SETTINGS = ("autovacuum=off",)


# -- postgres_raw ------------------------------------------------------------------------------


def raw_rows(start: int, count: int) -> list[tuple[Any, ...]]:
    """The rows of events start .. start+count-1, as the sink makes them of its records."""
    account = pwd.getpwuid(os.getuid())
    origin = {
        "transport": "unix",
        "user": account.pw_name,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
    }
    origin_text = msgspec.json.encode(origin).decode()
    encode = msgspec.json.encode
    rows = []
    for n in range(start, start + count):
        moment = datetime.now(UTC)
        record = {
            "__timestamp__": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "__schema__": SCHEMA_ID,
            "__schema_version__": SCHEMA_VERSION,
            "__metadata_version__": 1,
            "__origin__": origin,
            **event_data(n),
        }
        rows.append(
            (
                moment,
                SCHEMA_ID,
                SCHEMA_VERSION,
                origin_text,
                account.pw_name,
                encode(record).decode(),
            )
        )
    return rows


@dataclass(frozen=True)
class RawTarget:
    dsn: str
    table: str
    batch_events: int


def raw_copy_load(ready: ReadyFn, target: RawTarget, start: int, count: int) -> LoadReport:
    """asyncpg's copy_records_to_table, one batch after the other, on one connection."""
    rows = raw_rows(start, count)
    step = target.batch_events
    batches = [rows[i : i + step] for i in range(0, len(rows), step)]
    table = target.table

    async def copy() -> tuple[float, float, float]:
        connection = await asyncpg.connect(target.dsn)
        try:
            await connection.fetchval("SELECT 1")
            ready(sum(len(r[-1]) for r in rows))
            cpu_before = cpu_seconds_self()
            first = time.perf_counter()
            for chunk in batches:
                await connection.copy_records_to_table(table, records=chunk, columns=COLUMNS)
            return first, time.perf_counter(), cpu_before
        finally:
            await connection.close()

    first, last, cpu_before = asyncio.run(copy())
    return LoadReport(
        start=start,
        events=count,
        bytes_sent=0,
        first_byte=first,
        last_byte=last,
        closed=last,
        reply_bytes=0,
        cpu_secs=cpu_seconds_self() - cpu_before,
        max_rss_bytes=max_rss_bytes_self(),
        requests=len(batches),
    )


def run_raw(
    cluster: PostgresCluster, events: int, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = ScenarioResult(
        "postgres_raw",
        f"{events:,} rows (the records of the same events, with the sink's columns) copied by "
        f"asyncpg's copy_records_to_table in batches of {BATCH_EVENTS:,}, one COPY at a time, "
        "from one process into a local PostgreSQL (durable defaults)",
        events,
    )
    folder.mkdir(parents=True)
    cluster_sql(cluster, create_table_sql(TableName(None, RAW_TABLE)))
    progress(0, events)
    with LoadGroup(
        raw_copy_load, [(RawTarget(cluster.dsn(), RAW_TABLE, BATCH_EVENTS), 0, events)]
    ) as loads:
        try:
            loads.start()
            loads.go()
            reports = loads.reports()
        except LoadError as e:
            result.problems.append(str(e))
            reports = []
    if reports:
        report = reports[0]
        result.elapsed_secs = report.last_byte - report.first_byte
        result.cpu_secs_server = report.cpu_secs  # the writing process: asyncpg's side
        result.peak_rss_bytes = report.max_rss_bytes
        result.details["load"] = asdict(report) | {"latencies_ns": None}
    progress(events, events)
    _verify_table(result, cluster, RAW_TABLE)
    # The sink's run must find the server as this one did: without this table's pages in
    # shared_buffers and its WAL to checkpoint.
    cluster_sql(cluster, f'DROP TABLE "{RAW_TABLE}"; CHECKPOINT')
    return _finish(result)


# -- postgres_sink -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresDaemonConfig(DaemonConfig):
    """A telemetryd whose only sink is the postgres sink, with the HTTP API for /metrics."""

    dsn: str = ""
    table: str = SINK_TABLE

    def render(self, folder: Path) -> str:
        server = {
            "unix_socket": folder / "run" / "telemetryd.sock",
            "shutdown_timeout_secs": self.shutdown_timeout_secs,
            "http": "127.0.0.1:0",
        }
        sink = {
            "name": SINK_NAME,
            "type": "postgres",
            "dsn": self.dsn,
            "table": self.table,
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


class SentCounter:
    """The sink's sent-events counter, from the daemon's /metrics, on one keep-alive connection."""

    LINE = f'telemetryd_sink_sent_events_total{{sink="{SINK_NAME}"}} '.encode()

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def poll(self) -> int:
        self._connection.request("GET", "/metrics")
        body = self._connection.getresponse().read()
        at = body.find(self.LINE)
        if at < 0:
            return 0
        end = body.find(b"\n", at)
        return int(float(body[at + len(self.LINE) : end]))

    def close(self) -> None:
        self._connection.close()


def _wait_for_sent(
    counter: SentCounter, expected: int, progress: ProgressFn, loads_done: Callable[[], bool]
) -> float | None:
    """perf_counter() when the sink has sent `expected` events; None if it stalls first."""
    last_count, last_change = -1, time.monotonic()
    while True:
        count = counter.poll()
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


def run_sink(
    cluster: PostgresCluster, events: int, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    config = PostgresDaemonConfig(dsn=cluster.dsn(), batch_max_events=BATCH_EVENTS)
    result = ScenarioResult(
        "postgres_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into telemetryd "
        f"with the postgres sink (batches of {BATCH_EVENTS:,}) as its only sink, into the same "
        "local PostgreSQL",
        events,
        target=TARGET,
        latency_kind="accept to COPY committed (daemon histogram)",
    )
    folder.mkdir(parents=True)
    reports: list[LoadReport] = []
    stopped: DaemonResult | None = None
    with DaemonProcess(folder, config) as daemon:
        daemon.start()
        counter = SentCounter(daemon.http_port())
        try:
            with unix_loads(daemon.socket_path, split(events, 1)) as loads:
                loads.start()
                cpu_before = daemon.cpu_seconds()
                server_cpu = cluster.cpu_seconds()
                loads.go()
                written_at = _wait_for_sent(counter, events, progress, loads.done)
                result.cpu_secs_server = daemon.cpu_seconds() - cpu_before
                # The sink's backend is alive here, so its CPU is counted (a backend that has
                # exited may not be reaped yet, which is why the raw run has no such figure).
                result.details["postgres_cpu_secs"] = cluster.cpu_seconds() - server_cpu
                result.peak_rss_bytes = daemon.peak_rss_bytes()
                if written_at is None:
                    result.problems.append(
                        f"the sink stopped sending at {counter.poll():,} of {events:,} events"
                    )
                else:
                    histogram = sink_latency(daemon.http_port(), SINK_NAME, events)
                    if histogram is not None:
                        result.latency_p999_secs = histogram.p999_secs
                try:
                    reports = loads.reports(timeout_secs=60 if written_at is not None else 10)
                except LoadError as e:
                    result.problems.append(str(e))
        finally:
            counter.close()
        stopped = daemon.stop()
    _check_stopped(result, stopped)
    if reports:
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        if written_at is not None:
            result.elapsed_secs = written_at - min(r.first_byte for r in reports)
        result.details["load"] = [asdict(r) | {"latencies_ns": None} for r in reports]
    _verify_table(result, cluster, SINK_TABLE)
    return _finish(result)


def _check_stopped(result: ScenarioResult, daemon: DaemonResult) -> None:
    events = result.events
    result.details["daemon_log_problems"] = daemon.error_lines[:10]
    if daemon.exit_code != 0:
        result.problems.append(f"telemetryd exited with {daemon.exit_code}")
    entry = daemon.sink(SINK_NAME)
    if entry is None:
        result.problems.append(f'no "{SINK_NAME}" sink in the "stopped" line')
        return
    result.details["daemon_sink"] = entry
    result.latency_p50_secs = entry.get("latency_p50_secs")
    result.latency_p99_secs = entry.get("latency_p99_secs")
    if entry.get("sent") != events:
        result.problems.append(f"the sink sent {entry.get('sent')} of {events}")
    if entry.get("dropped"):
        result.problems.append(f"the sink dropped {entry.get('dropped')}")
    dead = daemon.sink("dead-letter")
    if dead is not None and dead.get("received"):
        result.problems.append(f"{dead.get('received')} events went to the dead-letter sink")


# -- both --------------------------------------------------------------------------------------


def cluster_sql(cluster: PostgresCluster, script: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(cluster.dsn())
        try:
            await connection.execute(script)
        finally:
            await connection.close()

    asyncio.run(run())


def _verify_table(result: ScenarioResult, cluster: PostgresCluster, table: str) -> None:
    """Reads back every row's event path: events 0 .. n-1, each exactly once."""

    async def paths() -> list[str | None]:
        connection = await asyncpg.connect(cluster.dsn())
        try:
            rows = await connection.fetch(f"SELECT record->>'path' FROM \"{table}\"")
            return [row[0] for row in rows]
        finally:
            await connection.close()

    delivery = Delivery(result.events)
    seen = bytearray(result.events)
    try:
        found = asyncio.run(paths())
    except (OSError, asyncpg.PostgresError) as e:
        result.problems.append(f"cannot read {table}: {type(e).__name__}: {e}")
        return
    delivery.lines = len(found)
    for path in found:
        n = event_index(path) if path is not None else None
        if n is None or n >= len(seen):
            delivery.foreign += 1
            if len(delivery.samples) < 3:
                delivery.samples.append(str(path)[:200])
        elif seen[n]:
            delivery.duplicates += 1
        else:
            seen[n] = 1
    delivery.unique = result.events - seen.count(0)
    result.delivery = delivery.as_dict()
    if not delivery.complete:
        result.problems.append(
            f"{table} holds {delivery.unique:,} of {result.events:,} events "
            f"({delivery.duplicates:,} duplicated, {delivery.foreign:,} foreign rows)"
        )


def _finish(result: ScenarioResult) -> ScenarioResult:
    if result.elapsed_secs:
        result.events_per_sec = result.events / result.elapsed_secs
    result.status = "FAILED" if result.problems else "OK"
    return result


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(PostgresCluster(settings=CLUSTER_SETTINGS))
        raw = run_raw(cluster, events, folder / "postgres_raw", progress)
        sink = run_sink(cluster, events, folder / "postgres_sink", progress)
    if raw.events_per_sec and sink.events_per_sec:
        sink.target_ratio = sink.events_per_sec / (0.8 * raw.events_per_sec)
        sink.details["ratio_to_postgres_raw"] = sink.events_per_sec / raw.events_per_sec
    return [raw, sink]
