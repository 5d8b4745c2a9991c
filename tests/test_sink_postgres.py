"""The postgres sink against a real PostgreSQL (tests/support/postgres_process.py) through the
real daemon: every accepted event becomes one row whose jsonb is the record the file sink writes;
the table is made when absent and reused when present; a database that is down, at start or
for 30 s under load, or a wrong password, costs no event and never the daemon."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest

from telemetryd_sinks.postgres import PostgresSettings, TableName, create_table_sql
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.postgres_process import PostgresServer
from tests.support.records import expected_origin, read_records
from tests.support.socket_client import CONTENTS, KERNELS, event_line, send_acked
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

WRITER_PASSWORD = "s3cret-for-writer"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        # writer: a password, and no CREATE on public (PostgreSQL 15's default).
        pg.execute(
            f"CREATE ROLE writer LOGIN PASSWORD '{WRITER_PASSWORD}';"
            "CREATE SCHEMA analytics; GRANT USAGE ON SCHEMA analytics TO writer;"
        )
        yield pg


@pytest.fixture
def pg(cluster: PostgresServer) -> PostgresServer:
    if not cluster.running:  # a failed test that stops it may have left it stopped
        cluster.start()
    return cluster


@pytest.fixture
def table() -> str:
    return f"events_{uuid.uuid4().hex[:12]}"


def postgres_sink(dsn: str, table: str, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "db"
type = "postgres"
dsn = "{dsn}"
table = {json.dumps(table)}
retry_initial_secs = 0.05
retry_max_secs = 0.5
{extra}
"""


def config(workdir: Path, sinks: str) -> str:
    archive = file_sink("archive", workdir / "out" / "events.jsonl")
    return daemon_config(workdir, server='http = "127.0.0.1:0"', sinks=archive + sinks)


def kernel_line(tag: str) -> bytes:
    data = {"action": "start", "msg": tag, "kernel_id": tag, "status": "success"}
    return json.dumps({"schema_id": KERNELS, "version": "1", "data": data}).encode()


def db_health(daemon: DaemonProcess) -> dict[str, Any]:
    """The postgres sink's entry in GET /readyz."""
    url = f"http://127.0.0.1:{http_port(daemon)}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    entries = [s for s in body["sinks"] if s["name"] == "db"]
    assert len(entries) == 1, body
    entry: dict[str, Any] = entries[0]
    return entry


CREATED = "postgres sink created its table"
NOT_YET = "postgres sink cannot use the database yet; every batch will try again"


def logged(daemon: DaemonProcess, message: str) -> int:
    return sum(1 for line in daemon.log_lines() if line.get("msg") == message)


def rows(pg: PostgresServer, table: str) -> list[dict[str, Any]]:
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))
    return [dict(r) for r in pg.fetch(f"SELECT * FROM {quoted}")]


def paths_in(pg: PostgresServer, table: str) -> Counter[str]:
    return Counter(json.loads(r["record"]).get("path", "") for r in rows(pg, table))


def count_rows(pg: PostgresServer, table: str) -> int:
    """Rows in `table`; 0 while it does not exist (yet)."""
    if pg.value("SELECT to_regclass($1)", f'"{table}"') is None:
        return 0
    count: int = pg.value(f'SELECT count(*) FROM "{table}"')
    return count


# --- every event, as its record -----------------------------------------------------------


