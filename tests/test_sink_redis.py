"""The redis sink against real redis-servers: one node and a 3 masters + 3 replicas cluster.

Events go through the real daemon, which also writes them to a file sink: every stream entry
must carry exactly the bytes of a record in that file, with its schema id and version beside
it, and every accepted event must be there, a 30 s crash of the server included."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
import redis
from pydantic import ValidationError
from redis.cluster import RedisCluster

from telemetryd.config import ConfigError, parse_config
from telemetryd.core.record import Record
from telemetryd.sink import PartialDelivery, SinkHealth
from telemetryd_sinks.redis import RedisSettings, RedisSink
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.redis_process import RedisClusterProcesses, RedisServer, make_certificates
from tests.support.socket_client import CONTENTS, KERNELS, event_line, send_acked
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

GATEWAY = "https://events.jupyter.org/jupyter_server/gateway_client/v1"
SCHEMAS = (CONTENTS, KERNELS, GATEWAY)
BATCH_MAX_EVENTS = 200
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def stream_name(schema_id: str, prefix: str = "telemetryd:", version: str = "1") -> str:
    return f"{prefix}{{{schema_id}}}:{version}"


def line(schema_id: str, i: int) -> bytes:
    if schema_id == CONTENTS:
        return event_line(f"n/{i}.ipynb")
    data: dict[str, str] = {"action": "start", "msg": f"m-{i}"}
    if schema_id == GATEWAY:
        data = {"status": "success", "msg": f"m-{i}"}
    return json.dumps({"schema_id": schema_id, "version": "1", "data": data}).encode()


def mixed_lines(count: int) -> list[bytes]:
    return [line(SCHEMAS[i % 3], i) for i in range(count)]


def redis_sink(url: str, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "streams"
type = "redis"
url = "{url}"
batch_max_events = {BATCH_MAX_EVENTS}
retry_initial_secs = 0.05
retry_max_secs = 1
{extra}
"""


def config(workdir: Path, sink: str) -> str:
    """The HTTP API on a free port for /readyz; a file sink beside, with the exact records."""
    sinks = file_sink("archive", workdir / "out" / "events.jsonl") + sink
    return daemon_config(workdir, server='http = "127.0.0.1:0"', sinks=sinks)


def archived(workdir: Path) -> dict[str, list[bytes]]:
    """The file sink's records, by schema id, in order."""
    by_schema: dict[str, list[bytes]] = {}
    for raw in (workdir / "out" / "events.jsonl").read_bytes().splitlines():
        by_schema.setdefault(json.loads(raw)["__schema__"], []).append(raw)
    return by_schema


def entries(client: redis.Redis | RedisCluster, key: str) -> Entries:
    return cast(Entries, client.xrange(key))


def assert_streams_hold(
    client: redis.Redis | RedisCluster, workdir: Path, prefix: str = "telemetryd:"
) -> None:
    """Each schema's stream holds exactly its records from the file sink, in order."""
    for schema_id, records in archived(workdir).items():
        found = entries(client, stream_name(schema_id, prefix))
        assert [fields[b"record"] for _, fields in found] == records
        assert {fields[b"schema_id"] for _, fields in found} == {schema_id.encode()}
        assert {fields[b"version"] for _, fields in found} == {b"1"}
        assert all(set(fields) == {b"record", b"schema_id", b"version"} for _, fields in found)


def total_len(client: redis.Redis | RedisCluster, prefix: str = "telemetryd:") -> int:
    return sum(int(client.xlen(stream_name(s, prefix))) for s in SCHEMAS)


def readyz_sink(daemon: DaemonProcess, name: str = "streams") -> dict[str, Any]:
    answer = httpx.get(f"http://127.0.0.1:{http_port(daemon)}/readyz", timeout=10).json()
    for sink in answer["sinks"]:
        if sink["name"] == name:
            entry: dict[str, Any] = sink
            return entry
    raise AssertionError(f"no sink {name!r} in /readyz: {answer}")


