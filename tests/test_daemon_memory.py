"""A crowd of socket clients blocked on a stopped sink: the daemon's memory is bounded by its
configuration (the read budget, the queues), not by the number of clients, and every event is
delivered once the sink moves again."""

from __future__ import annotations

import fcntl
import resource
import selectors
import socket
import sqlite3
import struct
import termios
from pathlib import Path
from typing import cast

import pytest

from telemetryd.plugins import sink_types
from tests.support.config_text import daemon_config, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.records import count_lines
from tests.support.socket_client import acked_connection, event_line
from tests.support.waiting import wait_for

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


def locked_db_sink(db: Path) -> str:
    """The example SQLite sink on `db`, quick to retry, for a database the test keeps locked."""
    return f"""
[[sinks]]
name = "db"
type = "example_sqlite"
path = "{db}"
busy_timeout_secs = 0.05
retry_initial_secs = 0.05
retry_max_secs = 0.5
"""


def test_a_thousand_clients_blocked_on_a_stopped_sink_stay_within_the_memory_bound(
    tmp_path: Path,
) -> None:
    if "example_sqlite" not in sink_types():
        pytest.fail("the example plugin is not installed: pip install -e tests/plugin_example")
    raise_open_files_limit(2 * CLIENTS + 256)
    db = tmp_path / "out" / "records.db"
    # A SQLite database another program holds locked: the sink is stopped, its queue fills
    # (the default limits), and then publishing blocks every connection.
    sinks = locked_db_sink(db)
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


HTTP_CLIENTS = 64
HTTP_BODY_EVENTS = 16_000  # some 4 MiB of small events per request


def test_http_requests_waiting_for_a_stopped_sink_turn_into_records_within_the_budget(
    tmp_path: Path,
) -> None:
    """Large HTTP batches sent at once while the sink is stopped: each body is received (at
    most http_max_body_bytes per connection), but only what the read budget allows is turned
    into records at a time; the rest wait for it or are refused (429, 503), as before."""
    if "example_sqlite" not in sink_types():
        pytest.fail("the example plugin is not installed: pip install -e tests/plugin_example")
    raise_open_files_limit(2 * HTTP_CLIENTS + 256)
    db = tmp_path / "out" / "records.db"
    sinks = locked_db_sink(db)
    body = b"".join(event_line(f"p/{i:0>120}") + b"\n" for i in range(HTTP_BODY_EVENTS))
    request = (
        b"POST /api/events/batch HTTP/1.1\r\nhost: telemetryd\r\n"
        b"content-type: application/x-ndjson\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body
    with DaemonProcess(tmp_path, http_config(tmp_path, sinks=sinks)) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        port = http_port(daemon)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(HTTP_CLIENTS)]
            send_all_at_once(clients, request)
            statuses = [status_of(sock) for sock in clients]
            blocked_peak = peak_rss_bytes(pid)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for sock in clients:
            sock.close()
        assert set(statuses) <= {200, 429, 503}, statuses
        assert daemon.stop() == 0  # the sink moves again: what was queued is delivered
    # Bodies being received: up to two copies each (its pieces, then joined), at once.
    receiving = 2 * HTTP_CLIENTS * len(request)
    assert blocked_peak <= receiving + 300 * 2**20, f"{blocked_peak / 2**20:.0f} MiB"
    final = daemon.final_stats()
    [db_stats] = [s for s in final["sinks"] if s["name"] == "db"]
    accepted = statuses.count(200) * HTTP_BODY_EVENTS
    assert accepted > 0
    assert rows(db) == db_stats["sent"] >= accepted


def send_all_at_once(clients: list[socket.socket], data: bytes) -> None:
    """Writes `data` on every socket, interleaved, as many clients sending together would."""
    pending = {sock: memoryview(data) for sock in clients}
    for sock in clients:
        sock.setblocking(False)
    with selectors.DefaultSelector() as selector:
        for sock in clients:
            selector.register(sock, selectors.EVENT_WRITE)
        while pending:
            ready = selector.select(timeout=60)
            assert ready, "the daemon stopped reading the requests"
            for key, _ in ready:
                sock = cast(socket.socket, key.fileobj)
                sent = sock.send(pending[sock])
                pending[sock] = pending[sock][sent:]
                if not pending[sock]:
                    del pending[sock]
                    selector.unregister(sock)
    for sock in clients:
        sock.setblocking(True)
        sock.settimeout(60)


def status_of(sock: socket.socket) -> int:
    """The status of the response to the one request sent on `sock`."""
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "no response"
        head += chunk
    return int(head.split(b" ", 2)[1])
