"""Delivery through the real daemon (docs/events.md, docs/socket-protocol.md, docs/architecture.md):
a subprocess, a real Unix socket, file sinks in tmp_path, and every event counted: nothing lost,
nothing duplicated, nothing grown without bound."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_text import blackhole_sink, daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess
from tests.support.load import AckedSender
from tests.support.proc_stats import rss_bytes
from tests.support.records import (
    assert_record_shape,
    count_lines,
    parse_record_time,
    read_records,
    wait_for_records,
)
from tests.support.socket_client import (
    CONTENTS,
    ReplyReader,
    event_line,
    send_acked,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REJECTED = "https://events.telemetryd.org/telemetryd/rejected_event/v1"
KEPT_HEAD_BYTES = 1024  # telemetryd.core.framing.KEPT_HEAD_BYTES: what a line_too_long record keeps


def sink_stats(stats: dict[str, Any], name: str) -> dict[str, Any]:
    for sink in stats["sinks"]:
        if sink["name"] == name:
            entry: dict[str, Any] = sink
            return entry
    raise AssertionError(f"no sink {name!r} in {stats['sinks']}")


# --- many concurrent clients, valid and invalid lines mixed ------------------------------------

CLIENTS = 8
LINES_PER_CLIENT = 5_000
MAX_LINE_BYTES = 4096

#: A client process: connects, says so, waits for "go" on stdin, sends its file in large
#: sendall chunks while a thread reads the daemon's replies, half-closes, reads to the end.
CLIENT_SCRIPT = r"""
import socket, sys, threading
sock_path, data_path, replies_path = sys.argv[1:4]
data = open(data_path, "rb").read()
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(60)
sock.connect(sock_path)
replies = []
def read():
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        replies.append(chunk)
reader = threading.Thread(target=read)
reader.start()
print("connected", flush=True)
sys.stdin.readline()
view = memoryview(data)
for start in range(0, len(data), 256 * 1024):
    sock.sendall(view[start : start + 256 * 1024])
