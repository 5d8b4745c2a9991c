"""Hostile HTTP clients (docs/operations.md): bodies of one-byte chunks, heads and
bodies dribbled in, and a crowd of slowloris connections must not stall or lock out anyone
else. Each attack runs against the real daemon on loopback, at a bounded rate, so what decides
the outcome is the daemon's behaviour, not the machine's speed."""

from __future__ import annotations

import json
import resource
import select
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest

from tests.support.config_text import http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import (
    RawConnection,
    Reply,
    jupyter_event,
    parse_reply,
    read_to_close,
)
from tests.support.waiting import wait_for

HEAD_SECS = 2.0
EVENT = json.dumps(jupyter_event("hostile")).encode()
CHUNKED_HEAD = (
    b"POST /api/events/batch HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def hostile_config(workdir: Path, server: str = "") -> str:
    return http_config(
        workdir, f"http_head_timeout_secs = {HEAD_SECS}\nhttp_idle_timeout_secs = 60\n{server}"
    )


def http_errors(daemon: DaemonProcess) -> dict[str, int]:
    """The HTTP source's error counts, from the stats of a stopped daemon."""
    (http,) = [s for s in daemon.final_stats()["sources"] if s["name"] == "http"]
    errors: dict[str, int] = http["errors"]
    return errors


def post_event(port: int) -> int:
    """A valid POST on a fresh connection: its status, 0 when it got no answer."""
    try:
        with RawConnection(port, timeout=10) as connection:
            return connection.request("POST", "/api/events", EVENT).status
    except (OSError, h11.ProtocolError):
        return 0


class Paced:
    """Sleeps as needed to keep a sender at most `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0.0

    def wait(self, amount: float) -> None:
        self.sent += amount
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


# --- a body of one-byte chunks ----------------------------------------------------------------

#: 64 Ki one-byte chunks: 384 KiB on the wire for 64 KiB of body.
ONE_BYTE_CHUNKS = b"1\r\nx\r\n" * 65536
#: Each flooding client sends at most this many bytes a second (4 clients: 8 MB/s).
FLOOD_RATE = 2_000_000


def flood(port: int, stop: threading.Event, replies: list[Reply]) -> None:
    """Requests of 2 MiB of body in one-byte chunks (12 MiB on the wire), one after another."""
    paced = Paced(FLOOD_RATE)
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            try:
                sock.sendall(CHUNKED_HEAD)
                for _ in range(32):
                    if stop.is_set() or select.select([sock], [], [], 0)[0]:
                        break  # answered: the answer is read below
                    sock.sendall(ONE_BYTE_CHUNKS)
                    paced.wait(len(ONE_BYTE_CHUNKS))
                else:
                    sock.sendall(b"0\r\n\r\n")
                reply = read_reply(sock)
            except OSError:
                continue  # the daemon answered and closed while this was still sending
            if reply is not None:
                replies.append(reply)  # and at once the next request, on a new connection


def read_reply(sock: socket.socket) -> Reply | None:
    """One answer (with its Content-Length body), without waiting for the connection to end."""
    received = b""
    while True:
        _, found, body = received.partition(b"\r\n\r\n")
        if found and len(body) >= int(parse_reply(received).headers.get("content-length", 0)):
            return parse_reply(received)
        chunk = sock.recv(65536)
        if not chunk:
            return None
        received += chunk


def test_one_byte_chunks_never_stall_healthz(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, http_config(tmp_path)) as daemon:
        port = http_port(daemon)
        stop = threading.Event()
        replies: list[Reply] = []
        clients = [
            threading.Thread(target=flood, args=(port, stop, replies), daemon=True)
            for _ in range(4)
        ]
        for client in clients:
            client.start()
        latencies = []
        try:
            started = time.monotonic()
            while time.monotonic() - started < 10:
                sent = time.monotonic()
                with RawConnection(port, timeout=60) as connection:
                    assert connection.request("GET", "/healthz").status == 200
                latencies.append(time.monotonic() - sent)
                time.sleep(0.05)  # a probe every 50 ms, all along the flood
            wait_for(lambda: replies, 30, "an answer to a flooding client")
        finally:
            stop.set()
            for client in clients:
                client.join(60)
        assert max(latencies) < 0.5, f"slowest /healthz {max(latencies):.3f} s"
        assert {reply.status for reply in replies} == {400}
        answer = replies[0].json()
        assert answer["reason"] == "too_many_chunks"
        assert "chunks" in answer["message"]
        assert daemon.stop() == 0
    assert http_errors(daemon)["too_many_chunks"] >= len(replies)


# --- slow heads and bodies ------------------------------------------------------------------


def dribble(sock: socket.socket, data: bytes, interval: float, stop: threading.Event) -> None:
    """Sends `data` a byte at a time until it is all sent or the daemon closes the socket."""
    for i in range(len(data)):
        if stop.wait(interval):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


def read_answer(sock: socket.socket, data: bytes, interval: float) -> tuple[Reply | None, float]:
    """Dribbles `data` while reading what the daemon answers: (the answer, seconds it took)."""
    stop = threading.Event()
    sender = threading.Thread(target=dribble, args=(sock, data, interval, stop), daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        raw = read_to_close(sock)
    finally:
        stop.set()
        sender.join(10)
    return (parse_reply(raw) if raw else None), time.monotonic() - started


def test_a_head_must_be_whole_within_its_deadline_however_it_trickles(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path, hostile_config(tmp_path)) as daemon:
        port = http_port(daemon)
        endless = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 1000
        with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECS + 15) as sock:
            reply, took = read_answer(sock, endless, 0.1)  # far more often than the idle timeout
        assert reply is not None
        assert reply.status == 408
        assert reply.json()["reason"] == "head_timeout"
        assert "http_head_timeout_secs" in reply.json()["message"]
        assert HEAD_SECS * 0.9 < took < HEAD_SECS + 10
        # a connection that sends nothing at all is closed without an answer
        with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECS + 15) as sock:
            started = time.monotonic()
            assert read_to_close(sock) == b""
            assert HEAD_SECS * 0.9 < time.monotonic() - started < HEAD_SECS + 10
        # the clock of a keep-alive connection's next head starts with its first byte
        with RawConnection(port, timeout=HEAD_SECS + 15) as connection:
            assert connection.request("GET", "/healthz").status == 200
            time.sleep(HEAD_SECS * 1.5)  # idle between requests: the idle timeout's business
            assert connection.request("GET", "/healthz").status == 200
        assert daemon.stop() == 0
    assert http_errors(daemon)["head_timeout"] == 2


def test_a_body_must_keep_up_the_minimum_rate_after_the_grace(tmp_path: Path) -> None:
    rate = 1000
    config = hostile_config(tmp_path, f"http_min_body_rate_bytes = {rate}")
    with DaemonProcess(tmp_path, config) as daemon:
        port = http_port(daemon)
        head = (
            b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECS + 15) as sock:
            sock.sendall(head)
            reply, took = read_answer(sock, b" " * 100_000, 0.01)  # ~100 bytes/s
        assert reply is not None
        assert reply.status == 408
        assert reply.json()["reason"] == "body_too_slow"
        assert "http_min_body_rate_bytes" in reply.json()["message"]
        assert HEAD_SECS * 0.9 < took < HEAD_SECS + 10
        # A pause is fine as long as the body keeps the average: each byte earns 1/rate s, the
        # bytes sent with the head too.
        padded = EVENT + b" " * (4 * rate)  # 4 s of credit beyond the grace
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(padded), padded[:-1])
            )
            time.sleep(HEAD_SECS + 1)  # past the grace, within the credit by seconds
            sock.sendall(padded[-1:])
            assert parse_reply(read_to_close(sock)).status == 204
        assert daemon.stop() == 0
    assert http_errors(daemon)["body_too_slow"] == 1


# --- the connection cap ---------------------------------------------------------------------


def test_at_the_cap_idle_connections_make_room_and_only_busy_ones_mean_503(
    tmp_path: Path,
) -> None:
    config = http_config(
        tmp_path,
        "http_max_connections = 4\nhttp_head_timeout_secs = 60\nhttp_idle_timeout_secs = 60\n"
        "http_min_body_rate_bytes = 0",
    )

    def get_and_close(port: int) -> Reply:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return parse_reply(read_to_close(sock))  # the daemon closed it: not counted now

    def busy(port: int) -> socket.socket:
        """A connection whose request's body is being read."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 ")  # its body is waited for now
        return sock

    with DaemonProcess(tmp_path, config) as daemon:
        port = http_port(daemon)
        held = [busy(port)]
        idle = RawConnection(port)
        assert idle.request("GET", "/healthz").status == 200  # kept alive, then idle
        heads = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        for sock in heads:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished (for now)
        # Four connections: a fifth closes the idle one rather than be refused...
        assert get_and_close(port).status == 200
        assert idle.closed_by_server()
        idle.close()
        # ... and with no idle one, the oldest unfinished head.
        held.append(busy(port))
        assert get_and_close(port).status == 200
        evicted = parse_reply(read_to_close(heads[0]))
        assert evicted.status == 408
        assert evicted.json()["reason"] == "evicted"
        assert "http_max_connections" in evicted.json()["message"]
        heads[1].sendall(b"Connection: close\r\n\r\n")  # the other was left alone
        assert parse_reply(read_to_close(heads[1])).status == 200
        for sock in heads:
            sock.close()
        # Four requests whose bodies are being read are busy: the fifth connection is 503.
        held += [busy(port), busy(port)]
        refused = get_and_close(port)
        assert refused.status == 503
        assert refused.json()["reason"] == "too_many_connections"
        for sock in held:
            sock.close()
        assert daemon.stop() == 0
    errors = http_errors(daemon)
    assert errors["evicted"] == 2
    assert errors["too_many_connections"] == 1


# --- slowloris --------------------------------------------------------------------------------

SLOWLORIS = 1100
#: The daemon's connection cap (http_max_connections' default): the crowd is SLOWLORIS - CAP more.
CAP = 1024
#: What each slowloris connection sends, one byte every SLOWLORIS_EVERY seconds: never a whole head.
SLOWLORIS_BYTES = b"POST /api/events HTTP/1.1\r\nHost: x\r\n" + b"X-a: b\r\n" * 1000
SLOWLORIS_EVERY = 3.0
#: New connections the attack opens a second in place of those the daemon closed.
SLOWLORIS_RECONNECTS = 100


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for the attack's sockets here and (inherited) in the daemon."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * SLOWLORIS
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError):  # not root: the hard limit stays
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Slowloris:
    """SLOWLORIS connections, each sending a byte every SLOWLORIS_EVERY seconds; one the
    daemon closes is opened again (at most SLOWLORIS_RECONNECTS a second)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.sent: dict[socket.socket, int] = {}  # bytes sent on each open connection
        self.closed = Counter[str]()  # the status lines of the daemon's answers
        self.established = threading.Event()  # the daemon's cap full of them, see _run
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Slowloris:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        for sock in list(self.sent):
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

    def _open(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ)
        self.sent[sock] = 0

    def _close(self, sock: socket.socket) -> None:
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
        self.closed[answer.split(b"\r\n", 1)[0].decode("latin-1") or "closed"] += 1
        self.selector.unregister(sock)
        del self.sent[sock]
        sock.close()

    def _run(self) -> None:
        for _ in range(SLOWLORIS):
            self._open()
        turn = 0
        tick = 0.1
        per_tick = max(1, round(SLOWLORIS * tick / SLOWLORIS_EVERY))
        while not self.stop.is_set():
            started = time.monotonic()
            for key, _ in self.selector.select(0):  # answered or closed by the daemon
                self._close(key.fileobj)  # type: ignore[arg-type]
            for _ in range(min(SLOWLORIS - len(self.sent), round(SLOWLORIS_RECONNECTS * tick))):
                self._open()
            # the next byte on a share of the connections, so each gets one per SLOWLORIS_EVERY
            open_now = list(self.sent)
            for sock in open_now[turn : turn + per_tick] or open_now[:per_tick]:
                self._send_byte(sock)
            # new connections send their first byte at once
            for sock in [s for s, n in self.sent.items() if not n]:
                self._send_byte(sock)
            turn = turn + per_tick if turn + per_tick < len(open_now) else 0
            # Established once the daemon took in the whole crowd, closing SLOWLORIS - CAP of
            # them to make room: its cap is full, and stays full as each one closed is opened
            # again. Not "all SLOWLORIS open at once": if the daemon evicts before this thread
            # first looks (a loaded machine), a reopened one only evicts another, never reached.
            if self.closed.total() >= SLOWLORIS - CAP and all(self.sent.values()):
                self.established.set()
            self.stop.wait(max(0.0, tick - (time.monotonic() - started)))

    def _send_byte(self, sock: socket.socket) -> None:
        at = self.sent[sock]
        try:
            sock.send(SLOWLORIS_BYTES[at : at + 1])
        except OSError:
            return  # closed: the selector reports it
        self.sent[sock] = at + 1


def test_a_slowloris_crowd_does_not_lock_out_valid_clients(
    tmp_path: Path, many_files: None
) -> None:
    """1,100 connections dribbling heads against a cap of 1,024: valid POSTs are still 204."""
    # A head deadline longer than the test: the cap stays full of slow heads throughout, so
    # what lets valid clients in is closing the oldest of them to make room.
    config = http_config(tmp_path, "http_head_timeout_secs = 120")
    with DaemonProcess(tmp_path, config) as daemon:
        port = http_port(daemon)
        statuses: list[int] = []
        with Slowloris(port) as attack:
            assert attack.established.wait(60), "the connection cap full of slowloris ones"
            attacked = time.monotonic()
            while time.monotonic() - attacked < 20:
                statuses.append(post_event(port))
                time.sleep(0.25)  # a valid client every 250 ms, all along the attack
            closed = dict(attack.closed)
        counts = Counter(statuses)
        assert counts[204] >= 0.8 * len(statuses), f"{counts} (the attack's closed: {closed})"
        assert daemon.stop() == 0
    assert http_errors(daemon)["evicted"] >= counts[204]
