"""A third-party sink, installed as its own package (tests/plugin_example), found through the
`telemetryd.sinks` entry point and run by the real daemon: every event counted in its SQLite
database, byte for byte what the file sink stores."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from telemetryd.config import ConfigError, parse_config
from telemetryd.plugins import sink_types
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess
from tests.support.records import read_records
from tests.support.socket_client import event_line, send_acked
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

INSTALL = "pip install -e tests/plugin_example"


@pytest.fixture(autouse=True)
def installed() -> None:
    if "example_sqlite" not in sink_types():
        pytest.fail(f"the example plugin is not installed in this environment: {INSTALL}")


def sqlite_sink(path: Path, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "db"
type = "example_sqlite"
path = "{path}"
{extra}
"""


def rows(path: Path, table: str = "records") -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        found: list[tuple[str, str, str]] = db.execute(
            f"SELECT schema_id, version, record FROM {table} ORDER BY id"
        ).fetchall()
    db.close()
    return found


def test_every_event_is_a_row_of_the_plugins_database(tmp_path: Path) -> None:
    db = tmp_path / "out" / "records.db"
    archive = tmp_path / "out" / "events.jsonl"
    sinks = sqlite_sink(db, 'table = "events"') + file_sink("archive", archive)
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=sinks)) as daemon:
        send_acked(daemon, [event_line(f"p/{i}") for i in range(5_000)])
        assert daemon.stop() == 0

    stored = rows(db, "events")
    assert len(stored) == 5_000
    assert [json.loads(record) for _, _, record in stored] == read_records(archive)
    assert {(schema, version) for schema, version, _ in stored} == {
        ("https://events.jupyter.org/jupyter_server/contents_service/v1", "1")
    }
    [db_stats] = [s for s in daemon.final_stats()["sinks"] if s["name"] == "db"]
    assert db_stats["sent"] == 5_000
    assert db_stats["errors"] == {}


def test_a_locked_database_is_retried_until_every_event_is_in(tmp_path: Path) -> None:
    db = tmp_path / "out" / "records.db"
    sinks = sqlite_sink(db, "busy_timeout_secs = 0.05\nretry_max_secs = 0.5")
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=sinks)) as daemon:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            send_acked(daemon, [event_line(f"l/{i}") for i in range(500)])
            wait_for(lambda: locked(daemon), 10, "a write failed on the lock")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: len(rows(db)) == 500, 15, "500 rows")
        assert daemon.stop() == 0
    assert [json.loads(r)["path"] for _, _, r in rows(db)] == [f"l/{i}" for i in range(500)]


def locked(daemon: DaemonProcess) -> bool:
    return any("database is locked" in str(line.get("error")) for line in daemon.log_lines())


def test_its_settings_are_checked_as_the_shipped_sinks_are(tmp_path: Path) -> None:
    for extra, message in [
        ("tabel = 'x'", "tabel"),
        ("table = 'x; DROP TABLE y'", "not a plain SQL name"),
        ("busy_timeout_secs = -1", "busy_timeout_secs"),
    ]:
        text = daemon_config(tmp_path, sinks=sqlite_sink(tmp_path / "r.db", extra))
        config_path = tmp_path / "telemetryd.toml"
        config_path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            parse_config(text, config_path)


def test_the_plugin_runs_beside_concurrent_readers(tmp_path: Path) -> None:
    """WAL: analysts may query the database while the daemon writes to it."""
    db = tmp_path / "out" / "records.db"
    counts: list[int] = []
    stop = threading.Event()
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=sqlite_sink(db))) as daemon:

        def read() -> None:
            while not stop.is_set():
                counts.append(len(rows(db)))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for start in range(0, 2_000, 500):
                send_acked(daemon, [event_line(f"r/{i}") for i in range(start, start + 500)])
            wait_for(lambda: len(rows(db)) == 2_000, 15, "2,000 rows")
        finally:
            stop.set()
            reader.join(10)
        assert daemon.stop() == 0
    assert counts == sorted(counts)  # readers see whole batches arrive, never a row go away
    assert len(rows(db)) == 2_000
