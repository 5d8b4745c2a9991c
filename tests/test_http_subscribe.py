"""GET /api/events/subscribe through the real daemon: live records over Server-Sent Events and
WebSocket, filtered by schema and by the token's allowed_schemas; a slow subscriber loses records
(counted and announced), never the bus; limits, errors, keep-alives, disconnects and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import h11
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.websocket import WebSocketClientConnection, websocket_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Ping, Request, TextMessage

from tests.support.auth_config import ALICE, KERNEL_BOT, auth_section
from tests.support.config_text import file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import RawConnection, jupyter_event
from tests.support.records import count_lines
from tests.support.socket_client import CONTENTS, KERNELS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SUBSCRIBE = "/api/events/subscribe"
CONTENTS_GLOB = "https://events.jupyter.org/jupyter_server/contents_service/*"
NDJSON = {"content-type": "application/x-ndjson"}
#: A valid RFC 6455 handshake, without the version (the sample key of RFC 6455 §1.3).
WS_HEADERS = (
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
)


def kernel_event(msg: str) -> dict[str, Any]:
    return {"schema_id": KERNELS, "version": "1", "data": {"action": "start", "msg": msg}}


def query(*patterns: str) -> str:
    return "?" + "&".join(f"schema_id={quote(p, safe='')}" for p in patterns) if patterns else ""


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(event).encode() for event in events)


class Live:
    """A running daemon with the HTTP API and a file sink, and an httpx client for it."""

    def __init__(self, daemon: DaemonProcess, workdir: Path) -> None:
        self.daemon = daemon
        self.events = workdir / "out" / "events.jsonl"
        self.port = http_port(daemon)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def post(self, event: dict[str, Any]) -> None:
        response = self.client.post(
            "/api/events",
            content=json.dumps(event).encode(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 204, response.text

    def post_batch(self, events: list[dict[str, Any]]) -> None:
        response = self.client.post("/api/events/batch", content=ndjson(events), headers=NDJSON)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events)

    def sink_lines(self, count: int) -> list[bytes]:
        """The file sink's lines, as written, once there are `count` of them."""
        wait_for(lambda: count_lines(self.events) >= count, 15, f"{count} lines in the sink")
        lines = self.events.read_bytes().splitlines()
        assert len(lines) == count, lines
        return lines

    def metric(self, name: str, **labels: str) -> float | None:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.text
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def wait_subscribers(self, count: int) -> None:
        wait_for(
            lambda: self.metric("telemetryd_subscribers") == count,
            15,
            f"telemetryd_subscribers {count}",
        )

    def errors_logged(self) -> list[dict[str, Any]]:
        return [line for line in self.daemon.log_lines() if line.get("level") != "info"]


@contextmanager
def live(workdir: Path, server: str = "", sinks: str | None = None) -> Iterator[Live]:
    """The daemon for one test; stopped with SIGTERM (exit 0) unless the test stopped it."""
    with DaemonProcess(workdir, http_config(workdir, server=server, sinks=sinks)) as daemon:
        running = Live(daemon, workdir)
        with running.client:
            yield running
        assert daemon.proc is not None
        if daemon.proc.poll() is None:
            assert daemon.stop() == 0, daemon.stderr()


# --- Server-Sent Events, read from an httpx stream or a raw socket ------------------------------


@dataclass(frozen=True)
class Sse:
    event: str  # "record", "dropped", or ":" for a comment
    data: bytes  # the data line, or the comment's text

    def record(self) -> dict[str, Any]:
        assert self.event == "record", self
        value: dict[str, Any] = json.loads(self.data)
        return value