sock.shutdown(socket.SHUT_WR)
reader.join()
open(replies_path, "wb").write(b"".join(replies))
"""


@dataclass(frozen=True)
class Sent:
    line: bytes
    reason: str | None  # None: a valid event
    tag: str


def mixed_line(client: int, index: int) -> Sent:
    """About 90% valid events with unique paths; every tenth line is bad, of ten kinds."""
    tag = f"c{client}-e{index}"
    if index % 10 != 7:
        return Sent(event_line(tag), None, tag)
    kind = (index // 10) % 10
    body = {"action": "save", "path": tag}
    if kind == 0:  # cut in the middle of a string
        return Sent(event_line(tag)[:-9], "invalid_json", tag)
    if kind == 1:  # a byte that is not UTF-8 inside the schema id
        line = event_line(tag).replace(b"/v1", b"/v1\xff\xfe")
        return Sent(line, "invalid_utf8", tag)
    if kind == 2:
        return Sent(
            event_line(tag, schema_id="https://example.org/no/such/v1"), "unknown_schema", tag
        )
    if kind == 3:
        return Sent(event_line(tag, version="99"), "unknown_version", tag)
    if kind == 4:
        return Sent(event_line(tag, action="explode"), "invalid_data", tag)
    if kind == 5:  # no data at all
        line = json.dumps({"schema_id": CONTENTS, "version": "1", "path": tag}).encode()
        return Sent(line, "invalid_envelope", tag)
    if kind == 6:
        return Sent(b"", "empty_line", tag)
    if kind == 7:
        return Sent(event_line(tag + "-" + "x" * MAX_LINE_BYTES), "line_too_long", tag)
    if kind == 8:
        event = {"schema_id": CONTENTS, "version": "1", "data": body, "timestamp": "yesterday"}
        return Sent(json.dumps(event).encode(), "invalid_timestamp", tag)
    event = {"schema_id": CONTENTS, "version": "1", "data": {**body, "__secret": tag}}
    return Sent(json.dumps(event).encode(), "reserved_field", tag)


def check_dead_letter(record: dict[str, Any], sent: Sent, line_number: int, pid: int) -> None:
    data = assert_record_shape(record, REJECTED, pid)
    assert data["reason"] == sent.reason, (data, sent)
    assert data["line"] == line_number
    assert isinstance(data["message"], str)
    assert data["message"]
    assert data["raw_bytes"] == len(sent.line)
    kept = sent.line[:KEPT_HEAD_BYTES] if sent.reason == "line_too_long" else sent.line
    assert data["raw_truncated"] is (len(kept) < len(sent.line))
    if sent.reason == "invalid_utf8":
        assert data["raw_encoding"] == "base64"
        assert base64.b64decode(data["raw"]) == kept
    else:
        assert data["raw_encoding"] == "utf-8"
        assert data["raw"] == kept.decode()
    if sent.reason in ("unknown_schema", "unknown_version", "invalid_data", "reserved_field"):
        assert "schema_id" in data
        assert "version" in data


def test_concurrent_clients_every_valid_event_once_every_invalid_one_dead_lettered(
    tmp_path: Path,
) -> None:
    plan = {c: [mixed_line(c, i) for i in range(LINES_PER_CLIENT)] for c in range(CLIENTS)}
    for c, lines in plan.items():
        (tmp_path / f"client{c}.ndjson").write_bytes(b"".join(s.line + b"\n" for s in lines))
    valid_total = sum(s.reason is None for lines in plan.values() for s in lines)
    invalid_total = CLIENTS * LINES_PER_CLIENT - valid_total
    config = daemon_config(tmp_path, server=f"max_line_bytes = {MAX_LINE_BYTES}")
    started = datetime.now(UTC)

    with DaemonProcess(tmp_path, config) as daemon:
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CLIENT_SCRIPT,
                    str(daemon.socket_path),
                    str(tmp_path / f"client{c}.ndjson"),
                    str(tmp_path / f"replies{c}.ndjson"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for c in range(CLIENTS)
        ]
        try:
            for client in clients:  # all connected before any sends: they run concurrently
                assert client.stdout is not None
                assert client.stdout.readline() == b"connected\n"
            for client in clients:
                assert client.stdin is not None
                client.stdin.write(b"go\n")
                client.stdin.close()
            for client in clients:
                assert client.wait(60) == 0
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
                for pipe in (client.stdin, client.stdout):
                    if pipe is not None:
                        pipe.close()
        assert daemon.stop() == 0
        stats = daemon.final_stats()
    finished = datetime.now(UTC)
    pid_of = {c: clients[c].pid for c in range(CLIENTS)}
    client_of = {pid: c for c, pid in pid_of.items()}

    # Every valid event exactly once, in the order its client sent it, with the §4 shape.
    records = read_records(tmp_path / "out" / "events.jsonl")
    assert len(records) == valid_total
    paths = [r["path"] for r in records]
    assert len(set(paths)) == valid_total
    order: dict[int, list[int]] = defaultdict(list)
    for record in records:
        sender, index = (int(part[1:]) for part in record["path"].split("-"))
        data = assert_record_shape(record, CONTENTS, pid_of[sender])
        assert data == {"action": "save", "path": f"c{sender}-e{index}"}
        assert started - timedelta(seconds=1) <= parse_record_time(record["__timestamp__"])
        assert parse_record_time(record["__timestamp__"]) <= finished + timedelta(seconds=1)
        order[sender].append(index)
    for c, lines in plan.items():
        assert order[c] == [i for i, s in enumerate(lines) if s.reason is None]

    # Every invalid line in the dead-letter file, with its reason, raw input and line number.
    rejected = read_records(tmp_path / "out" / "rejected.jsonl")
    assert len(rejected) == invalid_total
    by_client: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in rejected:
        by_client[client_of[record["__origin__"]["pid"]]].append(record)
    for c, lines in plan.items():
        expected = [(i + 1, s) for i, s in enumerate(lines) if s.reason is not None]
        assert [r["line"] for r in by_client[c]] == [n for n, _ in expected]
        for record, (number, sent) in zip(by_client[c], expected, strict=True):
            check_dead_letter(record, sent, number, pid_of[c])

    # Plain mode answers each bad line with its reason (a client that reads gets them all,
    # unless the daemon counts them as dropped replies).
    answered = 0
    for c, lines in plan.items():
        replies = [
            json.loads(line) for line in (tmp_path / f"replies{c}.ndjson").read_bytes().splitlines()
        ]
        assert all(set(reply) == {"rejected", "reason", "message"} for reply in replies)
        expected_replies = {i + 1: s.reason for i, s in enumerate(lines) if s.reason is not None}
        assert {r["rejected"]: r["reason"] for r in replies}.items() <= expected_replies.items()
        answered += len(replies)

    # The final counters agree with what was sent.
    source = stats["sources"][0]
    assert source["received"] == CLIENTS * LINES_PER_CLIENT
    assert source["sent"] == valid_total
    assert source["rejected"] == dict.fromkeys(_REASONS, invalid_total // 10)
    assert source["errors"] == {}
    assert answered + source["replies_dropped"] == invalid_total
    archive = sink_stats(stats, "archive")
    assert (archive["received"], archive["sent"], archive["dropped"]) == (valid_total,) * 2 + ({},)
    dead = sink_stats(stats, "dead-letter")
    assert (dead["received"], dead["sent"], dead["dropped"]) == (invalid_total,) * 2 + ({},)


_REASONS = [
    "invalid_json",
    "invalid_utf8",
    "unknown_schema",
    "unknown_version",
    "invalid_data",
    "invalid_envelope",
    "empty_line",
    "line_too_long",
    "invalid_timestamp",
    "reserved_field",
]


# --- timestamps --------------------------------------------------------------------------------


def timestamped(path: str, timestamp: str | None) -> bytes:
    event = {
        "schema_id": CONTENTS,
        "version": "1",
        "data": {"action": "save", "path": path},
        "timestamp": timestamp,
    }
    return json.dumps(event).encode()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the tests that need no special configuration (each uses its own paths)."""
    workdir = tmp_path_factory.mktemp("delivery")
    with DaemonProcess(workdir, daemon_config(workdir)) as running:
        yield running
        assert running.stop() == 0, running.stderr()


