"""Every sink with a server, through the real daemon, across a 30 s outage of that server under
load: NATS JetStream, Redis, PostgreSQL, and an aggregator telemetryd behind the http sink. The
daemon goes on accepting (the events wait in the sink's queue) and, once the server is back,
every accepted event arrives: exactly once, or at least once where a batch whose answer was
lost may come twice, as each sink promises."""

from __future__ import annotations

import abc
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import nats.errors
import pytest

from telemetryd.auth import hash_token
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.load import AckedLoad
from tests.support.nats_process import NatsServer, read_stream, stream_info
from tests.support.postgres_process import PostgresServer
from tests.support.records import count_lines, read_records
from tests.support.redis_process import RedisServer
from tests.support.sink_health import final_sink, readyz, sink_health
from tests.support.socket_client import CONTENTS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

OUTAGE_SECS = 30
AFTER_RESTART_SECS = 2  # the load goes on while the queue drains, not only before
BATCH_MAX_EVENTS = 200
TAG = "outage"


# --- the destinations ------------------------------------------------------------------------


class Destination(abc.ABC):
    """A sink and its server: the sink's config section, the outage, and what arrived."""

    sink: ClassVar[str]  # the sink's name in the config and in /readyz
    rate: ClassVar[int]  # events a second the load sends
    accepted_over: ClassVar[int]  # events the daemon accepts from the outage on, at least
    duplicates_at_most: ClassVar[int]  # 0: exactly once; else the events of batches in flight
    daemons: tuple[DaemonProcess, ...] = ()  # the destination's own telemetryd, if it is one

    @abc.abstractmethod
    def __init__(self, tmp_path: Path) -> None: ...

    @abc.abstractmethod
    def __enter__(self) -> Destination: ...

    @abc.abstractmethod
    def __exit__(self, *exc: object) -> None: ...

    @abc.abstractmethod
    def sink_config(self) -> str: ...

    @abc.abstractmethod
    def outage_detail(self) -> str:
        """What the sink's /readyz detail says while the server is down."""

    @abc.abstractmethod
    def take_down(self) -> None: ...

    @abc.abstractmethod
    def bring_back(self) -> None: ...

    @abc.abstractmethod
    def count(self) -> int:
        """Events stored so far, copies included; cheap enough to poll."""

    @abc.abstractmethod
    def arrived(self) -> Counter[str]:
        """How many times each event (by its path) is stored."""


def section(name: str, kind: str, settings: str) -> str:
    """One [[sinks]] table; every sink retries soon after its first failure."""
    return f"""
[[sinks]]
name = "{name}"
type = "{kind}"
retry_initial_secs = 0.05
{settings}
"""


class Nats(Destination):
    """A JetStream node stopped cleanly (SIGTERM); the message ids make delivery exactly once."""

    sink = "bus"
    rate = 1000
    accepted_over = 15_000
    duplicates_at_most = 0

    def __init__(self, tmp_path: Path) -> None:
        self.server = NatsServer(tmp_path)

    def __enter__(self) -> Nats:
        try:
            self.server.start()
        except BaseException:
            self.server.stop(signal.SIGKILL)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(signal.SIGKILL)

    def sink_config(self) -> str:
        settings = f'servers = ["{self.server.url}"]\nretry_max_secs = 1\nack_timeout_secs = 2'
        return section(self.sink, "nats", settings)

    def outage_detail(self) -> str:
        return f"failed attempts: ConnectionError: cannot connect to NATS: {self.server.url}: "

    def take_down(self) -> None:
        self.server.stop()

    def bring_back(self) -> None:
        self.server.start()

    def count(self) -> int:
        try:
            return stream_info([self.server.url], "TELEMETRYD").state.messages
        except nats.errors.Error:
            return -1  # the stream not made yet, or the server not answering

    def arrived(self) -> Counter[str]:
        stored = read_stream([self.server.url], "TELEMETRYD")
        return Counter(json.loads(message.data)["path"] for message in stored)


