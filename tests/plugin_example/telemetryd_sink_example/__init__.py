"""An example third-party telemetryd sink: records as rows of a SQLite database.

Everything a plugin needs: a settings model (the common keys inherited, unknown keys rejected),
start, write_batch that delivers every record or raises (the worker then retries the batch),
health, close. sqlite3 blocks, so each call runs in a worker thread; the worker hands over one
batch at a time, so one connection serves them all.

A batch is one transaction: committed, it is durable (WAL, synchronous = FULL); failed, it is
rolled back whole, so the worker's retry inserts each record once.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread
from pydantic import Field, field_validator

from telemetryd.sink import Record, Sink, SinkHealth, SinkSettings

__all__ = ["SqliteSettings", "SqliteSink"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SqliteSettings(SinkSettings):
    path: Path = Field(description="The SQLite database file (created, with its folders).")
    table: str = Field(default="records", description="The table the records go to.")
    busy_timeout_secs: float = Field(
        default=5.0,
        ge=0,
        description="How long a write waits for another connection's lock before the batch "
        "fails (and is retried).",
    )

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} is not a plain SQL name (letters, digits, _)")
        return value


class SqliteSink(Sink):
    """Inserts each record (its JSON text, schema id and version) as one row."""

    settings_model = SqliteSettings

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, SqliteSettings):
            raise TypeError(f"SqliteSink needs SqliteSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._settings = settings
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # a cancelled write's thread finishes before close
        self._error: str | None = None
        self._insert = f"INSERT INTO {settings.table} (schema_id, version, record) VALUES (?, ?, ?)"
        self.rows = 0

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        path = self._settings.path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path,
            timeout=self._settings.busy_timeout_secs,
            isolation_level=None,  # transactions are ours: BEGIN ... COMMIT per batch
            check_same_thread=False,  # one worker thread at a time, under the lock
        )
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self._settings.table} ("
                "id INTEGER PRIMARY KEY, schema_id TEXT NOT NULL, version TEXT NOT NULL, "
                "record TEXT NOT NULL)"
            )
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        rows = [(r.schema_id, r.version, r.payload.decode()) for r in batch]
        try:
            await anyio.to_thread.run_sync(self._write, rows)
        except sqlite3.Error as e:
            self._error = f"writing {self._settings.path}: {type(e).__name__}: {e}"
            raise
        self._error = None
        self.rows += len(rows)

    def _write(self, rows: list[tuple[str, str, str]]) -> None:
        with self._lock:
            db = self._db
            if db is None:
                raise sqlite3.ProgrammingError("the sqlite sink is not open")
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(self._insert, rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        return SinkHealth(True)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