def records_with_prefix(daemon: DaemonProcess, prefix: str, count: int) -> list[dict[str, Any]]:
    return wait_for_records(
        daemon.workdir / "out" / "events.jsonl",
        lambda record: str(record.get("path", "")).startswith(prefix),
        count,
    )


def test_receive_time_when_no_timestamp_and_given_timestamps_normalised_to_z(
    daemon: DaemonProcess,
) -> None:
    given = {
        "offset": ("2026-11-22T01:30:21.131970+00:00", "2026-11-22T01:30:21.131970Z"),
        "jupyter_events": ("2026-11-22T01:30:21.131970+00:00Z", "2026-11-22T01:30:21.131970Z"),
        "z": ("2026-11-22T01:30:21.131970Z", "2026-11-22T01:30:21.131970Z"),
        "other_offset": ("2026-11-22T03:30:21.131970+02:00", "2026-11-22T01:30:21.131970Z"),
        "no_fraction": ("2026-11-22T01:30:21Z", "2026-11-22T01:30:21.000000Z"),
        "null": (None, None),
    }
    lines = [event_line("ts-now")] + [timestamped(f"ts-{n}", ts) for n, (ts, _) in given.items()]
    lines.append(timestamped("ts-naive", "2026-11-22T01:30:21.131970"))
    before = datetime.now(UTC)
    rejections = send_acked(daemon, lines)
    after = datetime.now(UTC)

    assert [(r["rejected"], r["reason"]) for r in rejections] == [(len(lines), "invalid_timestamp")]
    assert "offset" in rejections[0]["message"]
    records = records_with_prefix(daemon, "ts-", len(lines) - 1)
    stamps = {r["path"]: r["__timestamp__"] for r in records}
    for path in ("ts-now", "ts-null"):  # no timestamp: the time the daemon received the line
        received = parse_record_time(stamps.pop(path))
        assert before - timedelta(milliseconds=1) <= received <= after + timedelta(milliseconds=1)
    assert stamps == {f"ts-{n}": stored for n, (ts, stored) in given.items() if ts is not None}


def test_every_accepted_timestamp_is_stored_as_rfc3339(daemon: DaemonProcess) -> None:
    # Each is the same instant; the daemon may refuse it (invalid_timestamp) or normalise it,
    # but a record must never carry a timestamp that is not RFC 3339 (docs/events.md).
    forms = {
        "ts-iso-comma": "2026-11-22T01:30:21,131970Z",
        "ts-iso-week-date": "2026-W47-7T01:30:21.131970Z",
        "ts-iso-basic-time": "2026-11-22T013021.13197000Z",
    }
    lines = [timestamped(name, ts) for name, ts in forms.items()] + [event_line("ts-iso-end")]
    rejections = send_acked(daemon, lines)
    assert all(r["reason"] == "invalid_timestamp" for r in rejections)
    records = records_with_prefix(daemon, "ts-iso-", len(lines) - len(rejections))
    for record in records[:-1]:
        assert record["__timestamp__"] == "2026-11-22T01:30:21.131970Z", record