class Redis(Destination):
    """redis-server killed (a crash); appendfsync always: an entry is on disk before its
    reply, so the server comes back with every entry it acknowledged."""

    sink = "streams"
    rate = 1000
    accepted_over = 20_000
    duplicates_at_most = BATCH_MAX_EVENTS  # the batch in flight at the crash
    STREAM = "telemetryd:{" + CONTENTS + "}:1"

    def __init__(self, tmp_path: Path) -> None:
        self.server = RedisServer(
            tmp_path / "redis", extra=["--appendonly", "yes", "--appendfsync", "always"]
        )

    def __enter__(self) -> Redis:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.kill()

    def sink_config(self) -> str:
        settings = (
            f'url = "{self.server.url}"\nbatch_max_events = {BATCH_MAX_EVENTS}\nretry_max_secs = 1'
        )
        return section(self.sink, "redis", settings)

    def outage_detail(self) -> str:
        return "ConnectionError"

    def take_down(self) -> None:
        self.server.kill()

    def bring_back(self) -> None:
        self.server.start()

    def count(self) -> int:
        with self.server.client() as client:
            return int(client.xlen(self.STREAM))

    def arrived(self) -> Counter[str]:
        with self.server.client() as client:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(self.STREAM)
        return Counter(json.loads(fields[b"record"])["path"] for _, fields in entries)


class Postgres(Destination):
    """A PostgreSQL cluster stopped with pg_ctl -m fast."""

    sink = "db"
    rate = 250
    accepted_over = OUTAGE_SECS * rate // 2
    duplicates_at_most = BATCH_MAX_EVENTS  # the batch whose commit was done, its answer lost
    TABLE = "events"

    def __init__(self, tmp_path: Path) -> None:
        self.server = PostgresServer()

    def __enter__(self) -> Postgres:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def sink_config(self) -> str:
        settings = (
            f'dsn = "{self.server.dsn()}"\ntable = "{self.TABLE}"\n'
            f"batch_max_events = {BATCH_MAX_EVENTS}\nretry_max_secs = 0.5"
        )
        return section(self.sink, "postgres", settings)

    def outage_detail(self) -> str:
        return "failed attempts"

    def take_down(self) -> None:
        self.server.stop("fast")

    def bring_back(self) -> None:
        self.server.start()

    def count(self) -> int:
        if self.server.value("SELECT to_regclass($1)", self.TABLE) is None:
            return 0
        count: int = self.server.value(f'SELECT count(*) FROM "{self.TABLE}"')
        return count

    def arrived(self) -> Counter[str]:
        rows = self.server.fetch(f'SELECT record FROM "{self.TABLE}"')
        return Counter(json.loads(row["record"])["path"] for row in rows)


AGENT_TOKEN = "agent-1-token-0123456789abcdefghijklmnopqrstuvwxyz"


