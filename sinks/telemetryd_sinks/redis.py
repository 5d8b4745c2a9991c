"""The Redis sink: every record XADDed to a Redis stream, one round trip per batch and server.

An entry has three fields, so consumers can filter by schema without decoding the record:
`record` (the JSON record of docs/events.md, as bytes), `schema_id` and `version`. Records go to
one stream per schema version, `<stream_prefix>{<schema id>}:<version>`, or all to `stream`.

The braces are a Redis Cluster hash tag: the slot of a key is computed from the schema id
alone, so every version of one schema lives on one slot and a consumer can XREAD them in one
call (a multi-key XREAD across slots fails with CROSSSLOT). The key is the same on a single
node, so moving to a cluster keeps the names.

A batch is one non-transactional pipeline per server: on one server, one pipeline; in a
cluster, one per master that holds a stream of the batch (by the client's slot map), sent
concurrently. With `method = "script"` (the default) a pipeline holds one EVAL per schema
version of the batch, a Lua loop that XADDs each of its records; with `method = "pipeline"` it
holds one XADD per record. Both write the same entries; the script is 5 to 10 times faster,
because redis-py spends about 20 us of Python per pipelined command (packing it, parsing its
reply), and a server-side loop costs microseconds.

`write_batch` returns once every command answered. What failed is sent again, and only that:
each command's reply (or its pipeline's error) says whether its records landed, so when some
commands failed and others did not (a master of the cluster gone, a stream refusing a write),
the sink raises PartialDelivery with the failed commands' records and the worker retries only
those; when all failed, the error itself (the worker retries the whole batch). A failure of
one master therefore never duplicates the streams of the others. Records of a command whose
reply was lost after the server ran it (a master killed mid-reply, a timeout) are written
again: at least once, as the Sink contract says. redis-py's own retries are off: the worker's
backoff is the one retry loop, and health() reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from telemetryd.core.record import Record
from telemetryd.sink import PartialDelivery, Sink, SinkHealth, SinkSettings

SCHEMES = ("redis", "rediss", "unix")

#: KEYS[1]: the stream; ARGV: MAXLEN (0: none), schema id, version, then the records.
XADD_SCRIPT = """
local maxlen = tonumber(ARGV[1])
for i = 4, #ARGV do
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      'record', ARGV[i], 'schema_id', ARGV[2], 'version', ARGV[3])
  else
    redis.call('XADD', KEYS[1], '*', 'record', ARGV[i], 'schema_id', ARGV[2], 'version', ARGV[3])
  end
end
return #ARGV - 3
"""

Method = Literal["script", "pipeline"]


def _host_port(node: str) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{node!r} is not host:port, such as '127.0.0.1:7000'")
    return host.strip("[]"), int(port)  # [::1]:7000


class RedisSettings(SinkSettings):
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="The server: redis://[user:password@]host:port/db, rediss:// for TLS, "
        "unix:///path/to/redis.sock. With cluster = true, one node of the cluster, whose "
        "scheme and credentials apply to every node.",
    )
    cluster: bool = Field(False, description="Talk to a Redis Cluster (url is a startup node).")
    startup_nodes: list[str] = Field(
        default_factory=list,
        description="More cluster nodes (host:port) to discover the cluster from, tried "
        "after url's host; only with cluster = true.",
    )
    username: str | None = Field(None, description="ACL user; overrides the url's.")
    password: SecretStr | None = Field(None, description="Password; overrides the url's.")
    stream: str = Field(
        "",
        description="One stream for every record; empty: a stream per schema version, "
        "named <stream_prefix>{<schema id>}:<version>.",
    )
    stream_prefix: str = Field(
        "telemetryd:", description="Start of the per-schema stream names (stream empty)."
    )
    method: Method = Field(
        "script",
        description="How a batch is written: one EVAL per schema version whose Lua loop "
        "XADDs its records (script; the ACL user needs +eval and +xadd), or one pipelined "
        "XADD per record (pipeline; +xadd only, 5-10 times slower).",
    )
    max_len: int = Field(
        0,
        ge=0,
        description="Trim each stream to about this many entries (XADD MAXLEN ~); 0 keeps "
        "every entry.",
    )
    connect_timeout_secs: float = Field(5.0, gt=0, description="How long a connect may take.")
    timeout_secs: float = Field(
        10.0, gt=0, description="How long a send, or the wait for one reply, may take."
    )
    tls_ca_file: Path | None = Field(
        None,
        description="CA certificates (PEM) to verify the server with rediss://; default: "
        "the system's.",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"the url must start with redis://, rediss:// or unix://: {url!r}")
        return url

    @field_validator("startup_nodes")
    @classmethod
    def _nodes(cls, nodes: list[str]) -> list[str]:
        for node in nodes:
            _host_port(node)
        return nodes

    @model_validator(mode="after")
    def _cluster_shape(self) -> RedisSettings:
        if self.cluster:
            parts = urlsplit(self.url)
            if parts.scheme == "unix":
                raise ValueError("a Redis Cluster is reached over TCP: use a redis:// url")
            if parts.path.strip("/") not in ("", "0"):
                raise ValueError("a Redis Cluster has only database 0: drop the url's /db")
        elif self.startup_nodes:
            raise ValueError("startup_nodes needs cluster = true")
        if not self.stream and not self.stream_prefix:
            raise ValueError("set stream, or a stream_prefix for the per-schema streams")
        return self


RedisClient = Redis | RedisCluster


class Stream:
    """One schema version's stream and the command arguments around its records."""

    __slots__ = ("key", "script_args", "xadd_head", "xadd_tail")

    def __init__(self, key: str, schema_id: str, version: str, max_len: int) -> None:
        self.key = key
        self.script_args = (max_len, schema_id.encode(), version.encode())
        trim = ("MAXLEN", "~", max_len) if max_len else ()
        self.xadd_head = ("XADD", key, *trim, "*", b"record")
        self.xadd_tail = (b"schema_id", schema_id.encode(), b"version", version.encode())


