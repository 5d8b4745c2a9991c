"""The NATS sink against real nats-server processes (JetStream, one node or a 3-node cluster),
driven through the real daemon: every accepted event is counted in the stream."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import nats.errors
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from telemetryd.config import ConfigError, parse_config
from telemetryd.core.record import Record
from telemetryd.sink import PartialDelivery, SinkHealth
from telemetryd_sinks.nats.acks import PublishError
from telemetryd_sinks.nats.sink import NatsSettings, NatsSink
from telemetryd_sinks.nats.subjects import msg_id, subject_for
from tests.support.config_text import daemon_config
from tests.support.daemon_process import DaemonProcess
from tests.support.load import AckedLoad
from tests.support.nats_process import (
    NatsServer,
    StoredMessage,
    add_stream,
    delete_stream,
    nats_cluster,
    read_stream,
    stream_info,
)
from tests.support.records import assert_record_shape
from tests.support.sink_health import readyz, sink_health
from tests.support.socket_client import CONTENTS, KERNELS, acked_connection, event_line
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CONTENTS_SUBJECT = "telemetryd.events_jupyter_org.jupyter_server.contents_service.v1.1"
KERNEL_SUBJECT = "telemetryd.events_jupyter_org.jupyter_server.kernel_actions.v1.1"


def nats_sink(servers: list[str], extra: str = "", name: str = "bus") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "nats"
servers = {json.dumps(servers)}
retry_initial_secs = 0.05
retry_max_secs = 1
{extra}
"""


def nats_daemon_config(workdir: Path, sinks: str, shutdown_timeout_secs: float = 20) -> str:
    return daemon_config(
        workdir,
        server='http = "127.0.0.1:0"',
        sinks=sinks,
        shutdown_timeout_secs=shutdown_timeout_secs,
    )


def paths(messages: list[StoredMessage]) -> Counter[str]:
    return Counter(json.loads(m.data)["path"] for m in messages)


@contextlib.contextmanager
def node_stopped_at_exit(node: NatsServer) -> Iterator[NatsServer]:
    try:
        yield node
    finally:
        node.stop(signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path) as node:
        yield node


# --- settings and names, no server ------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_id", "version", "subject"),
    [
        (CONTENTS, "1", CONTENTS_SUBJECT),
        (
            "https://example.org:8443/a//b c/*/>/v2?x=1#f",
            "2.1",
            "telemetryd.example_org_8443.a.b_c._._.v2.x_1.f.2_1",
        ),
        ("urn:telemetry:custom", "1", "telemetryd.telemetry_custom.1"),
        ("plain-id", "", "telemetryd.plain-id._"),
    ],
)
def test_subjects_are_tokens_of_letters_digits_dashes_and_underscores(
    schema_id: str, version: str, subject: str
) -> None:
    assert subject_for("telemetryd", schema_id, version) == subject


NATS_TABLE = '[[sinks]]\nname = "bus"\ntype = "nats"\n'
NOT_A_URL = "is not a NATS server URL such as nats://127.0.0.1:4222"
NOT_A_PREFIX = "is not a subject prefix: tokens of letters, digits, _ and -, separated by dots"


