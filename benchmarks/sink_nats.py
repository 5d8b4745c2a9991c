"""The nats sink against nats-py publishing directly, into one throwaway JetStream server.

- `nats_raw`: one process publishes the records the daemon would make of the same events (the
  same bytes, subjects and `Nats-Msg-Id` headers) with nats-py's JetStream `publish_async`, in
  batches of BATCH_EVENTS, each batch's acknowledgements awaited before the next, at most
  WINDOW unacknowledged (`publish_async_max_pending`). Timed from its first publish to its last
  acknowledgement; building the records is not timed, so this is the client library's best case.
- `nats_sink`: telemetryd, fed over its Unix socket (benchmarks.load.unix_loads), with the nats
  sink (batches of BATCH_EVENTS, max_outstanding_acks = WINDOW) as its only sink. Timed from the
  load's first byte until the server's monitoring endpoint (/jsz) counts every event in the
  stream.

Both write to a stream of the sink's settings (file storage, one replica) on the same local
nats-server; the raw stream is deleted before the sink's run. Each stream is then read back:
every event 0 .. n-1 must be there exactly once, or the run is FAILED.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from benchmarks.daemon_metrics import sink_latency
from benchmarks.daemon_process import DaemonConfig, DaemonProcess, DaemonResult, _table, cpu_seconds
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
from benchmarks.scenarios import ScenarioResult
from benchmarks.verify import Delivery
from telemetryd.record import RECORD_START, record_head
from telemetryd.sinks.nats_stream import WantedStream
from telemetryd.sinks.nats_subjects import MSG_ID_HEADER, msg_id, subject_for
from telemetryd.timestamps import now_utc

BATCH_EVENTS = 1000
WINDOW = 1000  # unacknowledged messages at most, in both runs
TARGET = "the nats sink delivers >= 80% of nats_raw's rate"
STREAM = "BENCH"
PREFIX = "bench"
SINK_NAME = "bus"
STALL_SECS = 30.0
POLL_SECS = 0.01

ProgressFn = Callable[[int, int], None]

#: The stream as the sink creates it with the settings of NatsDaemonConfig.
WANTED = WantedStream(
    name=STREAM,
    subject=f"{PREFIX}.>",
    num_replicas=1,
    storage="file",
    max_age_secs=0,
    max_bytes=0,
    max_msgs=0,
    duplicate_window_secs=120,
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """`nats-server -js` on loopback ports, its store in `folder`; stopped by leaving it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.monitor_port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> NatsServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("nats-server") or "nats-server",
            "-js",
            "-sd",
            str(self.folder / "store"),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
        ]
        with (self.folder / "server.log").open("wb") as log:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while self._jsz_or_none() is None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("nats-server did not start; see " + str(self.folder))
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self._proc.pid) if self._proc is not None else 0.0

    def _jsz_or_none(self) -> dict[str, object] | None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.monitor_port, timeout=2)
            connection.request("GET", "/jsz")
            answer: dict[str, object] = json.loads(connection.getresponse().read())
            connection.close()
            return answer
        except (OSError, ValueError):
            return None


class StoredCounter:
    """Messages in the stream, from the server's /jsz, on one keep-alive connection."""

    def __init__(self, server: NatsServer) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", server.monitor_port, timeout=30)

    def poll(self) -> int:
        self._connection.request("GET", "/jsz?streams=true")
        answer = json.loads(self._connection.getresponse().read())
        for account in answer.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if stream.get("name") == STREAM:
                    return int(stream["state"]["messages"])
        return 0

    def close(self) -> None:
        self._connection.close()


def _wait_for_stored(
    counter: StoredCounter, expected: int, progress: ProgressFn, loads_done: Callable[[], bool]
) -> float | None:
    """perf_counter() when the stream holds `expected` messages; None if it stalls first."""
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


# -- nats_raw ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawTarget:
    url: str
    batch_events: int
    window: int