@pytest.mark.parametrize("in_flight", [1, 3])
def test_every_event_is_a_row_holding_its_record(
    pg: PostgresServer, table: str, tmp_path: Path, in_flight: int
) -> None:
    # in_flight 3: three COPYs at once on three pooled connections, creating the table too
    assert pg.value("SELECT to_regclass($1)", table) is None
    tags = [f"save-{i}" for i in range(3000)] + ['odd é ✓ "quoted"', "nul\x00inside"]
    lines = [event_line(tag) for tag in tags] + [kernel_line(f"k-{i}") for i in range(700)]
    sink = postgres_sink(pg.dsn(), table, f"batches_in_flight = {in_flight}")
    with DaemonProcess(tmp_path, config(tmp_path, sink)) as daemon:
        assert send_acked(daemon, lines) == []
        wait_for(lambda: count_rows(pg, table) >= len(lines), 30, "every row")
        assert db_health(daemon)["healthy"] is True
        assert daemon.stop() == 0

    by_schema = pg.fetch(
        f'SELECT schema_id, schema_version, count(*) FROM "{table}" GROUP BY 1, 2 ORDER BY 1'
    )
    assert [tuple(r) for r in by_schema] == [(CONTENTS, "1", len(tags)), (KERNELS, "1", 700)]

    written = {_key(r): r for r in read_records(tmp_path / "out" / "events.jsonl")}
    assert len(written) == len(lines)
    stored = rows(pg, table)
    assert len(stored) == len(lines)
    for row in stored:
        record = json.loads(row["record"])
        expected = written[_key(record)]
        if record.get("path") == "nul\ufffdinside":  # jsonb cannot hold U+0000
            expected = expected | {"path": "nul\ufffdinside"}
        assert record == expected
        assert row["event_time"] == datetime.fromisoformat(record["__timestamp__"])
        assert row["schema_id"] == record["__schema__"]
        assert row["schema_version"] == record["__schema_version__"]
        assert json.loads(row["origin"]) == record["__origin__"] == expected_origin(os.getpid())
        assert row["origin_user"] == record["__origin__"]["user"]
        assert row["received_at"] >= row["event_time"]

    query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1"
    indexes = {r[0]: r[1] for r in pg.fetch(query, table)}
    assert indexes.keys() == {f"{table}_schema_time_idx", f"{table}_time_idx"}
    assert indexes[f"{table}_schema_time_idx"].endswith("(schema_id, event_time)")
    assert indexes[f"{table}_time_idx"].endswith("(event_time)")
    created = [
        line for line in daemon.log_lines() if line["msg"] == "postgres sink created its table"
    ]
    assert len(created) == 1

    # Started again, the daemon appends to the table it made.
    with DaemonProcess(tmp_path, config(tmp_path, postgres_sink(pg.dsn(), table))) as daemon:
        assert send_acked(daemon, [event_line(f"again-{i}") for i in range(100)]) == []
        wait_for(lambda: count_rows(pg, table) >= len(lines) + 100, 30, "the new rows")
        assert daemon.stop() == 0
    assert count_rows(pg, table) == len(lines) + 100
    created = [
        line for line in daemon.log_lines() if line["msg"] == "postgres sink created its table"
    ]
    assert len(created) == 1  # the log spans both runs


def _key(record: dict[str, Any]) -> str:
    path = record.get("path") or record.get("msg") or ""
    return str(path).replace("\x00", "\ufffd")


def test_a_table_made_by_its_owner_is_used_as_it_is(pg: PostgresServer, tmp_path: Path) -> None:
    """Schema-qualified, an awkward name, an extra column, no indexes, and a role that may
    insert but not create: the sink neither needs nor tries to create anything."""
    name = 'Odd "Name" ' + uuid.uuid4().hex[:6]
    quoted = '"analytics"."' + name.replace('"', '""') + '"'
    pg.execute(
        f"""CREATE TABLE {quoted} (
            event_time timestamptz NOT NULL, schema_id text NOT NULL,
            schema_version text NOT NULL, origin jsonb NOT NULL, origin_user text,
            received_at timestamptz NOT NULL DEFAULT now(), record jsonb NOT NULL,
            note text DEFAULT 'kept');
        GRANT INSERT, SELECT ON {quoted} TO writer;"""
    )
    secret = tmp_path / "pg-password"
    secret.write_text(WRITER_PASSWORD + "\n")
    sink = postgres_sink(pg.dsn(user="writer"), f"analytics.{name}", f'password_file = "{secret}"')
    with DaemonProcess(tmp_path, config(tmp_path, sink)) as daemon:
        assert send_acked(daemon, [event_line(f"owned-{i}") for i in range(200)]) == []
        wait_for(lambda: pg.value(f"SELECT count(*) FROM {quoted}") == 200, 30, "200 rows")
        assert db_health(daemon)["healthy"] is True
        assert daemon.stop() == 0
    assert pg.value(f"SELECT count(*) FROM {quoted} WHERE note = 'kept'") == 200
    assert pg.value("SELECT count(*) FROM pg_indexes WHERE tablename = $1", name) == 0
    assert pg.value(f"SELECT count(DISTINCT record->>'path') FROM {quoted}") == 200