def unhealthy(daemon: DaemonProcess) -> dict[str, Any] | None:
    health = readyz_sink(daemon)
    return None if health["healthy"] else health


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def node(server: RedisServer) -> Iterator[redis.Redis]:
    with server.client() as client:
        client.flushall()
        yield client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(tmp_path_factory.mktemp("cluster")) as running:
        yield running


# --- settings -----------------------------------------------------------------------------------


def settings(**keys: Any) -> RedisSettings:
    return RedisSettings.model_validate({"name": "streams", "type": "redis", **keys})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"url": "http://127.0.0.1:6379"}, "redis://, rediss:// or unix://"),
        ({"startup_nodes": ["127.0.0.1:7000"]}, "startup_nodes needs cluster = true"),
        ({"cluster": True, "startup_nodes": ["127.0.0.1"]}, "is not host:port"),
        ({"cluster": True, "url": "unix:///run/redis.sock"}, "over TCP"),
        ({"cluster": True, "url": "redis://127.0.0.1:7000/2"}, "only database 0"),
        ({"stream_prefix": ""}, "set stream, or a stream_prefix"),
        ({"max_len": -1}, "greater than or equal to 0"),
        ({"method": "multi"}, "'script' or 'pipeline'"),
        ({"timeout_secs": 0}, "greater than 0"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**keys)


def test_an_unknown_key_is_a_config_error_naming_it() -> None:
    text = daemon_config(Path("/tmp/x"), sinks=redis_sink("redis://127.0.0.1:1", "maxlen = 5"))
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.maxlen.*unknown key"):
        parse_config(text)


def test_the_password_is_never_shown() -> None:
    shown = repr(settings(password="hunter2-secret"))
    assert "hunter2-secret" not in shown


# --- one node, through the daemon --------------------------------------------------------------


@pytest.mark.parametrize("method", ["script", "pipeline"])
def test_every_event_lands_in_its_schemas_stream_byte_for_byte(
    tmp_path: Path, server: RedisServer, node: redis.Redis, method: str
) -> None:
    lines = mixed_lines(3_000)
    sink = redis_sink(server.url, f'method = "{method}"')
    with DaemonProcess(tmp_path, config(tmp_path, sink)) as daemon:
        assert send_acked(daemon, lines) == []
        wait_for(lambda: total_len(node) >= len(lines), 30, "every event in redis")
        assert readyz_sink(daemon)["healthy"]
        assert daemon.stop() == 0
    assert {stream_name(s).encode() for s in SCHEMAS} == set(node.keys())
    assert [node.xlen(stream_name(s)) for s in SCHEMAS] == [1_000, 1_000, 1_000]
    assert_streams_hold(node, tmp_path)


def test_one_shared_stream_holds_every_schema(
    tmp_path: Path, server: RedisServer, node: redis.Redis
) -> None:
    lines = mixed_lines(900)
    sink = redis_sink(server.url, 'stream = "jupyter-events"')
    with DaemonProcess(tmp_path, config(tmp_path, sink)) as daemon:
        assert send_acked(daemon, lines) == []
        wait_for(lambda: node.xlen("jupyter-events") >= len(lines), 30, "every event")
        assert daemon.stop() == 0
    assert node.keys() == [b"jupyter-events"]
    found = entries(node, "jupyter-events")
    by_schema: dict[str, list[bytes]] = {}
    for _, fields in found:
        by_schema.setdefault(fields[b"schema_id"].decode(), []).append(fields[b"record"])
    # Within a schema the order is the order of arrival.
    assert by_schema == archived(tmp_path)


# --- trimming -----------------------------------------------------------------------------------


def record(schema_id: str, i: int) -> Record:
    payload = b'{"__schema__":"%s","i":%d}' % (schema_id.encode(), i)
    return Record(schema_id=schema_id, version="1", payload=payload, received=0.0)