def records(start: int, count: int) -> list[bytes]:
    """The records the daemon makes of events start .. start+count-1 sent by this process."""
    user = pwd.getpwuid(os.getuid()).pw_name
    origin = {"transport": "unix", "user": user, "uid": os.getuid(), "gid": os.getgid()}
    origin["pid"] = os.getpid()
    head = record_head(SCHEMA_ID, SCHEMA_VERSION) + msgspec.json.encode(origin)
    out = []
    for n in range(start, start + count):
        data = msgspec.json.encode(event_data(n))
        out.append(RECORD_START + now_utc().encode() + head + b"," + data[1:])
    return out


def raw_publish_load(ready: ReadyFn, target: RawTarget, start: int, count: int) -> LoadReport:
    """Publishes the records of events start .. start+count-1 with publish_async."""
    payloads = records(start, count)
    subject = subject_for(PREFIX, SCHEMA_ID, SCHEMA_VERSION)
    return uvloop.run(_publish(ready, target, subject, payloads, start))


async def _publish(
    ready: ReadyFn, target: RawTarget, subject: str, payloads: list[bytes], start: int
) -> LoadReport:
    nc = await nats.connect(target.url)
    try:
        js = nc.jetstream(publish_async_max_pending=target.window)
        ready(sum(len(p) for p in payloads))
        cpu_before = cpu_seconds_self()
        first = time.perf_counter()
        for at in range(0, len(payloads), target.batch_events):
            pending = [
                await js.publish_async(subject, payload, headers={MSG_ID_HEADER: msg_id(payload)})
                for payload in payloads[at : at + target.batch_events]
            ]
            await asyncio.gather(*pending)
        last = time.perf_counter()
        cpu = cpu_seconds_self() - cpu_before
    finally:
        await nc.close()
    return LoadReport(
        start=start,
        events=len(payloads),
        bytes_sent=sum(len(p) for p in payloads),
        first_byte=first,
        last_byte=last,
        closed=last,
        reply_bytes=0,
        cpu_secs=cpu,
        max_rss_bytes=max_rss_bytes_self(),
    )


def run_raw(server: NatsServer, events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "nats_raw",
        f"{events:,} records (the daemon's bytes, subjects and Nats-Msg-Id headers for the same "
        f"events) published by nats-py's JetStream publish_async in batches of "
        f"{BATCH_EVENTS:,}, at most {WINDOW:,} unacknowledged, from one process into a local "
        "nats-server (file storage, one replica)",
        events,
    )
    folder.mkdir(parents=True)
    asyncio.run(_stream_admin(server.url, create=True))
    progress(0, events)
    with LoadGroup(
        raw_publish_load, [(RawTarget(server.url, BATCH_EVENTS, WINDOW), 0, events)]
    ) as loads:
        try:
            loads.start()
            server_cpu = server.cpu_seconds()
            loads.go()
            reports = loads.reports()
            result.details["nats_server_cpu_secs"] = server.cpu_seconds() - server_cpu
        except LoadError as e:
            result.problems.append(str(e))
            reports = []
    if reports:
        report = reports[0]
        result.elapsed_secs = report.last_byte - report.first_byte
        result.cpu_secs_server = report.cpu_secs  # the publishing process: nats-py's side
        result.peak_rss_bytes = report.max_rss_bytes
        result.details["load"] = asdict(report) | {"latencies_ns": None}
    progress(events, events)
    _verify_stream(result, server)
    asyncio.run(_stream_admin(server.url, create=False))  # the sink's run starts empty
    return _finish(result)