# --- SIGTERM under load with a slow sink --------------------------------------------------------


def test_sigterm_while_clients_send_to_a_slow_sink_drains_every_acknowledged_event(
    tmp_path: Path,
) -> None:
    shutdown_timeout = 15.0
    sinks = file_sink("archive", tmp_path / "out/events.jsonl") + blackhole_sink(
        "slow",
        'delay_secs = 0.02\nwhen_full = "block"\nqueue_max_events = 200\nbatch_max_events = 100',
    )
    config = daemon_config(tmp_path, sinks=sinks, shutdown_timeout_secs=shutdown_timeout)
    with DaemonProcess(tmp_path, config) as daemon:
        senders = [AckedSender(daemon, c) for c in range(4)]
        threads = [thread for sender in senders for thread in sender.start()]
        try:
            wait_for(lambda: sum(s.acked for s in senders) >= 2_000, 15, "2,000 acks")
            assert all(thread.is_alive() for thread in threads), "clients must still be sending"
            stop_sent = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.proc is not None
            assert daemon.proc.wait(shutdown_timeout + 5) == 0
            assert time.monotonic() - stop_sent < shutdown_timeout
            for thread in threads:  # the daemon closed every connection: the clients end
                thread.join(10)
                assert not thread.is_alive()
        finally:
            for sender in senders:
                with contextlib.suppress(OSError):
                    sender.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread still blocked
            for thread in threads:
                thread.join(10)
            for sender in senders:
                sender.sock.close()
        stats = daemon.final_stats()

    for sender in senders:
        assert sender.errors == []
        assert sender.rejections == []
    records = read_records(tmp_path / "out/events.jsonl")
    paths = Counter(r["path"] for r in records)
    assert max(paths.values()) == 1, "no record twice"
    for sender in senders:
        missing = [i for i in range(sender.acked) if f"c{sender.client}-e{i}" not in paths]
        assert missing == [], f"client {sender.client}: acknowledged but not delivered"
    for name in ("archive", "slow"):
        sink = sink_stats(stats, name)
        assert sink["dropped"] == {}
        assert sink["sent"] == sink["received"] == len(records)
    assert stats["sources"][0]["sent"] == len(records)


# --- backpressure: a slow blocking sink slows the client, not the daemon's memory ---------------


def test_backpressure_bounds_memory_and_slows_the_client(tmp_path: Path) -> None:
    events, per_send, batch, delay = 50_000, 100, 100, 0.01
    queue_max = 1_000
    sinks = blackhole_sink(
        "slow",
        f'delay_secs = {delay}\nwhen_full = "block"\n'
        f"queue_max_events = {queue_max}\nbatch_max_events = {batch}",
    )
    config = daemon_config(tmp_path, sinks=sinks, stats_interval_secs=0.25)
    padding = "p" * 2_000  # ~2 KB events: 100 MB sent in all, far more than the daemon may hold
    sent_bytes = 0
    with DaemonProcess(tmp_path, config) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        baseline = rss_bytes(pid)
        peak = baseline
        sampling = True

        def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, rss_bytes(pid))
                time.sleep(0.02)  # the sampling interval

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with daemon.connect() as sock:
                sock.settimeout(60)
                began = time.monotonic()
                for start in range(0, events, per_send):
                    chunk = b"".join(
                        event_line(f"e{i}-{padding}") + b"\n"
                        for i in range(start, start + per_send)
                    )
                    sock.sendall(chunk)
                    sent_bytes += len(chunk)
                send_secs = time.monotonic() - began
                sock.shutdown(socket.SHUT_WR)
                assert ReplyReader(sock).rest() == []  # the daemon read everything, then closed
        finally:
            sampling = False
            sampler.join()
        assert daemon.stop() == 0
        stats = daemon.final_stats()
        periodic = [line for line in daemon.log_lines() if line.get("msg") == "stats"]

    assert sent_bytes > 100_000_000
    assert peak < 200 * 1024 * 1024, f"daemon RSS peaked at {peak / 2**20:.0f} MiB"
    assert peak - baseline < 50 * 1024 * 1024, (
        f"daemon RSS grew by {(peak - baseline) / 2**20:.0f} MiB while 100 MB were sent"
    )
    # By the time its last sendall returned, the client had waited for the sink to take all
    # but what fits in the queue, one read chunk and the socket buffer (a few thousand events).
    min_drain_secs = (events - 3_000) / batch * delay
    assert send_secs >= 0.8 * min_drain_secs, f"sendall took only {send_secs:.2f}s"
    assert periodic, "no periodic stats logged during the load"
    for line in periodic:
        assert sink_stats(line, "slow")["queued"] <= queue_max
    slow = sink_stats(stats, "slow")
    assert (slow["received"], slow["sent"], slow["dropped"]) == (events, events, {})
    assert stats["sources"][0]["received"] == events