async def write(sink_settings: RedisSettings, batches: list[list[Record]]) -> RedisSink:
    sink = RedisSink(sink_settings)
    await sink.start()
    try:
        for batch in batches:
            await sink.write_batch(batch)
    finally:
        await sink.close()
    return sink


@pytest.mark.parametrize("method", ["script", "pipeline"])
def test_streams_are_trimmed_to_about_max_len_keeping_the_newest(
    server: RedisServer, node: redis.Redis, method: str
) -> None:
    batches = [[record(s, i) for i in range(n, n + 500) for s in SCHEMAS] for n in (0, 500, 1000)]
    anyio.run(write, settings(url=server.url, max_len=200, method=method), batches)
    for schema_id in SCHEMAS:
        found = entries(node, stream_name(schema_id))
        # MAXLEN ~ drops whole macro nodes (100 entries by default), never below max_len.
        assert 200 <= len(found) < 300
        newest = [json.loads(fields[b"record"])["i"] for _, fields in found]
        assert newest == list(range(1500 - len(found), 1500))


# --- bad destination states ---------------------------------------------------------------------


def test_a_wrong_password_fails_the_batch_and_health_says_why(tmp_path: Path) -> None:
    batch = [record(CONTENTS, i) for i in range(10)]
    with RedisServer(tmp_path, extra=["--requirepass", "right-one"]) as secured:

        async def attempt(password: str) -> tuple[str, bool, str]:
            sink = RedisSink(settings(url=secured.url, password=password))
            await sink.start()
            raised = ""
            try:
                await sink.write_batch(batch)
            except redis.AuthenticationError as e:
                raised = type(e).__name__
            health = sink.health()
            await sink.close()
            return raised, health.healthy, health.detail

        raised, healthy, detail = anyio.run(attempt, "wrong-one")
        assert raised == "AuthenticationError"
        assert not healthy
        assert "AuthenticationError" in detail
        assert "wrong-one" not in detail
        assert anyio.run(attempt, "right-one") == ("", True, "")
        with secured.client(password="right-one") as client:
            assert client.xlen(stream_name(CONTENTS)) == 10


@pytest.mark.parametrize(
    ("commands", "method", "refused"),
    [
        ("+xadd", "pipeline", ""),
        ("+xadd", "script", "NoPermissionError"),
        ("+xadd +eval", "script", ""),
    ],
)
def test_an_acl_user_needs_eval_for_the_script_method(
    tmp_path: Path, commands: str, method: str, refused: str
) -> None:
    acl = f"producer on >producer-pw ~telemetryd:* +@connection {commands}".split()
    batch = [record(CONTENTS, i) for i in range(10)]
    with RedisServer(tmp_path, extra=["--user", *acl]) as secured:

        async def attempt() -> tuple[str, SinkHealth]:
            keys = {"username": "producer", "password": "producer-pw", "method": method}
            sink = RedisSink(settings(url=secured.url, **keys))
            await sink.start()
            raised = ""
            try:
                await sink.write_batch(batch)
            except redis.RedisError as e:
                raised = type(e).__name__
            health = sink.health()
            await sink.close()
            return raised, health

        raised, health = anyio.run(attempt)
        assert raised == refused
        assert health.healthy == (not refused)
        if refused:
            assert refused in health.detail
            assert '"i":' not in health.detail, "a record (personal data) in the logs"
        with secured.client() as client:
            assert client.xlen(stream_name(CONTENTS)) == (0 if refused else 10)


