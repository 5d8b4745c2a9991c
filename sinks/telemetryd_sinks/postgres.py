"""The postgres sink: each batch is one binary COPY into a table, through an asyncpg pool.

One row per record. The whole record (docs/events.md, exactly as the file sink writes it) is the
`record` jsonb column, so analysis code that reads jupyter_events' records reads `record`
unchanged; its metadata is copied into columns of its own to filter and index on. COPY is one
statement and so one transaction: a batch is in the table entirely or not at all, and it is
delivered when the COPY has committed. A connection lost after the commit but before its
answer arrives makes the worker send that batch again: at-least-once, duplicates only ever of
the batch that was being written.

A database that is down (or refuses us) when the daemon starts does not stop the daemon: start
tries once to connect and create the table, logs what went wrong, and returns; every batch then
tries again (the worker retries with backoff) and health says why it is failing.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import msgspec
from pydantic import Field, field_validator

from telemetryd.core.record import Record
from telemetryd.sink import Sink, SinkHealth, SinkSettings

log = logging.getLogger("telemetryd.sink")

#: PostgreSQL cuts longer identifiers (NAMEDATALEN - 1), silently: refuse them instead.
MAX_IDENTIFIER_BYTES = 63
INDEX_SUFFIXES = ("_schema_time_idx", "_time_idx")
MAX_TABLE_BYTES = MAX_IDENTIFIER_BYTES - max(len(s) for s in INDEX_SUFFIXES)

#: The columns the sink fills, in the order of each row; received_at takes its default.
COLUMNS = ("event_time", "schema_id", "schema_version", "origin", "origin_user", "record")


class PostgresSettings(SinkSettings):
    dsn: str = Field(
        description="libpq connection URI, postgresql://user@host:port/database (query "
        "parameters such as sslmode are honoured). What it leaves out comes from the PG* "
        "environment variables and ~/.pgpass, as with libpq.",
    )
    password_file: Path | None = Field(
        default=None,
        description="A file holding the password (surrounding whitespace ignored), read at "
        "each new connection, so a rotated secret is picked up without a restart.",
    )
    table: str = Field(
        default="telemetry_events",
        description="The table, as name or schema.name (each part taken literally, "
        "case included, and quoted); the schema must exist.",
    )
    create_table: bool = Field(
        default=True,
        description="Create the table and its indexes if the table is absent; when false "
        "the table must exist (made by its owner) with the sink's columns.",
    )
    pool_max_size: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Most connections open at once; raised to batches_in_flight if lower (a "
        "COPY a connection). The pool replaces a connection that broke.",
    )
    connect_timeout_secs: float = Field(
        default=10.0, gt=0, description="Longest wait for a new connection (and its login)."
    )
    command_timeout_secs: float = Field(
        default=60.0,
        gt=0,
        description="Longest a batch's COPY (or the table's creation) may take; the attempt "
        "then fails and the worker retries the batch.",
    )

    @field_validator("dsn")
    @classmethod
    def _dsn_is_a_uri(cls, dsn: str) -> str:
        parts = urllib.parse.urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must be a URI starting with postgresql:// (e.g. "
                "postgresql://telemetry@db.example.org:5432/telemetry)"
            )
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError as e:
            raise ValueError(f"bad port in the URI: {e}") from None
        return dsn

    @field_validator("table")
    @classmethod
    def _table_is_a_name(cls, table: str) -> str:
        TableName.parse(table)
        return table


class TableName:
    """`name` or `schema.name`, each part quoted as an identifier (so kept literally)."""

    def __init__(self, schema: str | None, name: str) -> None:
        self.schema = schema
        self.name = name

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = text.split(".")
        if len(parts) > 2:
            raise ValueError(f"{text!r}: a table is name or schema.name, with at most one dot")
        for part in parts:
            if not part or "\x00" in part:
                raise ValueError(f"{text!r}: an empty name, or one holding a NUL")
            if len(part.encode()) > MAX_IDENTIFIER_BYTES:
                raise ValueError(f"{part!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
        if len(parts[-1].encode()) > MAX_TABLE_BYTES:
            raise ValueError(
                f"table name {parts[-1]!r} is longer than {MAX_TABLE_BYTES} bytes: its index "
                f"names add {max(len(s) for s in INDEX_SUFFIXES)} bytes and PostgreSQL would "
                f"cut them at {MAX_IDENTIFIER_BYTES}"
            )
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    @property
    def quoted(self) -> str:
        name = quote_identifier(self.name)
        return f"{quote_identifier(self.schema)}.{name}" if self.schema else name

    def index(self, suffix: str) -> str:
        return quote_identifier(self.name + suffix)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_table_sql(table: TableName) -> str:
    t = table.quoted
    schema_time, time = (table.index(suffix) for suffix in INDEX_SUFFIXES)
    return f"""