class SseReader:
    """Server-Sent Events from a source of body chunks (b"" once the body has ended)."""

    def __init__(self, receive: Callable[[], bytes]) -> None:
        self._receive = receive
        self._buffer = b""
        self.ended = False

    def next(self) -> Sse | None:
        """The next event or comment; None at the end of the body."""
        while b"\n\n" not in self._buffer:
            chunk = self._receive()
            if not chunk:
                self.ended = True
                assert self._buffer == b"", f"the stream ended inside an event: {self._buffer!r}"
                return None
            self._buffer += chunk
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        if block.startswith(b":"):
            return Sse(":", block[1:].strip())
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        assert set(fields) == {b"event", b"data"}, block
        return Sse(fields[b"event"].decode(), fields[b"data"])

    def records(self, count: int) -> list[bytes]:
        """The data of the next `count` records; keep-alives skipped, nothing else expected."""
        out: list[bytes] = []
        while len(out) < count:
            event = self.next()
            assert event is not None, f"the stream ended after {out}"
            if event.event == ":":
                continue
            assert event.event == "record", event
            out.append(event.data)
        return out

    def to_end(self) -> list[Sse]:
        rest: list[Sse] = []
        while (event := self.next()) is not None:
            rest.append(event)
        return rest


@contextmanager
def sse(running: Live, target: str = SUBSCRIBE, token: str | None = None) -> Iterator[SseReader]:
    """A subscription over httpx; it exists once this yields (the head arrived)."""
    headers = {} if token is None else {"authorization": f"token {token}"}
    with running.client.stream("GET", target, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/event-stream"
        chunks = response.iter_raw()
        yield SseReader(lambda: next(chunks, b""))


class RawSubscriber:
    """An SSE subscription on a socket with a small receive buffer, read only when asked."""

    def __init__(self, port: int, receive_buffer: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=SUBSCRIBE, headers=[("host", "127.0.0.1")])
        self.sock.sendall(
            (self.conn.send(request) or b"") + (self.conn.send(h11.EndOfMessage()) or b"")
        )
        head = self._event()
        assert isinstance(head, h11.Response), head
        assert head.status_code == 200, head
        self.reader = SseReader(self._chunk)

    def close(self) -> None:
        self.sock.close()

    def _event(self) -> Any:
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(self.sock.recv(65536))
        return event

    def _chunk(self) -> bytes:
        event = self._event()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        assert isinstance(event, h11.EndOfMessage), event
        return b""


# --- a WebSocket client on a socket (wsproto), for what tornado's client hides: pings ----------


class RawWebSocket:
    def __init__(self, port: int, target: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=target)))
        self._events: deque[Event] = deque()
        accepted = self.event()
        assert isinstance(accepted, AcceptConnection), accepted

    def event(self) -> Event:
        while not self._events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
            assert data or self._events, "the connection ended"
        return self._events.popleft()

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def close(self) -> None:
        """The close handshake (the server answers our close), then the socket."""
        try:
            self.send(CloseConnection(code=1000))
            while not isinstance(self.event(), CloseConnection):
                pass
        finally:
            self.sock.close()


async def read_ws(conn: WebSocketClientConnection) -> str | bytes | None:
    with anyio.fail_after(15):
        return await conn.read_message()


# --- 1. SSE, filtered ------------------------------------------------------------------------


