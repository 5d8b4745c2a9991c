"""HTTP load processes (run by benchmarks.load.LoadGroup): prebuilt request bytes over raw
keep-alive sockets, one request in flight per connection (no pipelining: what a client does).

A Python HTTP client (httpx, requests) would spend more time per request than the server under
test, so the measure would be the client's. Here each process pre-builds every request it will
send, opens its connections before "go", and then only sends bytes, waits (epoll) for a whole
response on each connection, and sends that connection's next request. The parser reads just
the status code, Content-Length and, for a batch, the body's `"accepted"` count.

The same code drives telemetryd and the live Jupyter Server baseline, with the same requests.
"""

from __future__ import annotations

import re
import select
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.events import encode_events, event_body
from benchmarks.load import (
    LoadGroup,
    LoadReport,
    ReadyFn,
    cpu_seconds_self,
    max_rss_bytes_self,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"
RECEIVE_BYTES = 256 * 1024
#: A server that answers nothing for this long fails the load (a hung server, not a slow one).
RESPONSE_TIMEOUT_SECS = 120.0
ERROR_SAMPLES = 3

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)
_ACCEPTED = re.compile(rb'"accepted":[ \t]*(\d+)')


class HttpLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class HttpTarget:
    """Where and how a load sends: one event per POST (batch_events == 0, a JSON body) or
    NDJSON batches of `batch_events`."""

    host: str
    port: int
    path: str = "/api/events"
    batch_events: int = 0
    token: str | None = None
    #: The status of a request whose events were all taken: 204 for one event, 200 a batch.
    ok_status: int = 204

    def head(self, body_bytes: int) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Type: {NDJSON if self.batch_events else JSON}",
            f"Content-Length: {body_bytes}",
        ]
        if self.token is not None:
            lines.append(f"Authorization: token {self.token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def requests(self, start: int, count: int) -> list[tuple[bytes, int]]:
        """(request bytes, events in it) for events start .. start+count-1."""
        out: list[tuple[bytes, int]] = []
        if self.batch_events:
            for first in range(start, start + count, self.batch_events):
                n = min(self.batch_events, start + count - first)
                body = encode_events(first, n)
                out.append((self.head(len(body)) + body, n))
        else:
            for n in range(start, start + count):
                body = event_body(n)
                out.append((self.head(len(body)) + body, 1))
        return out


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    request: int = -1  # index of the request in flight; -1 when idle
    sent_ns: int = 0
    unsent: memoryview | None = None  # the rest of a request the socket did not take at once


def _response_size(buf: bytearray) -> tuple[int, int] | None:
    """(end of the head, whole size) of the response at the start of `buf`; None until the head
    is complete."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head_end += 4
    match = _CONTENT_LENGTH.search(buf, 0, head_end)
    if match is not None:
        return head_end, head_end + int(match.group(1))
    status = int(buf[9:12])
    if status in {204, 304} or 100 <= status < 200:
        return head_end, head_end
    if _CHUNKED.search(buf, 0, head_end):
        raise HttpLoadError(f"chunked responses are not supported: {bytes(buf[:head_end])!r}")
    raise HttpLoadError(f"a response without Content-Length: {bytes(buf[:head_end])!r}")


def http_load(
    ready: ReadyFn, target: HttpTarget, start: int, count: int, connections: int
) -> LoadReport:
    """Sends events start .. start+count-1 over `connections` keep-alive connections, each
    waiting for its response before its next request; a connection takes the next request
    not yet sent, so the connections share the work whatever their speed."""
    requests = target.requests(start, count)
    latencies = array("q", bytes(8 * len(requests)))
    statuses: Counter[int] = Counter()
    samples: list[str] = []
    conns: dict[int, _Connection] = {}
    poller = select.epoll()
    try:
        for _ in range(min(connections, len(requests))):
            sock = socket.create_connection((target.host, target.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Non-blocking: a large batch the server has not read yet must not stop this
            # process from reading another connection's response.
            sock.setblocking(False)
            conns[sock.fileno()] = _Connection(sock)
            poller.register(sock.fileno(), select.EPOLLIN)
        ready(sum(len(r) for r, _ in requests))

        cpu_before = cpu_seconds_self()
        ns = time.perf_counter_ns
        next_request = accepted = reply_bytes = bytes_sent = 0
        busy = 0
        last_send = 0.0

        def send_next(c: _Connection) -> bool:
            nonlocal next_request, bytes_sent, last_send
            if next_request >= len(requests):
                c.request = -1
                return False
            data = requests[next_request][0]
            c.request = next_request
            next_request += 1
            c.sent_ns = ns()
            try:
                sent = c.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                c.unsent = memoryview(data)[sent:]
                poller.modify(c.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
            bytes_sent += len(data)
            last_send = time.perf_counter()
            return True

        def send_rest(c: _Connection) -> None:
            nonlocal last_send
            assert c.unsent is not None
            try:
                sent = c.sock.send(c.unsent)
            except BlockingIOError:
                return
            c.unsent = c.unsent[sent:]
            if not c.unsent:
                c.unsent = None
                poller.modify(c.sock.fileno(), select.EPOLLIN)
                last_send = time.perf_counter()

        first = time.perf_counter()
        for c in conns.values():
            busy += send_next(c)
        while busy:
            ready_fds = poller.poll(RESPONSE_TIMEOUT_SECS)
            if not ready_fds:
                raise HttpLoadError(f"no response in {RESPONSE_TIMEOUT_SECS}s")
            for fd, mask in ready_fds:
                c = conns[fd]
                if c.unsent is not None and mask & select.EPOLLOUT:
                    send_rest(c)
                if not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    continue
                try:
                    data = c.sock.recv(RECEIVE_BYTES)
                except BlockingIOError:
                    continue
                if not data:
                    raise HttpLoadError(
                        f"the server closed a connection with request {c.request} unanswered"
                        + (f": {bytes(c.buf[:300])!r}" if c.buf else "")
                    )
                c.buf += data
                size = _response_size(c.buf)
                if size is None or len(c.buf) < size[1]:
                    continue
                head_end, end = size
                latencies[c.request] = ns() - c.sent_ns
                reply_bytes += end
                status = int(c.buf[9:12])
                statuses[status] += 1
                events_sent = requests[c.request][1]
                if status == target.ok_status:
                    if target.batch_events:
                        match = _ACCEPTED.search(c.buf, head_end, min(end, head_end + 200))
                        accepted += int(match.group(1)) if match else events_sent
                    else:
                        accepted += events_sent
                elif len(samples) < ERROR_SAMPLES:
                    samples.append(bytes(c.buf[:end][:500]).decode("latin-1"))
                if len(c.buf) > end:
                    raise HttpLoadError(f"bytes after a response: {bytes(c.buf[end:][:200])!r}")
                if _CLOSE.search(c.buf, 0, head_end):
                    raise HttpLoadError(f"the server closed the connection: {bytes(c.buf[:500])!r}")
                del c.buf[:]
                if not send_next(c):
                    busy -= 1
        closed = time.perf_counter()
        cpu = cpu_seconds_self() - cpu_before
    finally:
        poller.close()
        for c in conns.values():
            c.sock.close()
    return LoadReport(
        start=start,
        events=count,
        bytes_sent=bytes_sent,
        first_byte=first,
        last_byte=last_send,
        closed=closed,
        reply_bytes=reply_bytes,
        cpu_secs=cpu,
        max_rss_bytes=max_rss_bytes_self(),
        connections=len(conns),
        requests=len(requests),
        statuses=dict(statuses),
        accepted=accepted,
        error_samples=samples,
        latencies_ns=latencies.tobytes(),
    )


def http_loads(target: HttpTarget, shares: list[tuple[int, int]], connections: int) -> LoadGroup:
    """One HTTP load process per (start, count) share, each with `connections` connections."""
    return LoadGroup(http_load, [(target, start, count, connections) for start, count in shares])