class _Send:
    """One pipeline: its commands, and each one's stream and records."""

    __slots__ = ("commands", "keys", "records")

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.keys: list[str] = []
        self.records: list[Sequence[Record]] = []

    def add(self, command: tuple[Any, ...], key: str, records: Sequence[Record]) -> None:
        self.commands.append(command)
        self.keys.append(key)
        self.records.append(records)


def _one_server(key: str) -> None:
    return None


class RedisSink(Sink):
    """XADDs each record to its stream, one pipeline per batch and server."""

    settings_model = RedisSettings

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, RedisSettings):
            raise TypeError(f"RedisSink needs RedisSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._settings = settings
        self._client: RedisClient | None = None
        self._error: str | None = None
        self._streams: dict[tuple[str, str], Stream] = {}

    def stream_key(self, schema_id: str, version: str) -> str:
        """The stream a record of this schema version goes to."""
        if self._settings.stream:
            return self._settings.stream
        return f"{self._settings.stream_prefix}{{{schema_id}}}:{version}"

    async def start(self) -> None:
        # No connection yet: a server that is down at start-up is the worker's to retry,
        # not a reason for the daemon not to start.
        self._client = self._make_client()

    def _make_client(self) -> RedisClient:
        s = self._settings
        options: dict[str, Any] = {
            "socket_connect_timeout": s.connect_timeout_secs,
            "socket_timeout": s.timeout_secs,
            "retry": Retry(NoBackoff(), 0),
        }
        if s.username is not None:
            options["username"] = s.username
        if s.password is not None:
            options["password"] = s.password.get_secret_value()
        parts = urlsplit(s.url)
        tls = parts.scheme == "rediss"
        if tls and s.tls_ca_file is not None:
            options["ssl_ca_certs"] = str(s.tls_ca_file)
        if not s.cluster:
            return Redis.from_url(s.url, **options)
        options.setdefault("username", unquote(parts.username) if parts.username else None)
        options.setdefault("password", unquote(parts.password) if parts.password else None)
        first = (parts.hostname or "127.0.0.1", parts.port or 6379)
        nodes = [first, *(_host_port(node) for node in s.startup_nodes)]
        if tls:
            options["ssl"] = True
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            **options,
        )

    def _stream(self, record: Record) -> Stream:
        key = (record.schema_id, record.version)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = Stream(
                self.stream_key(*key), record.schema_id, record.version, self._settings.max_len
            )
        return stream

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        client = self._client
        if client is None:
            raise RuntimeError(f"redis sink {self.name!r} is not started")
        try:
            node_of = await self._router(client)
        except Exception as exc:
            await self._failed(client, [exc], f"{type(exc).__name__}: {exc}")
            raise
        if self._settings.method == "script":
            sends = self._script_sends(batch, node_of)
        else:
            sends = self._xadd_sends(batch, node_of)
        if len(sends) == 1:
            try:
                outcomes: list[list[Any] | BaseException] = [await self._send(client, sends[0])]
            except Exception as exc:
                await self._failed(client, [exc], f"{type(exc).__name__}: {exc}")
                raise
        else:
            # Each node's pipeline on its own: the others' replies are known even when one
            # node is gone (one cluster pipeline would raise for all of them).
            outcomes = await asyncio.gather(
                *(self._send(client, send) for send in sends), return_exceptions=True
            )
        failed: list[tuple[str, BaseException]] = []  # (stream, error) of each failed command
        lost: list[Sequence[Record]] = []  # the records of the failed commands
        commands = 0
        for send, outcome in zip(sends, outcomes, strict=True):
            commands += len(send.keys)
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled: not a failure of the destination
                failed.extend((key, outcome) for key in send.keys)
                lost.extend(send.records)
                continue
            for key, records, reply in zip(send.keys, send.records, outcome, strict=True):
                if isinstance(reply, Exception):
                    failed.append((key, reply))
                    lost.append(records)
        if not failed:
            self._error = None
            return
        key, first = failed[0]
        detail = (
            f"{type(first).__name__}: {first} ({len(failed)} of {commands} commands failed; "
            f"the first on stream {key!r})"
        )
        await self._failed(client, [error for _, error in failed], detail)
        if sum(map(len, lost)) == len(batch):
            raise first
        # The other commands were answered: only the failed ones' records are sent again.
        undelivered = {id(record) for records in lost for record in records}
        remaining = [record for record in batch if id(record) in undelivered]
        raise PartialDelivery(remaining, first) from first

    async def _router(self, client: RedisClient) -> Callable[[str], str | None]:
        """What groups the commands of a batch into pipelines: a cluster node's name (the
        cluster as this client knows it), or None (one server; or a slot the map misses,
        which its own pipeline routes)."""
        if not isinstance(client, RedisCluster):
            return _one_server
        await client.initialize()  # at once unless the slot map is missing or stale

        def node_of(key: str) -> str | None:
            try:
                node = client.get_node_from_key(key)
            except RedisError:
                return None
            return None if node is None else node.name

        return node_of

    async def _send(self, client: RedisClient, send: _Send) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in send.commands:
            pipe.execute_command(*command)
        # raise_on_error=False: redis-py's own error names the failed command with its
        # arguments, which are records (personal data) that must not reach the logs.
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _failed(
        self, client: RedisClient, errors: Sequence[BaseException], detail: str
    ) -> None:
        self._error = detail
        if isinstance(client, RedisCluster) and any(
            isinstance(error, RedisCluster.ERRORS_ALLOW_RETRY) for error in errors
        ):
            # A node is gone or the cluster is failing over: forget the slot map, so the
            # next attempt asks the cluster again and finds the replica promoted.
            with contextlib.suppress(Exception):  # closing what broke tells nothing new
                await client.aclose()

    def _script_sends(
        self, batch: Sequence[Record], node_of: Callable[[str], str | None]
    ) -> list[_Send]:
        """One EVAL per stream of the batch, in one pipeline per node."""
        # Grouped by schema version: each stream keeps its records' order; in a shared
        # `stream`, records of different schemas within one batch are grouped.
        groups: dict[Stream, list[Record]] = {}
        stream_of = self._stream
        for record in batch:
            stream = stream_of(record)
            records = groups.get(stream)
            if records is None:
                records = groups[stream] = []
            records.append(record)
        sends: dict[str | None, _Send] = {}
        for stream, records in groups.items():
            node = node_of(stream.key)
            send = sends.get(node)
            if send is None:
                send = sends[node] = _Send()
            send.add(
                (
                    "EVAL",
                    XADD_SCRIPT,
                    1,
                    stream.key,
                    *stream.script_args,
                    *[record.payload for record in records],
                ),
                stream.key,
                records,
            )
        return list(sends.values())

    def _xadd_sends(
        self, batch: Sequence[Record], node_of: Callable[[str], str | None]
    ) -> list[_Send]:
        """One XADD per record, in the batch's order, in one pipeline per node."""
        sends: dict[str | None, _Send] = {}
        send_of: dict[Stream, _Send] = {}
        stream_of = self._stream
        for record in batch:
            stream = stream_of(record)
            send = send_of.get(stream)
            if send is None:
                node = node_of(stream.key)
                send = sends.get(node)
                if send is None:
                    send = sends[node] = _Send()
                send_of[stream] = send
            send.add((*stream.xadd_head, record.payload, *stream.xadd_tail), stream.key, (record,))
        return list(sends.values())

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        return SinkHealth(True)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