@pytest.mark.parametrize(
    ("lines", "key", "error"),
    [
        ('servers = ["http://127.0.0.1:4222"]', "servers", f"'http://127.0.0.1:4222' {NOT_A_URL}"),
        ('servers = ["nats://host:port"]', "servers", "'nats://host:port' has a bad port"),
        ("servers = []", "servers", "List should have at least 1 item"),
        ('subject_prefix = "events.*"', "subject_prefix", f"'events.*' {NOT_A_PREFIX}"),
        ('subject_prefix = "a..b"', "subject_prefix", f"'a..b' {NOT_A_PREFIX}"),
        ('stream = "A.B"', "stream", "'A.B' is not a stream name: letters, digits, _ and - only"),
        ("num_replicas = 0", "num_replicas", "Input should be greater than or equal to 1"),
        ('storage = "disk"', "storage", "Input should be 'file' or 'memory'"),
        (
            "max_age_secs = 60",
            "duplicate_window_secs",
            "duplicate_window_secs cannot be longer than max_age_secs (60.0)",
        ),
        ("max_outstanding_acks = 0", "max_outstanding_acks", "Input should be greater than 0"),
        ("ack_timeout_secs = 0", "ack_timeout_secs", "Input should be greater than 0"),
        ('password = "s3cret"', "user", "user and password go together"),
        (
            'user = "u"\npassword = "s3cret"\ntoken = "t0ken"',
            "user",
            "choose one authentication method, not user/password and token",
        ),
        ('creds_file = "/no/such.creds"', "creds_file", "no credentials file at /no/such.creds"),
        ('url = "http://127.0.0.1:4222"', "servers", f"'http://127.0.0.1:4222' {NOT_A_URL}"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(lines: str, key: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(NATS_TABLE + lines)
    message = str(raised.value)
    assert message.startswith(f"<string>: sinks[0].{key}: ")
    assert error in message
    assert "s3cret" not in message
    assert "t0ken" not in message


def test_url_is_one_server_as_design_md_writes_it() -> None:
    (sink,) = parse_config(NATS_TABLE + 'url = "nats://10.0.0.1:4222"\n').sinks
    assert sink.servers == ["nats://10.0.0.1:4222"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="set url or servers, not both"):
        parse_config(NATS_TABLE + 'url = "nats://a:1"\nservers = ["nats://b:1"]\n')


#: `telemetryd` in a process where `import nats` fails, as where the extra is not installed.
WITHOUT_NATS = """
import sys
from telemetryd.cli import main

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "nats":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
raise SystemExit(main(sys.argv[1:]))
"""


def test_check_config_names_the_extra_when_nats_py_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "telemetryd.toml"
    config.write_text(nats_daemon_config(tmp_path, nats_sink(["nats://127.0.0.1:4222"])))
    checked = subprocess.run(
        [sys.executable, "-c", WITHOUT_NATS, "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 2
    assert checked.stdout == ""
    assert checked.stderr == (
        f"{config}: sinks[0].type: sink type 'nats' needs the Python package 'nats', which is "
        "not installed: pip install 'telemetryd[nats]'\n"
    )
    with_nats = subprocess.run(
        [sys.executable, "-m", "telemetryd", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (with_nats.returncode, with_nats.stderr) == (0, "")
    assert with_nats.stdout.startswith(f"{config}: OK (1 sinks, ")


# --- one node ------------------------------------------------------------------------------


def test_records_reach_the_stream_once_on_their_subjects(
    tmp_path: Path, server: NatsServer
) -> None:
    limits = (
        "max_age_secs = 3600\nmax_bytes = 10485760\nmax_msgs = 50000\n"
        "duplicate_window_secs = 60\nbatch_max_events = 100\nmax_outstanding_acks = 64"
    )
    config = nats_daemon_config(tmp_path, nats_sink([server.url], limits))
    with DaemonProcess(tmp_path, config) as daemon:
        assert sink_health(daemon, "bus")["healthy"]
        sock, reader, _ = acked_connection(daemon)
        with sock:
            lines = [event_line(f"one-{n}") for n in range(1000)]
            data = {"action": "start", "msg": "kernel started", "kernel_id": "k-1"}
            kernel = {"schema_id": KERNELS, "version": "1", "data": data}
            lines.append(json.dumps(kernel).encode())
            sock.sendall(b"".join(line + b"\n" for line in lines))
            assert reader.until_ack(len(lines))[-1] == {"ack": len(lines)}
        wait_for(lambda: stream_info([server.url], "TELEMETRYD").state.messages == 1001, 10)
        assert daemon.stop() == 0
        log = daemon.log_lines()

    info = stream_info([server.url], "TELEMETRYD")
    stream = info.config
    assert (stream.subjects, stream.num_replicas, stream.storage) == (
        ["telemetryd.>"],
        1,
        StorageType.FILE,
    )
    assert (stream.max_age, stream.max_bytes, stream.max_msgs) == (3600, 10485760, 50000)
    assert stream.duplicate_window == 60
    stored = read_stream([server.url], "TELEMETRYD")
    contents = [m for m in stored if m.subject == CONTENTS_SUBJECT]
    assert paths(contents) == Counter({f"one-{n}": 1 for n in range(1000)})
    assert [json.loads(m.data)["path"] for m in contents] == [f"one-{n}" for n in range(1000)]
    (kernel_message,) = [m for m in stored if m.subject == KERNEL_SUBJECT]
    assert (
        assert_record_shape(json.loads(kernel_message.data), KERNELS, os.getpid())["action"]
        == "start"
    )
    for message in stored:
        assert message.msg_id == msg_id(message.data)
    assert assert_record_shape(json.loads(contents[0].data), CONTENTS, os.getpid()) == {
        "action": "save",
        "path": "one-0",
    }
    closed = [line for line in log if line.get("msg") == "NATS sink closed"]
    assert [(c["published"], c["duplicates"]) for c in closed] == [(1001, 0)]


def test_an_existing_stream_is_checked_and_never_changed(
    tmp_path: Path, server: NatsServer
) -> None:
    theirs = StreamConfig(
        name="TELEMETRYD", subjects=["other.>"], storage=StorageType.MEMORY, max_msgs=10
    )
    add_stream([server.url], theirs)
    config = nats_daemon_config(tmp_path, nats_sink([server.url]))
    with DaemonProcess(tmp_path, config) as daemon:
        sock, reader, _ = acked_connection(daemon)
        with sock:
            sock.sendall(event_line("waits") + b"\n")
            reader.until_ack(1)

        def reported() -> str | None:
            bus = sink_health(daemon, "bus")
            return bus["detail"] if not bus["healthy"] and "Mismatch" in bus["detail"] else None

        detail = wait_for(reported, 10, "the stream mismatch in /readyz")
        assert "subjects ['other.>'] do not include 'telemetryd.>'" in detail
        assert "storage is memory (the config says file)" in detail
        assert "max_msgs is 10 (the config says 0)" in detail
        assert "never changes an existing stream" in detail
        unchanged = stream_info([server.url], "TELEMETRYD")
        assert unchanged.config.subjects == ["other.>"]
        assert unchanged.config.storage == StorageType.MEMORY

        delete_stream([server.url], "TELEMETRYD")  # the operator's fix: the sink creates it
        wait_for(lambda: sink_health(daemon, "bus")["healthy"], 10, "the sink to recover")
        assert paths(read_stream([server.url], "TELEMETRYD")) == Counter({"waits": 1})
        assert daemon.stop() == 0


def test_a_batch_partly_refused_leaves_only_the_unacknowledged_records_to_retry(
    server: NatsServer,
) -> None:
    # A stream that takes 5 messages and refuses the rest (discard new): the first 5 records
    # of the batch are acknowledged, and only the others are handed back to the worker.
    full_at = 5
    wanted = NatsSettings(name="bus", type="nats", servers=[server.url], max_msgs=full_at)
    add_stream(
        [server.url],
        StreamConfig(
            name="TELEMETRYD",
            subjects=["telemetryd.>"],
            storage=StorageType.FILE,
            max_age=wanted.max_age_secs,
            max_bytes=wanted.max_bytes,
            max_msgs=full_at,
            duplicate_window=wanted.duplicate_window_secs,
            discard=DiscardPolicy.NEW,
        ),
    )
    batch = [Record(CONTENTS, "1", json.dumps({"path": f"p-{n}"}).encode(), 0.0) for n in range(8)]

    async def attempt() -> tuple[PartialDelivery, SinkHealth]:
        sink = NatsSink(wanted)
        await sink.start()
        try:
            with pytest.raises(PartialDelivery) as partial:
                await sink.write_batch(batch)
            return partial.value, sink.health()
        finally:
            await sink.close()

    partial, health = anyio.run(attempt)
    assert [r.payload for r in partial.remaining] == [r.payload for r in batch[full_at:]]
    assert isinstance(partial.cause, PublishError)
    assert "maximum messages exceeded" in str(partial.cause)
    assert not health.healthy
    assert paths(read_stream([server.url], "TELEMETRYD")) == Counter(
        {f"p-{n}": 1 for n in range(full_at)}
    )


def test_a_server_down_at_start_does_not_stop_the_daemon(tmp_path: Path) -> None:
    node = NatsServer(tmp_path)  # not started yet: its port refuses connections
    config = nats_daemon_config(tmp_path, nats_sink([node.url]))
    with DaemonProcess(tmp_path, config) as daemon, node_stopped_at_exit(node):
        warning = [
            line for line in daemon.log_lines() if line.get("logger") == "telemetryd.sink.nats"
        ]
        assert (
            warning[0]["msg"]
            == "NATS not available at start; the sink retries with its first batch"
        )
        assert "cannot connect to NATS" in warning[0]["error"]
        sock, reader, _ = acked_connection(daemon)
        with sock:
            sock.sendall(b"".join(event_line(f"early-{n}") + b"\n" for n in range(50)))
            reader.until_ack(50)  # accepted, queued for the sink
        bus = sink_health(daemon, "bus")
        assert not bus["healthy"]
        assert f"cannot connect to NATS: {node.url}: " in bus["detail"]
        assert bus["queued"] == 50

        node.start()
        wait_for(lambda: sink_health(daemon, "bus")["healthy"], 10, "the sink to connect")
        assert paths(read_stream([node.url], "TELEMETRYD")) == Counter(
            {f"early-{n}": 1 for n in range(50)}
        )
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("server_args", "right", "wrong", "in_url"),
    [
        (
            ("--user", "alice", "--pass", "s3cret"),
            'user = "alice"\npassword = "s3cret"',
            'user = "alice"\npassword = "guess"',
            "alice:s3cret@",
        ),
        (("--auth", "t0ken"), 'token = "t0ken"', 'token = "guess"', "t0ken@"),
    ],
    ids=["user-password", "token"],
)
def test_wrong_credentials_are_reported_while_the_right_ones_deliver(
    tmp_path: Path, server_args: tuple[str, ...], right: str, wrong: str, in_url: str
) -> None:
    with NatsServer(tmp_path, extra_args=server_args) as node:
        authenticated = [node.url.replace("://", f"://{in_url}")]  # the test's own client
        good = nats_sink([node.url], f'stream = "GOOD"\nsubject_prefix = "good"\n{right}', "good")
        bad = nats_sink([node.url], f'stream = "BAD"\nsubject_prefix = "bad"\n{wrong}', "bad")
        config = nats_daemon_config(tmp_path, good + bad, shutdown_timeout_secs=1)
        with DaemonProcess(tmp_path, config) as daemon:
            sock, reader, _ = acked_connection(daemon)
            with sock:
                sock.sendall(b"".join(event_line(f"auth-{n}") + b"\n" for n in range(10)))
                reader.until_ack(10)
            wait_for(lambda: stored_count(authenticated, "GOOD") == 10, 10, "10 events in GOOD")
            sinks = {sink["name"]: sink for sink in readyz(daemon)["sinks"]}
            assert sinks["good"]["healthy"]
            assert not sinks["bad"]["healthy"]
            assert "Authorization Violation" in sinks["bad"]["detail"]
            assert "guess" not in daemon.stderr()
            assert daemon.stop() == 0
            stats = daemon.final_stats()
        with pytest.raises(NotFoundError):
            stream_info(authenticated, "BAD")
    assert sink_entry(stats, "good")["sent"] == 10
    assert sink_entry(stats, "bad")["dropped"] == {"shutdown_timeout": 10}


# --- failures under load ---------------------------------------------------------------------


def sink_entry(stats: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [sink for sink in stats["sinks"] if sink["name"] == name]
    return dict(entry)


def stored_count(servers: list[str], stream: str = "TELEMETRYD") -> int:
    """Messages in the stream, or -1 while no server answers for it (a leader election)."""
    try:
        return stream_info(servers, stream).state.messages
    except nats.errors.Error:
        return -1


def check_every_event_stored(stored: list[StoredMessage], tag: str, accepted: int) -> int:
    """Every accepted event is in the stream; returns how many are there twice or more, each
    copy the same bytes under the same message id (a batch retried across the failure)."""
    counts = paths(stored)
    assert set(counts) == {f"{tag}-{n}" for n in range(accepted)}
    copies: dict[str, set[tuple[bytes, str | None]]] = {}
    for message in stored:
        copies.setdefault(json.loads(message.data)["path"], set()).add(
            (message.data, message.msg_id)
        )
    assert all(len(variants) == 1 for variants in copies.values())
    return sum(count - 1 for count in counts.values())


def test_the_stream_leader_killed_under_load(tmp_path: Path) -> None:
    stream_keys = (
        "num_replicas = 3\nmax_age_secs = 600\nmax_bytes = 104857600\nmax_msgs = 0\n"
        "duplicate_window_secs = 120\nack_timeout_secs = 2\nconnect_timeout_secs = 1\n"
        "batch_max_events = 200"
    )
    with nats_cluster(tmp_path) as nodes:
        urls = [node.url for node in nodes]
        # Made here, as the sink would, to know its leader first; the sink checks it.
        replicated = StreamConfig(
            name="TELEMETRYD",
            subjects=["telemetryd.>"],
            num_replicas=3,
            storage=StorageType.FILE,
            max_age=600,
            max_bytes=104857600,
            duplicate_window=120,
        )
        add_stream(urls, replicated)
        leader_name = stream_info(urls, "TELEMETRYD").cluster.leader  # type: ignore[union-attr]
        (leader,) = [node for node in nodes if node.name == leader_name]
        others = [node for node in nodes if node is not leader]
        # The daemon connects to the leader first: its connection and the stream's leader
        # die together, the hardest case.
        servers = [leader.url] + [node.url for node in others]
        config = nats_daemon_config(tmp_path, nats_sink(servers, stream_keys))
        with DaemonProcess(tmp_path, config) as daemon:
            with AckedLoad(daemon, "load", rate=2000) as load:
                wait_for(lambda: load.acked > 2000, 10, "the load to get going")
                leader.stop(signal.SIGKILL)
                at_kill = load.acked
                wait_for(lambda: load.acked > at_kill + 4000, 20, "acks after the kill")
                accepted = load.finish()
            survivors = [node.url for node in others]
            wait_for(lambda: stored_count(survivors) >= accepted, 30, f"{accepted} messages stored")
            assert daemon.stop() == 0
            bus = sink_entry(daemon.final_stats(), "bus")

        leader.start()  # the cluster recovers: the old leader catches up as a replica

        def recovered() -> bool:
            cluster = stream_info(urls, "TELEMETRYD").cluster
            replicas = cluster.replicas if cluster is not None else None
            return (
                bool(replicas)
                and len(replicas or []) == 2
                and all(r.current for r in replicas or [])
            )

        wait_for(recovered, 30, "every replica current")
        new_leader = stream_info(urls, "TELEMETRYD").cluster.leader  # type: ignore[union-attr]
        stored = read_stream(urls, "TELEMETRYD")

    duplicates = check_every_event_stored(stored, "load", accepted)
    assert new_leader != leader_name
    assert bus["sent"] == accepted
    assert len(stored) == accepted + duplicates
    # The duplicate window makes a retried message land once; what is left is reported.
    print(f"{accepted} events accepted, {duplicates} stored twice, {bus['retries']} retries")