# --- drop policies: a slow sink drops, the fast one beside it gets everything ------------------


@pytest.mark.parametrize(
    ("policy", "reasons"),
    [("drop_newest", {"queue_full"}), ("drop_oldest", {"evicted_oldest", "queue_full"})],
)
def test_drop_policy_counts_drops_and_never_costs_another_sink_an_event(
    tmp_path: Path, policy: str, reasons: set[str]
) -> None:
    events = 5_000
    sinks = blackhole_sink(
        "slow", f'delay_secs = 0.05\nwhen_full = "{policy}"\nqueue_max_events = 10'
    ) + file_sink("archive", tmp_path / "out/events.jsonl", 'when_full = "block"')
    archive = tmp_path / "out/events.jsonl"
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=sinks)) as daemon:
        began = time.monotonic()
        with daemon.connect() as sock:
            sock.sendall(b"".join(event_line(f"e{i}") + b"\n" for i in range(events)))
            sock.shutdown(socket.SHUT_WR)
            assert ReplyReader(sock).rest() == []
        # A blocking slow sink would need events / 10 * 0.05 = 25 s; dropping costs no wait.
        wait_for(lambda: count_lines(archive) == events, 10, "every event in the file sink")
        assert time.monotonic() - began < 10
        assert daemon.stop() == 0
        stats = daemon.final_stats()

    assert [r["path"] for r in read_records(archive)] == [f"e{i}" for i in range(events)]
    slow = sink_stats(stats, "slow")
    assert slow["received"] == events
    assert slow["dropped"], "a 10-event queue in front of a slow sink must drop"
    assert set(slow["dropped"]) <= reasons
    if policy == "drop_oldest":
        assert slow["dropped"].get("evicted_oldest", 0) > 0
    assert slow["received"] == slow["sent"] + sum(slow["dropped"].values())
    assert slow["sent"] > 0
    assert sink_stats(stats, "archive")["sent"] == events


# --- a failing sink is retried until every event is delivered ----------------------------------


def test_failing_sink_is_retried_until_everything_is_delivered(tmp_path: Path) -> None:
    events = 1_000
    sinks = blackhole_sink(
        "flaky", "fail_batches = 3\nretry_initial_secs = 0.02\nretry_max_secs = 0.1"
    ) + file_sink("archive", tmp_path / "out/events.jsonl")
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=sinks)) as daemon:
        assert send_acked(daemon, [event_line(f"e{i}") for i in range(events)]) == []
        wait_for(
            lambda: any(line.get("msg") == "sink recovered" for line in daemon.log_lines()),
            10,
            "the flaky sink to recover",
        )
        assert daemon.stop() == 0
        stats = daemon.final_stats()
        logs = daemon.log_lines()

    flaky = sink_stats(stats, "flaky")
    assert flaky["retries"] == 3
    assert flaky["errors"] == {"SimulatedSinkError": 3}
    assert (flaky["received"], flaky["sent"], flaky["dropped"]) == (events, events, {})
    assert flaky["healthy"] is True
    # An outage is logged once per interval, not once per attempt: the first failure, then
    # the recovery with the count of attempts.
    failures = [line for line in logs if line.get("msg") == "sink write failed; retrying"]
    assert [(line["sink"], line["attempt"]) for line in failures] == [("flaky", 1)]
    recovered = [line for line in logs if line.get("msg") == "sink recovered"]
    assert [(line["sink"], line["after_attempts"]) for line in recovered] == [("flaky", 3)]
    assert len(read_records(tmp_path / "out/events.jsonl")) == events


# --- a sink that stays down: SIGTERM is bounded by the shutdown timeout -------------------------


@dataclass(frozen=True)
class Stopped:
    code: int
    stop_secs: float
    stats: dict[str, Any]
    logs: list[dict[str, Any]]