class Aggregator(Destination):
    """An aggregator telemetryd stopped cleanly (SIGTERM), its POST /api/events/batch the
    http sink's destination; 3 batches in flight, each retried on its own through the outage."""

    sink = "forward"
    rate = 400
    accepted_over = 8_000
    duplicates_at_most = 3 * BATCH_MAX_EVENTS  # a batch in flight whose answer was lost, each

    def __init__(self, tmp_path: Path) -> None:
        self.workdir = tmp_path / "aggregator"
        self.workdir.mkdir()
        self.archive = self.workdir / "out" / "events.jsonl"
        self.server = DaemonProcess(self.workdir, self.config("0"))
        self.daemons = (self.server,)

    def config(self, port: str) -> str:
        """[auth] required; the agent's token may send contents_service events only."""
        auth = f"""
[auth]
required = true

[[auth.tokens]]
identity = "agent-1"
hash = "{hash_token(AGENT_TOKEN)}"
allowed_schemas = ["{CONTENTS}"]
"""
        sinks = file_sink("archive", self.archive) + auth
        return daemon_config(self.workdir, server=f'http = "127.0.0.1:{port}"', sinks=sinks)

    def __enter__(self) -> Aggregator:
        self.server.start()
        # Restarted on the port it was given, where the agent sends.
        self.port = http_port(self.server)
        self.server.config_path.write_text(self.config(str(self.port)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(None, None, None)

    def sink_config(self) -> str:
        settings = (
            f'url = "http://127.0.0.1:{self.port}/api/events/batch"\nformat = "events"\n'
            f'auth_token = "{AGENT_TOKEN}"\nbatches_in_flight = 3\n'
            f"batch_max_events = {BATCH_MAX_EVENTS}\nretry_max_secs = 1"
        )
        return section(self.sink, "http", settings)

    def outage_detail(self) -> str:
        return "ConnectError"

    def take_down(self) -> None:
        assert self.server.stop() == 0

    def bring_back(self) -> None:
        self.server.start()

    def count(self) -> int:
        return count_lines(self.archive)

    def arrived(self) -> Counter[str]:
        return Counter(record["path"] for record in read_records(self.archive))


DESTINATIONS: dict[str, type[Destination]] = {
    "nats": Nats,
    "redis": Redis,
    "postgres": Postgres,
    "http": Aggregator,
}


@pytest.fixture(params=list(DESTINATIONS))
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Destination]:
    with DESTINATIONS[request.param](tmp_path) as running:
        yield running


# --- the load and what the daemon says ---------------------------------------------------------


def where_they_wait(*daemons: DaemonProcess) -> str:
    """For a delivery that stalled: each daemon's /readyz, then its final counts after a stop,
    so a failure says which queue or sink held the records."""
    said = []
    for daemon in daemons:
        try:
            said.append(f"readyz: {readyz(daemon)}")
        except (httpx.HTTPError, AssertionError) as e:
            said.append(f"readyz failed: {e!r}")
        try:
            daemon.stop(timeout=20)
            said.append(f"stopped: {daemon.final_stats()}")
        except Exception as e:  # a daemon that does not stop: say so, the test fails anyway
            said.append(f"stop failed: {e!r}")
    return "\n".join(said)


# --- the outage ------------------------------------------------------------------------------


def test_every_accepted_event_arrives_across_a_30_s_outage(
    destination: Destination, tmp_path: Path
) -> None:
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    sinks = file_sink("archive", workdir / "out" / "events.jsonl") + destination.sink_config()
    config = daemon_config(workdir, server='http = "127.0.0.1:0"', sinks=sinks)
    name = destination.sink

    def outage_shown() -> dict[str, Any] | None:
        health = sink_health(daemon, name)
        shown = not health["healthy"] and destination.outage_detail() in health["detail"]
        return health if shown else None

    with DaemonProcess(workdir, config) as daemon:
        with AckedLoad(daemon, TAG, destination.rate) as load:
            wait_for(lambda: destination.count() > 100, 10, "events stored before the outage")
            destination.take_down()
            down_at = time.monotonic()
            try:
                wait_for(outage_shown, 10, "the sink to report the outage")
            except AssertionError as late:
                raise AssertionError(f"{late}: {sink_health(daemon, name)}") from None
            during = load.acked
            time.sleep(max(0.0, OUTAGE_SECS - (time.monotonic() - down_at)))  # the outage
            queued = sink_health(daemon, name)["queued"]
            destination.bring_back()
            back_at = time.monotonic()
            wait_for(lambda: sink_health(daemon, name)["healthy"], 15, "the sink to recover")
            time.sleep(max(0.0, AFTER_RESTART_SECS - (time.monotonic() - back_at)))  # more load
            accepted = load.finish()
        # Accepted all along the outage, queued meanwhile (at least half of what was sent).
        assert accepted - during > destination.accepted_over
        assert queued > destination.rate * OUTAGE_SECS // 2
        expected = {f"{TAG}-{n}" for n in range(accepted)}
        try:
            wait_for(lambda: destination.count() >= accepted, 30, "every accepted event")
            wait_for(lambda: set(destination.arrived()) >= expected, 10, "each accepted event")
        except AssertionError as stalled:
            stops = where_they_wait(daemon, *destination.daemons)
            raise AssertionError(f"{stalled}\n{stops}") from None
        wait_for(lambda: sink_health(daemon, name)["healthy"], 10, "the sink to be healthy")
        assert daemon.stop() == 0
        for other in destination.daemons:
            assert other.stop() == 0
        sink = final_sink(daemon, name)

    arrived = destination.arrived()
    assert set(arrived) == expected
    duplicated = {path: n for path, n in arrived.items() if n > 1}
    # A retried batch whose first attempt was stored comes twice, never more.
    assert all(n == 2 for n in duplicated.values()), duplicated
    assert len(duplicated) <= destination.duplicates_at_most
    assert sink["sent"] == accepted
    assert sink["dropped"] == {}
    print(f"{name}: {accepted} events accepted, {len(duplicated)} stored twice")