CREATE TABLE IF NOT EXISTS {t} (
    event_time timestamptz NOT NULL,
    schema_id text NOT NULL,
    schema_version text NOT NULL,
    origin jsonb NOT NULL,
    origin_user text,
    received_at timestamptz NOT NULL DEFAULT now(),
    record jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS {schema_time} ON {t} (schema_id, event_time);
CREATE INDEX IF NOT EXISTS {time} ON {t} (event_time);
COMMENT ON TABLE {t} IS 'telemetryd records: record is the whole record (__timestamp__, '
    '__schema__, __schema_version__, __origin__ and the event data); the other columns copy '
    'its metadata; received_at is when PostgreSQL stored the row.';
"""


# -- rows -------------------------------------------------------------------------------------


class _Head(msgspec.Struct):
    """The metadata of a record; msgspec skips the event data without building it."""

    event_time: datetime = msgspec.field(name="__timestamp__")
    origin: msgspec.Raw = msgspec.field(name="__origin__", default=msgspec.Raw(b"{}"))


class _Origin(msgspec.Struct):
    user: str | None = None


_decode_head = msgspec.json.Decoder(_Head).decode
_decode_origin = msgspec.json.Decoder(_Origin).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

Row = tuple[datetime, str, str, str, str | None, str]

#: How msgspec writes U+0000 in a string. PostgreSQL's jsonb cannot hold it and would refuse
#: the whole COPY, batch after batch, forever; such records are stored with U+FFFD instead.
#: Searched for in the decoded text: str's search measured twice as fast as bytes'.
ESCAPED_NUL = "\\u0000"


def without_nul(payload: bytes) -> bytes:
    """The record with every U+0000 (in keys and values) replaced by U+FFFD."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return _encode(clean(_decode_any(payload)))


@functools.lru_cache(maxsize=1024)
def origin_columns(origin: bytes) -> tuple[str, str | None]:
    """The origin's jsonb text and its user. Cached: every event of a client connection has
    the same origin."""
    try:
        user = _decode_origin(origin).user
    except msgspec.ValidationError:  # a user that is not a string: kept in origin only
        user = None
    return origin.decode(), user


def to_rows(batch: Sequence[Record]) -> tuple[list[Row], int]:
    """The rows of a batch, and how many records had U+0000 replaced."""
    rows: list[Row] = []
    replaced = 0
    for record in batch:
        payload = record.payload
        # asyncpg's jsonb codec takes str; a binary codec handing the bytes through measured
        # no faster (a Python call per value).
        text = payload.decode()
        if ESCAPED_NUL in text:
            payload = without_nul(payload)
            text = payload.decode()
            replaced += 1
        head = _decode_head(payload)
        origin, user = origin_columns(bytes(head.origin))
        rows.append((head.event_time, record.schema_id, record.version, origin, user, text))
    return rows, replaced


# -- the sink ---------------------------------------------------------------------------------


def redacted(dsn: str) -> str:
    """The DSN without its password, for logs and health."""
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = urllib.parse.urlencode(
        [
            (k, "***" if k in ("password", "sslpassword") else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def describe(error: BaseException) -> str:
    text = str(error) or "no detail"
    if isinstance(error, TimeoutError):
        text = "timed out"
    return f"{type(error).__name__}: {text}"


async def _keep_session(connection: Any) -> None:
    """The pool's reset on release: the sink changes no session state, and asyncpg's default
    reset is one more round trip per batch."""


class PostgresSink(Sink):
    """Copies records into a PostgreSQL table, one COPY per batch."""

    settings_model = PostgresSettings
    concurrent_batches = True  # each batch its own COPY, on its own pooled connection

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, PostgresSettings):
            raise TypeError(f"PostgresSink needs PostgresSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._settings = settings
        self.table = TableName.parse(settings.table)
        self.target = f"{redacted(settings.dsn)} table {self.table.quoted}"
        self._pool: Any = None  # asyncpg.Pool, made in start
        self._table_ready = not settings.create_table  # nothing to check: COPY will say
        self._error: str | None = None
        self.rows_written = 0
        self.nul_replaced = 0  # records stored with U+FFFD for U+0000

    async def start(self) -> None:
        settings = self._settings
        password: Callable[[], str] | None = None  # asyncpg calls it for each new connection
        if settings.password_file is not None:
            _read_password(settings.password_file)  # missing or unreadable: a config error
            password = functools.partial(_read_password, settings.password_file)
        # min_size 0: creating the pool connects nothing, so it cannot fail on a database
        # that is down; connections are made when a batch needs one.
        self._pool = await asyncpg.create_pool(
            settings.dsn,
            password=password,
            min_size=0,
            max_size=max(settings.pool_max_size, settings.batches_in_flight),
            timeout=settings.connect_timeout_secs,
            command_timeout=settings.command_timeout_secs,
            reset=_keep_session,
        )
        try:
            with anyio.fail_after(settings.connect_timeout_secs):
                async with self._pool.acquire() as connection:
                    await self._prepare_table(connection)
        except Exception as e:
            self._error = f"not written yet; at start: {describe(e)} ({self.target})"
            log.warning(
                "postgres sink cannot use the database yet; every batch will try again",
                extra={"fields": {"sink": self.name, "target": self.target, "error": describe(e)}},
            )

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        if self._pool is None:
            raise RuntimeError(f"postgres sink {self.name!r} is not started")
        rows, replaced = to_rows(batch)
        settings = self._settings
        try:
            # No acquire timeout: with one, asyncpg runs the acquire as a task of its own, and
            # that yield lets ingestion run before each COPY while the database waits
            # (measured: 8-15% of the sink's rate). A new connection is bounded by
            # connect_timeout_secs anyway, and only this worker ever waits for the pool.
            async with self._pool.acquire() as connection:
                if not self._table_ready:
                    await self._prepare_table(connection)
                await connection.copy_records_to_table(
                    self.table.name,
                    schema_name=self.table.schema,
                    records=rows,
                    columns=COLUMNS,
                    timeout=settings.command_timeout_secs,
                )
        except Exception as e:
            self._error = f"{describe(e)} ({self.target})"
            if isinstance(e, asyncpg.UndefinedTableError) and settings.create_table:
                self._table_ready = False  # dropped while we ran: the next attempt remakes it
            raise
        self._error = None
        self.rows_written += len(rows)
        if replaced:
            self.nul_replaced += replaced
            log.warning(
                "records held U+0000, which jsonb cannot store; stored with U+FFFD",
                extra={"fields": {"sink": self.name, "records": replaced}},
            )

    async def _prepare_table(self, connection: Any) -> None:
        """Creates the table and its indexes if the table is absent. The check comes first:
        CREATE ... IF NOT EXISTS needs the CREATE privilege even when the table exists."""
        if self._table_ready:
            return
        quoted = self.table.quoted
        timeout = self._settings.command_timeout_secs
        async with connection.transaction():
            exists = "SELECT to_regclass($1)"
            if await connection.fetchval(exists, quoted, timeout=timeout) is None:
                # Daemons starting together must not race to create the same table.
                await connection.fetchval(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    f"telemetryd:{quoted}",
                    timeout=timeout,
                )
                if await connection.fetchval(exists, quoted, timeout=timeout) is not None:
                    self._table_ready = True  # the other daemon made it while we waited
                    return
                await connection.execute(create_table_sql(self.table), timeout=timeout)
                log.info(
                    "postgres sink created its table",
                    extra={"fields": {"sink": self.name, "target": self.target}},
                )
        self._table_ready = True

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        return SinkHealth(True)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            with anyio.fail_after(self._settings.connect_timeout_secs):
                await pool.close()
        except TimeoutError:
            pool.terminate()


def _read_password(path: Path) -> str:
    return path.read_text().strip()