@pytest.mark.parametrize(("method", "commands"), [("script", 3), ("pipeline", 30)])
def test_a_batch_refused_on_some_streams_leaves_only_their_records_to_retry(
    tmp_path: Path, method: str, commands: int
) -> None:
    # The user may write only the contents schema's stream: the other two refuse the batch's
    # records, and the ones that landed must not be handed back to the worker.
    allowed = stream_name(CONTENTS)
    acl = f"producer on >producer-pw ~{allowed} +@connection +xadd +eval".split()
    batch = [record(SCHEMAS[i % 3], i) for i in range(30)]
    with RedisServer(tmp_path, extra=["--user", *acl]) as secured:

        async def attempt() -> tuple[PartialDelivery, str, SinkHealth]:
            keys = {"username": "producer", "password": "producer-pw", "method": method}
            sink = RedisSink(settings(url=secured.url, **keys))
            await sink.start()
            try:
                with pytest.raises(PartialDelivery) as partial:
                    await sink.write_batch(batch)
                health = sink.health()
                # Nothing of what is left can land: the error itself, not a PartialDelivery.
                with pytest.raises(redis.RedisError) as refused:
                    await sink.write_batch(partial.value.remaining)
            finally:
                await sink.close()
            return partial.value, type(refused.value).__name__, health

        partial, refused, health = anyio.run(attempt)
        assert [r.payload for r in partial.remaining] == [
            r.payload for r in batch if r.schema_id != CONTENTS
        ]
        assert isinstance(partial.cause, redis.exceptions.NoPermissionError)
        assert refused == "NoPermissionError"
        assert not health.healthy
        assert "NoPermissionError: " in health.detail
        assert f"({2 * commands // 3} of {commands} commands failed; " in health.detail
        assert '"i":' not in health.detail, "a record (personal data) in the logs"
        with secured.client() as client:
            assert [fields[b"record"] for _, fields in entries(client, allowed)] == [
                r.payload for r in batch if r.schema_id == CONTENTS
            ]


