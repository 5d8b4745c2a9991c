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
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

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
from benchmarks.verify import RecordPath
from telemetryd.core.record import RECORD_START, record_head
from telemetryd.core.timestamps import now_utc
from telemetryd_sinks.nats.stream import WantedStream
from telemetryd_sinks.nats.subjects import MSG_ID_HEADER, msg_id, subject_for
from tests.support.nats_process import NatsServer

BATCH_EVENTS = 1000
WINDOW = 1000  # unacknowledged messages at most, in both runs
STREAM = "BENCH"
PREFIX = "bench"
SINK_NAME = "bus"
POLL_SECS = 0.01

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
    return client_report(
        start,
        len(payloads),
        bytes_sent=sum(len(p) for p in payloads),
        first=first,
        last=last,
        cpu_secs=cpu,
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
    loads = LoadGroup(raw_publish_load, [(RawTarget(server.url, BATCH_EVENTS, WINDOW), 0, events)])
    time_client(result, loads, progress, BackendCpu("nats_server_cpu_secs", server.cpu_seconds))
    _verify_stream(result, server)
    asyncio.run(_stream_admin(server.url, create=False))  # the sink's run starts empty
    return finish(result)


# -- nats_sink ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NatsDaemonConfig(SinkConfig):
    """A telemetryd whose only sink is the nats sink."""

    url: str = ""

    def sink_table(self) -> dict[str, object]:
        return {
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
        }


def run_sink(server: NatsServer, events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "nats_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into telemetryd "
        f"with the nats sink (batches of {BATCH_EVENTS:,}, max_outstanding_acks = {WINDOW:,}) "
        "as its only sink, into the same nats-server",
        events,
        target=sink_target("nats"),
        latency_kind="accept to acknowledged by JetStream (daemon histogram)",
    )
    measure_sink(
        result,
        folder,
        NatsDaemonConfig(url=server.url, batch_max_events=BATCH_EVENTS),
        progress,
        sink_name=SINK_NAME,
        counter=lambda _: StoredCounter(server),
        backend=BackendCpu("nats_server_cpu_secs", server.cpu_seconds),
        stalled="the stream stopped growing at {count:,} of {expected:,} events",
        poll_secs=POLL_SECS,
    )
    _verify_stream(result, server)
    return finish(result)


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


async def _stored_paths(url: str) -> list[str | None]:
    """The `path` of every message in the stream, read with an ephemeral pull consumer."""
    decode = msgspec.json.Decoder(RecordPath).decode
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
    try:
        found = asyncio.run(_stored_paths(server.url))
    except (OSError, nats.errors.Error) as e:
        result.problems.append(f"cannot read stream {STREAM}: {type(e).__name__}: {e}")
        return
    delivery = delivery_of(result.events, found, lambda path: path)
    check_delivery(result, delivery, f"stream {STREAM}", "messages")


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    folder.mkdir(parents=True, exist_ok=True)
    with NatsServer(folder, "nats-server") as server:
        raw = run_raw(server, events, folder / "nats_raw", progress)
        sink = run_sink(server, events, folder / "nats_sink", progress)
    return against_raw(raw, sink)