DEAD_SINK_EVENTS = 1_000
DEAD_SINK_QUEUE = 100
DEAD_SINK_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def stopped_with_a_dead_sink(tmp_path_factory: pytest.TempPathFactory) -> Stopped:
    """A blocking sink that never accepts a batch, a client whose events fill its queue and
    more, then SIGTERM."""
    workdir = tmp_path_factory.mktemp("dead-sink")
    sinks = blackhole_sink(
        "dead",
        "fail_batches = 1000000\nretry_initial_secs = 0.05\nretry_max_secs = 0.2\n"
        f'queue_max_events = {DEAD_SINK_QUEUE}\nwhen_full = "block"',
    )
    config = daemon_config(
        workdir, sinks=sinks, shutdown_timeout_secs=DEAD_SINK_TIMEOUT, stats_interval_secs=0.1
    )
    with DaemonProcess(workdir, config) as daemon, daemon.connect() as sock:
        # All of it fits in the socket buffers, so sendall returns although the daemon blocks
        # once the sink's queue is full, with the rest of the lines it read in hand.
        sock.sendall(b"".join(event_line(f"e{i}") + b"\n" for i in range(DEAD_SINK_EVENTS)))
        wait_for(
            lambda: any(
                line.get("msg") == "stats"
                and line["sources"][0]["received"] > DEAD_SINK_QUEUE
                and sink_stats(line, "dead")["queued"] == DEAD_SINK_QUEUE
                and sink_stats(line, "dead")["retries"] > 0
                for line in daemon.log_lines()
            ),
            10,
            "a full queue in front of the failing sink and more events read",
        )
        began = time.monotonic()
        code = daemon.stop()
        return Stopped(code, time.monotonic() - began, daemon.final_stats(), daemon.log_lines())


def test_sigterm_with_a_dead_sink_exits_0_within_the_shutdown_timeout(
    stopped_with_a_dead_sink: Stopped,
) -> None:
    stopped = stopped_with_a_dead_sink
    assert stopped.code == 0
    assert stopped.stop_secs < DEAD_SINK_TIMEOUT + 3
    dead = sink_stats(stopped.stats, "dead")
    assert dead["sent"] == 0
    assert dead["healthy"] is False
    assert dead["dropped"].get("shutdown_timeout", 0) > 0
    assert any(line.get("msg") == "shutdown timeout: events not delivered" for line in stopped.logs)


def test_shutdown_timeout_counts_every_event_a_sink_did_not_get(
    stopped_with_a_dead_sink: Stopped,
) -> None:
    """Each sink's counts stay whole (received = sent + dropped), including the events a
    connection still held, waiting for room, when the deadline came; the source counts those
    as never accepted (they were never acknowledged either)."""
    source = stopped_with_a_dead_sink.stats["sources"][0]
    read = source["received"]  # all valid, all for "dead"
    assert read > DEAD_SINK_QUEUE
    dead = sink_stats(stopped_with_a_dead_sink.stats, "dead")
    assert dead["received"] == dead["sent"] + sum(dead["dropped"].values()) == read
    never_accepted = source["dropped"]["shutdown_timeout"]
    assert source["sent"] + never_accepted == read
    logs = stopped_with_a_dead_sink.logs
    lost = [
        line["events"]
        for line in logs
        if line.get("msg") == "shutdown timeout: events not delivered" and line["sink"] == "dead"
    ]
    unaccepted = [
        line["events"]
        for line in logs
        if line.get("msg", "").startswith("shutdown timeout: events read but never accepted")
    ]
    assert lost == [read]
    assert unaccepted == [never_accepted]


def test_a_plain_client_that_never_reads_its_replies_does_not_hold_up_sigterm(
    tmp_path: Path,
) -> None:
    # A timeout far above the bound below: a loaded machine's slower stop still tells a daemon
    # that did not wait for the client apart from one that waited the timeout out.
    timeout = 30.0
    config = daemon_config(tmp_path, shutdown_timeout_secs=timeout)
    with DaemonProcess(tmp_path, config) as daemon, daemon.connect() as mute:
        # 20,000 bad lines: more rejection lines than the socket buffers hold, never read.
        mute.sendall(b"".join(b"garbage %d\n" % i for i in range(20_000)))
        rejected = tmp_path / "out" / "rejected.jsonl"
        wait_for(lambda: count_lines(rejected) == 20_000, 10, "every bad line dead-lettered")
        began = time.monotonic()
        assert daemon.stop() == 0
        stop_secs = time.monotonic() - began
    assert stop_secs < 10.0, f"SIGTERM took {stop_secs:.1f}s of the {timeout}s timeout"