def test_tls_with_the_servers_ca_and_refused_without_it(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    batch = [record(CONTENTS, i) for i in range(10)]
    with RedisServer(tmp_path / "redis", tls=certificates) as secured:

        async def attempt(**keys: Any) -> tuple[bool, str]:
            sink = RedisSink(settings(url=secured.url, **keys))
            await sink.start()
            with contextlib.suppress(redis.ConnectionError):
                await sink.write_batch(batch)
            health = sink.health()
            await sink.close()
            return health.healthy, health.detail

        healthy, detail = anyio.run(attempt)  # the system's CAs do not know the test CA
        assert not healthy
        assert "CERTIFICATE_VERIFY_FAILED" in detail
        assert anyio.run(partial(attempt, tls_ca_file=certificates / "ca.crt")) == (True, "")
        with secured.client() as client:
            assert client.xlen(stream_name(CONTENTS)) == 10


def test_a_server_down_at_start_is_retried_not_fatal(tmp_path: Path) -> None:
    lines = mixed_lines(300)
    later = RedisServer(tmp_path / "redis")  # its port is chosen, nothing listens yet
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    with DaemonProcess(workdir, config(workdir, redis_sink(later.url))) as daemon:
        assert send_acked(daemon, lines) == []
        health = wait_for(lambda: unhealthy(daemon), 10, "the sink to report the failure")
        assert "ConnectionError" in health["detail"]
        with later, later.client() as client:
            wait_for(lambda: total_len(client) >= len(lines), 30, "every event after start")
            assert daemon.stop() == 0
            assert_streams_hold(client, workdir)


# --- a cluster ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["script", "pipeline"])
def test_a_cluster_takes_every_event_across_its_masters(
    tmp_path: Path, cluster: RedisClusterProcesses, method: str
) -> None:
    prefix = f"{method}:"
    first, *others = cluster.ports
    nodes = ", ".join(f'"127.0.0.1:{port}"' for port in others[:2])
    extra = f'cluster = true\nstartup_nodes = [{nodes}]\nstream_prefix = "{prefix}"\n'
    extra += f'method = "{method}"'
    lines = mixed_lines(3_000)
    sink = redis_sink(f"redis://127.0.0.1:{first}", extra)
    with cluster.client() as client:
        masters = {client.get_node_from_key(stream_name(s, prefix)).name for s in SCHEMAS}
        assert len(masters) > 1, "the schemas' streams must live on different masters"
        with DaemonProcess(tmp_path, config(tmp_path, sink)) as daemon:
            assert send_acked(daemon, lines) == []
            wait_for(lambda: total_len(client, prefix) >= len(lines), 30, "every event")
            assert readyz_sink(daemon)["healthy"]
            assert daemon.stop() == 0
        assert [client.xlen(stream_name(s, prefix)) for s in SCHEMAS] == [1_000] * 3
        assert_streams_hold(client, tmp_path, prefix)


def replicas_caught_up(cluster: RedisClusterProcesses) -> bool:
    """Every replica has every write of its master (replication is asynchronous)."""
    for server in cluster.nodes:
        with server.client() as client:
            info = client.info("replication")
        if info["role"] == "master" and any(
            int(info[f"slave{i}"]["offset"]) < int(info["master_repl_offset"])
            for i in range(int(info["connected_slaves"]))
        ):
            return False
    return True


def cluster_len(cluster: RedisClusterProcesses) -> int:
    """Entries in the three streams, asked of the cluster as it is now; 0 during a failover."""
    try:
        with cluster.client() as client:
            return total_len(client)
    except redis.RedisError:
        return 0


@pytest.mark.parametrize("method", ["script", "pipeline"])
def test_a_killed_master_is_replaced_by_its_replica_and_nothing_is_lost(
    tmp_path: Path, method: str
) -> None:
    with RedisClusterProcesses(tmp_path / "cluster") as own:
        first, *others = own.ports
        extra = f'cluster = true\nstartup_nodes = ["127.0.0.1:{others[0]}"]\nmethod = "{method}"'
        sink = redis_sink(f"redis://127.0.0.1:{first}", extra)
        workdir = tmp_path / "daemon"
        workdir.mkdir()
        with own.client() as client, DaemonProcess(workdir, config(workdir, sink)) as daemon:
            before = mixed_lines(600)
            assert send_acked(daemon, before) == []
            wait_for(lambda: total_len(client) >= len(before), 30, "the first events")
            wait_for(lambda: replicas_caught_up(own), 10, "the replicas to catch up")
            victim = client.get_node_from_key(stream_name(CONTENTS))
            on_victim = {
                s for s in SCHEMAS if client.get_node_from_key(stream_name(s)).name == victim.name
            }
            assert on_victim != set(SCHEMAS), "some stream's master must stay up"
            next(n for n in own.nodes if n.port == victim.port).kill()
            after = [line(SCHEMAS[i % 3], i) for i in range(600, 1_500)]
            assert send_acked(daemon, after) == []
            # The replica takes over after cluster-node-timeout (2 s) and an election.
            wait_for(lambda: cluster_len(own) >= 1_500, 40, "every event after the failover")
            assert daemon.stop() == 0
            stats = next(s for s in daemon.final_stats()["sinks"] if s["name"] == "streams")
            assert stats["retries"] > 0, "the sink never saw the master gone"
            with own.client() as fresh:  # the first client's slot map names the dead master
                by_schema = {s: entries(fresh, stream_name(s)) for s in SCHEMAS}
    records = archived(workdir)
    for schema_id, found in by_schema.items():
        stored = Counter(fields[b"record"] for _, fields in found)
        assert set(stored) == set(records[schema_id])
        duplicates = sum(stored.values()) - len(records[schema_id])
        if schema_id in on_victim:
            # At least once: what the killed master ran without its reply reaching the sink
            # (the batch in flight) is sent again, never more.
            assert duplicates <= BATCH_MAX_EVENTS, (schema_id, duplicates)
        else:
            # A retry sends only what failed: the streams whose master stayed up are written
            # once, whatever the other master did.
            assert duplicates == 0, (schema_id, duplicates)
