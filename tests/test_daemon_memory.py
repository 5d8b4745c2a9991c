"""A crowd of socket clients blocked on a stopped sink: the daemon's memory is bounded by its
configuration (the read budget, the queues), not by the number of clients, and every event is
delivered once the sink moves again."""

from __future__ import annotations

import fcntl
import resource
import socket
import sqlite3
import struct
import termios
from pathlib import Path

import pytest
from daemon_process import (
    DaemonProcess,
    acked_connection,
    count_lines,
    daemon_config,
    event_line,
    wait_for,
)

from telemetryd.plugins import sink_types

pytestmark = pytest.mark.integration

CLIENTS = 1_000
EVENTS_PER_CLIENT = 16
#: Each client's events fill one read of 256 KiB: what the daemon held per blocked client.
EVENT_PATH_BYTES = 16_000
MAX_RSS_BYTES = 200 * 1024 * 1024


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"{needed} open files needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def peak_rss_bytes(pid: int) -> int:
    """The peak resident set size of a process so far (VmHWM of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def unread_bytes(sock: socket.socket) -> int:
    """What the daemon has not read yet of what this client sent (the kernel's count)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    queued: int = struct.unpack("i", raw)[0]
    return queued


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
    conn.close()
    return int(count)


def sources_stats(daemon: DaemonProcess) -> dict[str, object] | None:
    stats = [line for line in daemon.log_lines() if line.get("msg") == "stats"]
    if not stats:
        return None
    unix: dict[str, object] = stats[-1]["sources"][0]
    return unix


def test_a_thousand_clients_blocked_on_a_stopped_sink_stay_within_the_memory_bound(
    tmp_path: Path,
) -> None:
    if "example_sqlite" not in sink_types():
        pytest.fail("the example plugin is not installed: pip install -e tests/plugin_example")
    raise_open_files_limit(2 * CLIENTS + 256)
    db = tmp_path / "out" / "records.db"
    # A SQLite database another program holds locked: the sink is stopped, its queue fills
    # (the default limits), and then publishing blocks every connection.
    sinks = f"""
[[sinks]]
name = "db"
type = "example_sqlite"
path = "{db}"
busy_timeout_secs = 0.05
retry_initial_secs = 0.05
retry_max_secs = 0.5
"""
    config = daemon_config(tmp_path, sinks=sinks, stats_interval_secs=0.2)
    payload = b"".join(
        event_line("x" * EVENT_PATH_BYTES + f"/{i}") + b"\n" for i in range(EVENTS_PER_CLIENT)
    )
    clients: list[socket.socket] = []
    with DaemonProcess(tmp_path, config) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for _ in range(CLIENTS):
                sock = daemon.connect()
                # Room for the whole payload in the kernel: the client's writes never block,
                # so each client has sent its events and waits, as a blocked client does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * len(payload))
                sock.sendall(payload)
                clients.append(sock)

            def crowd_blocked() -> bool:
                # Every connection read, or (with a budget) most waiting for their turn.
                unix = sources_stats(daemon)
                waiting = 0 if unix is None else unix.get("read_budget_waiting", 0)
                assert isinstance(waiting, int)
                return waiting >= CLIENTS // 2 or all(unread_bytes(s) == 0 for s in clients)

            wait_for(crowd_blocked, 180, "the crowd to be blocked")
            blocked_peak = peak_rss_bytes(pid)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for sock in clients:
            sock.shutdown(socket.SHUT_WR)
        total = CLIENTS * EVENTS_PER_CLIENT
        wait_for(lambda: rows(db) == total, 600, f"{total} rows")
        peak = peak_rss_bytes(pid)
        assert daemon.stop() == 0
    for sock in clients:
        sock.close()
    assert blocked_peak <= MAX_RSS_BYTES, f"{blocked_peak / 2**20:.0f} MiB while blocked"
    assert peak <= MAX_RSS_BYTES, f"{peak / 2**20:.0f} MiB at the peak"
    final = daemon.final_stats()
    unix = final["sources"][0]
    assert (unix["received"], unix["sent"], unix["rejected"]) == (total, total, {})
    [db_stats] = [s for s in final["sinks"] if s["name"] == "db"]
    assert db_stats["sent"] == total
    assert db_stats["dropped"] == {}


def test_idle_connections_hold_none_of_the_budget(tmp_path: Path) -> None:
    """A share is taken once there is something to read: a smallest budget and many idle clients
    do not keep a sending client from being served."""
    config = daemon_config(tmp_path, server="read_budget_bytes = 65536")
    with DaemonProcess(tmp_path, config) as daemon:
        idle = [daemon.connect() for _ in range(50)]
        sock, reader, _ = acked_connection(daemon)
        with sock:
            sock.sendall(b"".join(event_line(f"p/{i}") + b"\n" for i in range(2_000)))
            reader.until_ack(2_000)
        for client in idle:
            client.close()
        assert daemon.stop() == 0
    assert count_lines(tmp_path / "out" / "events.jsonl") == 2_000
