"""The daemon with disk buffers: SIGKILL under load loses no acknowledged event, and a sink
that stays down keeps its events on disk across a restart until it takes them."""

from __future__ import annotations

import collections
import contextlib
import signal
import socket
from pathlib import Path

from tests.support.config_text import blackhole_sink, daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess
from tests.support.load import AckedSender
from tests.support.records import read_records, records_so_far
from tests.support.socket_client import event_line
from tests.support.waiting import wait_for


def disk_file_sink(tmp_path: Path, extra: str = "") -> str:
    return file_sink(
        "archive",
        tmp_path / "out/events.jsonl",
        f'buffer = "disk"\nbuffer_path = "{tmp_path}/buffer/archive"\n'
        "buffer_segment_bytes = 262144\n" + extra,
    )


def test_sigkill_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    # Batches wait up to 0.5 s to fill: at the kill, acknowledged events sit on disk only.
    sinks = disk_file_sink(tmp_path, "batch_max_events = 20000\nbatch_max_delay_secs = 0.5")
    config = daemon_config(tmp_path, sinks=sinks)
    archive = tmp_path / "out/events.jsonl"
    with DaemonProcess(tmp_path, config) as daemon:
        senders = [AckedSender(daemon, c) for c in range(4)]
        threads = [thread for sender in senders for thread in sender.start()]
        try:
            wait_for(lambda: sum(s.acked for s in senders) >= 20_000, 30, "20,000 acks")
            daemon.signal(signal.SIGKILL)
            assert daemon.proc is not None
            assert daemon.proc.wait(10) == -signal.SIGKILL
            for thread in threads:
                thread.join(10)
        finally:
            for sender in senders:
                with contextlib.suppress(OSError):
                    sender.sock.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join(10)
            for sender in senders:
                sender.sock.close()
        acknowledged = {f"c{s.client}-e{i}" for s in senders for i in range(s.acked)}
        written_before_restart = len(records_so_far(archive))
        assert len(acknowledged) >= 20_000
        daemon.start()  # the same buffer directory: it delivers what it held

        def delivered() -> set[str] | None:
            paths = {r["path"] for r in records_so_far(archive)}
            return paths if acknowledged <= paths else None

        wait_for(delivered, 60, "every acknowledged event in the file sink")
        assert daemon.stop() == 0
        stats = daemon.final_stats()
        logs = daemon.log_lines()

    counts = collections.Counter(r["path"] for r in read_records(archive))
    assert acknowledged <= set(counts)
    recovered = [line for line in logs if line.get("msg") == "disk buffer recovered"]
    assert recovered, "the restarted daemon found events on disk"
    assert recovered[-1]["events"] > 0
    # At least once: only a batch the sink wrote just before the kill comes twice.
    twice = sum(n - 1 for n in counts.values() if n > 1)
    assert twice <= 20_000
    assert written_before_restart < len(acknowledged)  # the kill did catch events on disk
    archive_stats = next(s for s in stats["sinks"] if s["name"] == "archive")
    assert archive_stats["dropped"] == {}


def test_a_sink_that_stays_down_keeps_its_events_on_disk_across_a_restart(
    tmp_path: Path,
) -> None:
    events = 2_000
    buffer = f'buffer = "disk"\nbuffer_path = "{tmp_path}/buffer/archive"\n'
    down = blackhole_sink(
        "archive",
        buffer + "fail_batches = 1000000\nretry_initial_secs = 0.05\nretry_max_secs = 0.2",
    )
    with DaemonProcess(
        tmp_path, daemon_config(tmp_path, sinks=down, shutdown_timeout_secs=1)
    ) as daemon:
        with daemon.connect() as sock:
            sock.sendall(b"".join(event_line(f"e{i}") + b"\n" for i in range(events)))
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(65536) == b""  # every line read and accepted (none rejected)
        assert daemon.stop() == 0
        stats = daemon.final_stats()
    archive_stats = next(s for s in stats["sinks"] if s["name"] == "archive")
    assert archive_stats["sent"] == 0
    assert archive_stats["dropped"] == {}  # undelivered, but on disk: not lost
    assert archive_stats["queued"] == events

    # The same sink name and buffer, now a sink that works: it gets every event, once, in order.
    up = file_sink("archive", tmp_path / "out/events.jsonl", buffer)
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=up)) as daemon:
        archive = tmp_path / "out/events.jsonl"
        wait_for(lambda: len(records_so_far(archive)) >= events, 30, "the buffered events")
        assert daemon.stop() == 0
    assert [r["path"] for r in read_records(archive)] == [f"e{i}" for i in range(events)]


def test_two_daemons_cannot_share_a_disk_buffer(tmp_path: Path) -> None:
    sinks = disk_file_sink(tmp_path)
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with DaemonProcess(first, daemon_config(first, sinks=sinks)):
        other = DaemonProcess(second, daemon_config(second, sinks=sinks), wait_ready=False)
        other.start()
        assert other.proc is not None
        assert other.proc.wait(30) == 1
        assert "in use by another telemetryd" in other.stderr()