def test_sse_gets_exactly_the_matching_records_byte_identical_to_the_sink(tmp_path: Path) -> None:
    with (
        live(tmp_path) as running,
        sse(running, SUBSCRIBE + query(CONTENTS_GLOB)) as contents,
        sse(running, SUBSCRIBE + query(KERNELS, CONTENTS)) as both,
    ):
        assert running.metric("telemetryd_subscribers") == 2
        running.post(jupyter_event("filter/0"))
        running.post(kernel_event("filter-k0"))
        running.post_batch(
            [
                jupyter_event("filter/1"),
                kernel_event("filter-k1"),
                jupyter_event("filter/2"),
                kernel_event("filter-k2"),
            ]
        )
        response = running.client.post(
            "/api/events/batch",
            content=json.dumps([kernel_event("filter-k3"), jupyter_event("filter/3")]).encode(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        lines = running.sink_lines(8)
        wanted = [line for line in lines if json.loads(line)["__schema__"] == CONTENTS]
        assert len(wanted) == 4
        # filter/3 is the last event posted: a kernel record sent to this subscriber would have
        # come before it.
        got = contents.records(4)
        assert got == wanted
        assert [json.loads(data)["path"] for data in got] == [f"filter/{i}" for i in range(4)]
        # schema_id repeated: both schemas, in the order the sink wrote them
        assert both.records(8) == lines


# --- 2. WebSocket with tornado's client ---------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_gets_records_as_text_messages_and_leaving_ends_it(
    tmp_path: Path,
) -> None:
    with live(tmp_path) as running:
        url = f"ws://127.0.0.1:{running.port}{SUBSCRIBE}{query(KERNELS)}"
        conn = await websocket_connect(url)
        try:
            await anyio.to_thread.run_sync(
                running.post_batch,
                [kernel_event("ws-0"), jupyter_event("ws/x"), kernel_event("ws-1")],
            )
            await anyio.to_thread.run_sync(running.post, jupyter_event("ws/y"))
            await anyio.to_thread.run_sync(running.post, kernel_event("ws-2"))
            messages = [await read_ws(conn) for _ in range(3)]
        finally:
            conn.close(1000)
        lines = await anyio.to_thread.run_sync(running.sink_lines, 5)
        kernel_lines = [line for line in lines if json.loads(line)["__schema__"] == KERNELS]
        assert all(isinstance(m, str) for m in messages), messages
        assert [str(m).encode() for m in messages] == kernel_lines
        assert [json.loads(str(m))["msg"] for m in messages] == ["ws-0", "ws-1", "ws-2"]
        while await read_ws(conn) is not None:  # the close handshake, then the end
            pass
        await anyio.to_thread.run_sync(running.wait_subscribers, 0)
        assert running.errors_logged() == []


# --- 3. a slow subscriber ---------------------------------------------------------------------


def test_a_slow_subscriber_loses_records_counted_and_announced_but_never_stalls_the_bus(
    tmp_path: Path,
) -> None:
    posts, per_post, padding = 400, 10, "x" * 4000  # 4000 events, 16 MB: more than socket buffers
    total = posts * per_post
    with live(tmp_path, "subscribe_queue_events = 10") as running:
        slow = RawSubscriber(running.port, receive_buffer=4096)
        try:
            assert running.metric("telemetryd_subscribers") == 1
            for post in range(posts):
                first = post * per_post
                events = [
                    jupyter_event(f"slow/{n}/{padding}") for n in range(first, first + per_post)
                ]
                running.post_batch(events)  # 200 each: the bus does not wait for the subscriber
            running.sink_lines(total)  # every event reached the sink

            # Now read: what was in the socket buffers and the queue, and the gaps announced.
            seen: list[int | tuple[str, int]] = []  # record numbers, ("dropped", N) for a gap
            received = dropped = 0
            while received + dropped < total:
                event = slow.reader.next()
                assert event is not None, f"ended after {received} records, {dropped} dropped"
                if event.event == "record":
                    seen.append(int(event.record()["path"].split("/")[1]))
                    received += 1
                elif event.event == "dropped":
                    notice = json.loads(event.data)
                    assert notice["reason"] == "subscriber_queue_full", notice
                    assert notice["dropped"] >= 1, notice
                    seen.append(("dropped", notice["dropped"]))
                    dropped += notice["dropped"]
                else:
                    assert event.event == ":", event
            assert received + dropped == total
            assert 0 < received < total
            # One more event: the very next thing on the stream is its record (nothing missed is
            # announced late, nothing delivered twice), and the subscriber keeps working.
            running.post(jupyter_event("slow/after"))
            assert slow.reader.records(1)[0] == running.sink_lines(total + 1)[-1]
        finally:
            slow.close()

        metric = running.metric
        assert (
            metric("telemetryd_subscriber_dropped_events_total", reason="subscriber_queue_full")
            == dropped
        )
        wait_for(
            lambda: metric("telemetryd_subscriber_sent_events_total") == received + 1,
            15,
            "every record written counted as sent",
        )
        # Each record offered is counted once, as sent or as dropped.
        assert metric("telemetryd_subscriber_received_events_total") == received + 1 + dropped
        running.wait_subscribers(0)
        assert running.errors_logged() == []

        # The records arrive in order, and each announcement stands where its gap is: the next
        # record after "dropped N" is N past the one before it.
        expected = 0
        for item in seen:
            if isinstance(item, tuple):
                expected += item[1]
                continue
            at = seen.index(item)
            assert item == expected, (
                f"record slow/{item} where slow/{expected} was due: a dropped announcement is "
                f"not at its gap; around it: {seen[max(0, at - 3) : at + 3]}"
            )
            expected += 1
        assert expected == total


# --- 4. an SSE client leaving ------------------------------------------------------------------


def test_an_sse_client_leaving_ends_its_subscription_quietly(tmp_path: Path) -> None:
    with live(tmp_path) as running:
        with running.client.stream("GET", SUBSCRIBE) as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            reader = SseReader(lambda: next(chunks, b""))
            assert running.metric("telemetryd_subscribers") == 1
            running.post(jupyter_event("leave/0"))
            assert reader.records(1) == running.sink_lines(1)
            response.close()  # the client goes away, mid-stream
            running.wait_subscribers(0)
        running.post(jupyter_event("leave/1"))
        assert json.loads(running.sink_lines(2)[1])["path"] == "leave/1"
        assert running.errors_logged() == []


# --- 5. limits and errors ----------------------------------------------------------------------


def test_subscriber_limit_and_refused_requests(tmp_path: Path) -> None:
    with live(tmp_path, "subscribe_max_subscribers = 1") as running:
        client = running.client
        with sse(running):
            for headers in ({}, dict((*WS_HEADERS, ("sec-websocket-version", "13")))):
                response = client.get(SUBSCRIBE, headers=headers)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.headers["content-type"] == "application/json"
                assert response.json()["reason"] == "too_many_subscribers"
                assert "subscribe_max_subscribers" in response.json()["message"]

            for target in (
                f"{SUBSCRIBE}?foo=1",
                f"{SUBSCRIBE}?schema_id=",
                f"{SUBSCRIBE}?schema_id=a&schema_id=",
            ):
                response = client.get(target)
                assert response.status_code == 400, (target, response.text)
                assert response.json()["reason"] == "bad_query", target

            with RawConnection(running.port) as raw:
                reply = raw.request(
                    "GET",
                    SUBSCRIBE,
                    content_type=None,
                    headers=(*WS_HEADERS, ("sec-websocket-version", "8")),
                )
            assert reply.status == 400
            assert reply.headers["content-type"] == "application/json"
            assert reply.json()["reason"] == "bad_websocket_handshake"
            assert "Sec-WebSocket-Version" in reply.json()["message"]
            assert reply.headers["sec-websocket-version"] == "13"

            response = client.post(
                SUBSCRIBE, content=b"{}", headers={"content-type": "application/json"}
            )
            assert response.status_code == 405
            assert response.headers["allow"] == "GET"
            assert response.json()["reason"] == "method_not_allowed"
        running.wait_subscribers(0)
        with sse(running):  # the place is free again
            assert running.metric("telemetryd_subscribers") == 1


def test_subscriptions_turned_off_are_404(tmp_path: Path) -> None:
    with live(tmp_path, "subscribe_max_subscribers = 0") as running:
        response = running.client.get(SUBSCRIBE)
        assert response.status_code == 404
        assert response.json()["reason"] == "not_found"
        assert "subscribe_max_subscribers" in response.json()["message"]


# --- 6. tokens -------------------------------------------------------------------------------


def test_subscribing_needs_a_token_and_sees_only_its_allowed_schemas(tmp_path: Path) -> None:
    sinks = file_sink("archive", tmp_path / "out" / "events.jsonl") + auth_section()
    with live(tmp_path, sinks=sinks) as running:
        client = running.client
        response = client.get(SUBSCRIBE)
        assert response.status_code == 401
        assert response.json()["reason"] == "unauthenticated"
        assert "bearer" in response.headers["www-authenticate"].lower()
        assert client.get(SUBSCRIBE, headers={"authorization": "token nope"}).status_code == 403
        with RawConnection(running.port) as raw:  # a WebSocket handshake is no way around it
            reply = raw.request(
                "GET",
                SUBSCRIBE,
                content_type=None,
                headers=(*WS_HEADERS, ("sec-websocket-version", "13")),
            )
        assert reply.status == 401

        with sse(running, token=KERNEL_BOT) as bot, sse(running, token=ALICE) as alice:
            # ingest stays anonymous ([auth] required is false)
            running.post(jupyter_event("tok/0"))
            running.post(kernel_event("tok-k0"))
            running.post_batch([jupyter_event("tok/1"), kernel_event("tok-k1")])
            running.post(kernel_event("tok-k2"))
            lines = running.sink_lines(5)
            assert alice.records(5) == lines
            # tok-k2 is the last event posted: a contents record would have come before it
            assert bot.records(3) == [x for x in lines if json.loads(x)["__schema__"] == KERNELS]


# --- 7. SIGTERM ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sigterm_ends_sse_streams_and_closes_websockets_with_1001(tmp_path: Path) -> None:
    with live(tmp_path) as running:
        daemon = running.daemon
        assert daemon.proc is not None
        with sse(running) as events:
            conn = await websocket_connect(f"ws://127.0.0.1:{running.port}{SUBSCRIBE}")
            try:
                await anyio.to_thread.run_sync(running.post, jupyter_event("term/0"))
                (line,) = await anyio.to_thread.run_sync(running.sink_lines, 1)
                assert await read_ws(conn) == line.decode()
                assert await anyio.to_thread.run_sync(events.records, 1) == [line]

                started = time.monotonic()
                daemon.signal(signal.SIGTERM)
                rest: list[str | bytes | None] = []
                while (message := await read_ws(conn)) is not None:
                    rest.append(message)
                assert rest == []
                assert conn.close_code == 1001
                # the chunked body is finished properly: httpx reads it to the end, no error
                assert await anyio.to_thread.run_sync(events.to_end) == []
                assert events.ended
            finally:
                conn.close()
            code = await anyio.to_thread.run_sync(daemon.proc.wait, 15)
            elapsed = time.monotonic() - started
        assert code == 0, daemon.stderr()
        assert elapsed < 8, f"the daemon took {elapsed:.1f} s to stop"
        assert daemon.final_stats()["subscribers"]["open"] == 0
        assert running.errors_logged() == []


# --- 8. keep-alives --------------------------------------------------------------------------


def test_quiet_subscriptions_get_keepalives_and_stay_open(tmp_path: Path) -> None:
    with live(tmp_path, "subscribe_keepalive_secs = 0.2") as running:
        started = time.monotonic()
        with sse(running) as events:
            for _ in range(4):
                assert events.next() == Sse(":", b"keepalive")
            # one per quiet period: the fourth is sent 0.8 s after the subscription began
            assert time.monotonic() - started >= 0.6
            running.post(jupyter_event("quiet/0"))
            assert events.records(1) == running.sink_lines(1)

        ws = RawWebSocket(running.port, SUBSCRIBE)
        try:
            for _ in range(4):
                event = ws.event()
                assert isinstance(event, Ping), event
                ws.send(event.response())
            running.post(jupyter_event("quiet/1"))
            line = running.sink_lines(2)[1]
            while isinstance(event := ws.event(), Ping):
                ws.send(event.response())
            assert isinstance(event, TextMessage), event
            assert event.message_finished
            assert event.data.encode() == line
        finally:
            ws.close()
        running.wait_subscribers(0)
        assert running.errors_logged() == []