# -- nats_sink ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NatsDaemonConfig(DaemonConfig):
    """A telemetryd whose only sink is the nats sink."""

    url: str = ""

    def render(self, folder: Path) -> str:
        server = {
            "unix_socket": folder / "run" / "telemetryd.sock",
            "shutdown_timeout_secs": self.shutdown_timeout_secs,
            "http": "127.0.0.1:0",  # GET /metrics: the latency histogram's p99.9
        }
        sink = {
            "name": SINK_NAME,
            "type": "nats",
            "servers": [self.url],
            "stream": WANTED.name,
            "subject_prefix": PREFIX,
            "max_age_secs": WANTED.max_age_secs,
            "max_bytes": WANTED.max_bytes,
            "max_msgs": WANTED.max_msgs,
            "duplicate_window_secs": WANTED.duplicate_window_secs,
            "max_outstanding_acks": WINDOW,
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


def run_sink(server: NatsServer, events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    config = NatsDaemonConfig(url=server.url, batch_max_events=BATCH_EVENTS)
    result = ScenarioResult(
        "nats_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into telemetryd "
        f"with the nats sink (batches of {BATCH_EVENTS:,}, max_outstanding_acks = {WINDOW:,}) "
        "as its only sink, into the same nats-server",
        events,
        target=TARGET,
        latency_kind="accept to acknowledged by JetStream (daemon histogram)",
    )
    folder.mkdir(parents=True)
    reports: list[LoadReport] = []
    written_at: float | None = None
    with DaemonProcess(folder, config) as daemon:
        daemon.start()
        counter = StoredCounter(server)
        try:
            with unix_loads(daemon.socket_path, split(events, 1)) as loads:
                loads.start()
                cpu_before = daemon.cpu_seconds()
                server_cpu = server.cpu_seconds()
                loads.go()
                written_at = _wait_for_stored(counter, events, progress, loads.done)
                result.cpu_secs_server = daemon.cpu_seconds() - cpu_before
                result.details["nats_server_cpu_secs"] = server.cpu_seconds() - server_cpu
                result.peak_rss_bytes = daemon.peak_rss_bytes()
                if written_at is None:
                    result.problems.append(
                        f"the stream stopped growing at {counter.poll():,} of {events:,} events"
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
    _verify_stream(result, server)
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


async def _stream_admin(url: str, *, create: bool) -> None:
    nc = await nats.connect(url)
    try:
        jsm = nc.jsm(timeout=30)
        if create:
            await jsm.add_stream(WANTED.config())
        else:
            await jsm.delete_stream(STREAM)
    finally:
        await nc.close()


class _Record(msgspec.Struct):
    path: str


async def _stored_paths(url: str) -> list[str | None]:
    """The `path` of every message in the stream, read with an ephemeral pull consumer."""
    decode = msgspec.json.Decoder(_Record).decode
    nc = await nats.connect(url)
    try:
        total = (await nc.jsm(timeout=30).stream_info(STREAM)).state.messages
        js = nc.jetstream(timeout=30)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60
        )
        subscription = await js.pull_subscribe(WANTED.subject, stream=STREAM, config=config)
        found: list[str | None] = []
        while len(found) < total:
            for msg in await subscription.fetch(min(5000, total - len(found)), timeout=30):
                try:
                    found.append(decode(msg.data).path)
                except msgspec.DecodeError:
                    found.append(None)
        await subscription.unsubscribe()
        return found
    finally:
        await nc.close()


def _verify_stream(result: ScenarioResult, server: NatsServer) -> None:
    """Reads back every message's event path: events 0 .. n-1, each exactly once."""
    delivery = Delivery(result.events)
    seen = bytearray(result.events)
    try:
        found = asyncio.run(_stored_paths(server.url))
    except (OSError, nats.errors.Error) as e:
        result.problems.append(f"cannot read stream {STREAM}: {type(e).__name__}: {e}")
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
            f"stream {STREAM} holds {delivery.unique:,} of {result.events:,} events "
            f"({delivery.duplicates:,} duplicated, {delivery.foreign:,} foreign messages)"
        )


def _finish(result: ScenarioResult) -> ScenarioResult:
    if result.elapsed_secs:
        result.events_per_sec = result.events / result.elapsed_secs
    result.status = "FAILED" if result.problems else "OK"
    return result


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    folder.mkdir(parents=True, exist_ok=True)
    with NatsServer(folder / "nats-server") as server:
        raw = run_raw(server, events, folder / "nats_raw", progress)
        sink = run_sink(server, events, folder / "nats_sink", progress)
    if raw.events_per_sec and sink.events_per_sec:
        sink.target_ratio = sink.events_per_sec / (0.8 * raw.events_per_sec)
        sink.details["ratio_to_nats_raw"] = sink.events_per_sec / raw.events_per_sec
    return [raw, sink]