def test_a_table_dropped_while_running_is_made_again(
    pg: PostgresServer, table: str, tmp_path: Path
) -> None:
    with DaemonProcess(tmp_path, config(tmp_path, postgres_sink(pg.dsn(), table))) as daemon:
        assert send_acked(daemon, [event_line(f"before-{i}") for i in range(20)]) == []
        wait_for(lambda: count_rows(pg, table) == 20, 30, "the first rows")
        pg.execute(f'DROP TABLE "{table}"')
        assert send_acked(daemon, [event_line(f"after-{i}") for i in range(30)]) == []
        wait_for(lambda: pg.value("SELECT to_regclass($1)", table), 30, "the table again")
        wait_for(lambda: count_rows(pg, table) == 30, 30, "the later rows")
        assert daemon.stop() == 0
    assert paths_in(pg, table) == Counter({f"after-{i}": 1 for i in range(30)})
    assert logged(daemon, CREATED) == 2


# --- the database refuses, or is away --------------------------------------------------------


def test_a_wrong_password_is_reported_until_the_secret_is_fixed(
    pg: PostgresServer, table: str, tmp_path: Path
) -> None:
    pg.execute(create_table_sql(TableName(None, table)))
    pg.execute(f'GRANT INSERT, SELECT ON "{table}" TO writer;')
    secret = tmp_path / "pg-password"
    secret.write_text("not-the-password")
    sink = postgres_sink(pg.dsn(user="writer"), table, f'password_file = "{secret}"')
    with DaemonProcess(tmp_path, config(tmp_path, sink)) as daemon:
        assert send_acked(daemon, [event_line(f"held-{i}") for i in range(50)]) == []
        health = wait_for(lambda: _unhealthy(daemon), 10, "the sink to say it is unhealthy")
        assert 'password authentication failed for user "writer"' in health["detail"]
        assert "not-the-password" not in daemon.stderr()
        assert count_rows(pg, table) == 0
        secret.write_text(WRITER_PASSWORD)  # read again at the next connection attempt
        wait_for(lambda: count_rows(pg, table) == 50, 30, "the held rows")
        wait_for(lambda: db_health(daemon)["healthy"], 10, "the sink to be healthy again")
        assert daemon.stop() == 0
    assert sorted(paths_in(pg, table).values()) == [1] * 50


def _failing(daemon: DaemonProcess) -> dict[str, Any] | None:
    """The sink's health once the worker reports failed attempts at a batch."""
    health = db_health(daemon)
    return health if "failed attempts" in health["detail"] else None


def _unhealthy(daemon: DaemonProcess) -> dict[str, Any] | None:
    health = db_health(daemon)
    return None if health["healthy"] else health


def test_a_database_down_at_start_leaves_the_daemon_running(
    pg: PostgresServer, table: str, tmp_path: Path
) -> None:
    pg.stop()
    with DaemonProcess(tmp_path, config(tmp_path, postgres_sink(pg.dsn(), table))) as daemon:
        assert logged(daemon, NOT_YET) == 1
        health = db_health(daemon)
        assert health["healthy"] is False
        assert "not written yet; at start" in health["detail"]
        assert send_acked(daemon, [event_line(f"early-{i}") for i in range(300)]) == []
        health = wait_for(lambda: _failing(daemon), 10, "a failed attempt")
        assert "Connection refused" in health["detail"]
        pg.start()
        wait_for(lambda: count_rows(pg, table) == 300, 30, "the queued rows")
        wait_for(lambda: db_health(daemon)["healthy"], 10, "the sink to be healthy")
        assert daemon.stop() == 0
    assert sorted(paths_in(pg, table).values()) == [1] * 300


# --- settings --------------------------------------------------------------------------------


def settings(**values: Any) -> PostgresSettings:
    return PostgresSettings.model_validate(
        {"name": "db", "type": "postgres", "dsn": "postgresql://u@db.example.org/t"} | values
    )


def test_settings_defaults_and_quoting() -> None:
    default = settings()
    assert (default.table, default.create_table, default.pool_max_size) == (
        "telemetry_events",
        True,
        1,
    )
    assert TableName.parse('analytics.Odd "Name"').quoted == '"analytics"."Odd ""Name"""'
    assert TableName.parse("events").quoted == '"events"'


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dsn": "db.example.org:5432"}, "must be a URI starting with postgresql://"),
        ({"dsn": "postgresql://db:port/t"}, "bad port"),
        ({"table": "a.b.c"}, "at most one dot"),
        ({"table": "analytics."}, "an empty name"),
        ({"table": "x" * 48}, "longer than 47 bytes"),
        ({"pool_max_size": 0}, "greater than or equal to 1"),
        ({"connect_timeout_secs": 0}, "greater than 0"),
        ({"command_timeout": 5}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_clearly(values: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        settings(**values)
