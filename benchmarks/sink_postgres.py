"""The postgres sink against asyncpg copying directly, into one throwaway PostgreSQL cluster.

- `postgres_raw`: one process builds the rows the sink would make of the same events (the same
  records, as jsonb, with their metadata columns) and copies them with asyncpg's
  `copy_records_to_table` in batches of BATCH_EVENTS, one COPY at a time, into a table of the
  sink's layout. Timed from its first COPY to the answer to its last; building the rows is not
  timed, so this is the client library's best case.
- `postgres_sink`: telemetryd, fed over its Unix socket (benchmarks.load.unix_loads), with the
  postgres sink (batches of BATCH_EVENTS, `batches_in_flight = BATCHES_IN_FLIGHT`) as its
  only sink. Timed from the load's first byte
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

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
    sink_target,
    time_client,
)
from telemetryd_sinks.postgres import COLUMNS, TableName, create_table_sql
from tests.support.daemon_process import http_port
from tests.support.postgres_process import PostgresServer

BATCH_EVENTS = 1000
#: Two COPYs at once: while one commits (an fsync), the next is on its way. With one, the
#: sink measured 0.70-0.82 of postgres_raw in the VM's slow periods; with two, 1.03-1.23.
BATCHES_IN_FLIGHT = 2
RAW_TABLE = "raw_events"
SINK_TABLE = "sink_events"
SINK_NAME = "db"
POLL_SECS = 0.01

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
    return client_report(
        start,
        count,
        bytes_sent=0,
        first=first,
        last=last,
        cpu_secs=cpu_seconds_self() - cpu_before,
        requests=len(batches),
    )


def run_raw(
    cluster: PostgresServer, events: int, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = ScenarioResult(
        "postgres_raw",
        f"{events:,} rows (the records of the same events, with the sink's columns) copied by "
        f"asyncpg's copy_records_to_table in batches of {BATCH_EVENTS:,}, one COPY at a time, "
        "from one process into a local PostgreSQL (durable defaults)",
        events,
    )
    folder.mkdir(parents=True)
    cluster.execute(create_table_sql(TableName(None, RAW_TABLE)))
    target = RawTarget(cluster.dsn(), RAW_TABLE, BATCH_EVENTS)
    # No postgres_cpu_secs here: see run_sink.
    time_client(result, LoadGroup(raw_copy_load, [(target, 0, events)]), progress)
    _verify_table(result, cluster, RAW_TABLE)
    # The sink's run must find the server as this one did: without this table's pages in
    # shared_buffers and its WAL to checkpoint.
    cluster.execute(f'DROP TABLE "{RAW_TABLE}"; CHECKPOINT')
    return finish(result)


# -- postgres_sink -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresDaemonConfig(SinkConfig):
    """A telemetryd whose only sink is the postgres sink, with the HTTP API for /metrics."""

    dsn: str = ""
    table: str = SINK_TABLE

    def sink_table(self) -> dict[str, object]:
        return {
            "name": SINK_NAME,
            "type": "postgres",
            "dsn": self.dsn,
            "table": self.table,
            "batches_in_flight": BATCHES_IN_FLIGHT,
        }


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


def run_sink(
    cluster: PostgresServer, events: int, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = ScenarioResult(
        "postgres_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into telemetryd "
        f"with the postgres sink (batches of {BATCH_EVENTS:,}, {BATCHES_IN_FLIGHT} in flight) as "
        "its only sink, into the same "
        "local PostgreSQL",
        events,
        target=sink_target("postgres"),
        latency_kind="accept to COPY committed (daemon histogram)",
    )
    measure_sink(
        result,
        folder,
        PostgresDaemonConfig(dsn=cluster.dsn(), batch_max_events=BATCH_EVENTS),
        progress,
        sink_name=SINK_NAME,
        counter=lambda daemon: SentCounter(http_port(daemon)),
        # Taken while the sink's backend is alive, so its CPU is counted (a backend that has
        # exited may not be reaped yet, which is why the raw run has no such figure).
        backend=BackendCpu("postgres_cpu_secs", cluster.cpu_seconds),
        stalled="the sink stopped sending at {count:,} of {expected:,} events",
        poll_secs=POLL_SECS,
    )
    _verify_table(result, cluster, SINK_TABLE)
    return finish(result)


# -- both --------------------------------------------------------------------------------------


def _verify_table(result: ScenarioResult, cluster: PostgresServer, table: str) -> None:
    """Reads back every row's event path: events 0 .. n-1, each exactly once."""

    async def paths() -> list[str | None]:
        connection = await asyncpg.connect(cluster.dsn())
        try:
            rows = await connection.fetch(f"SELECT record->>'path' FROM \"{table}\"")
            return [row[0] for row in rows]
        finally:
            await connection.close()

    try:
        found = asyncio.run(paths())
    except (OSError, asyncpg.PostgresError) as e:
        result.problems.append(f"cannot read {table}: {type(e).__name__}: {e}")
        return
    check_delivery(result, delivery_of(result.events, found, lambda path: path), table, "rows")


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(PostgresServer(settings=CLUSTER_SETTINGS))
        raw = run_raw(cluster, events, folder / "postgres_raw", progress)
        sink = run_sink(cluster, events, folder / "postgres_sink", progress)
    return against_raw(raw, sink)
