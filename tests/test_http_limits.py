"""The HTTP source's limits and failure modes (docs/http-api.md, docs/operations.md): 413, 431,
408, 503 for full
`block` queues (the connection cap and slow clients: test_http_hostile.py), readiness, a handler
bug, random bytes, and SIGTERM with keep-alive clients connected."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetryd.config import ServerSettings
from telemetryd.core.ingest import Ingestor
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus
from telemetryd.delivery.intake import Intake
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.sources.http.app import HttpApi
from telemetryd.sources.http.server import HttpSource
from tests.support.config_text import blackhole_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import (
    RawConnection,
    jupyter_event,
    parse_reply,
    raw_exchange,
    read_to_close,
)
from tests.support.records import read_records
from tests.support.waiting import wait_for

MAX_HEADER_BYTES = 2048
MAX_BODY_BYTES = 64 * 1024
IDLE_SECS = 1.0
MAX_CONNECTIONS = 4

LIMITS = f"""
http_max_header_bytes = {MAX_HEADER_BYTES}
http_max_body_bytes = {MAX_BODY_BYTES}
http_idle_timeout_secs = {IDLE_SECS}
http_max_connections = {MAX_CONNECTIONS}
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir = tmp_path_factory.mktemp("http_limits")
    with DaemonProcess(workdir, http_config(workdir, LIMITS)) as daemon:
        yield daemon
        assert daemon.stop() == 0


def event_bytes(path: str, **extra: Any) -> bytes:
    return json.dumps(jupyter_event(path, **extra)).encode()


def healthy(port: int) -> bool:
    with RawConnection(port, timeout=10) as connection:
        reply = connection.request("GET", "/healthz")
    return reply.status == 200 and reply.json() == {"status": "ok"}


# --- bodies ---------------------------------------------------------------------------------


def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent(
    limited: DaemonProcess,
) -> None:
    head = (
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n"
    )
    reply = parse_reply(raw_exchange(http_port(limited), head))  # no body sent at all
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    answer = json.loads(reply.body)
    assert answer["reason"] == "body_too_large"
    assert "http_max_body_bytes" in answer["message"]


def test_a_chunked_body_is_413_as_soon_as_it_passes_the_limit(limited: DaemonProcess) -> None:
    port = http_port(limited)
    chunk = b"x" * 16384
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/events/batch HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):  # past the limit, never finished
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = parse_reply(read_to_close(sock))
    assert reply.status == 413
    assert json.loads(reply.body)["reason"] == "body_too_large"

    def body() -> Iterator[bytes]:  # httpx streams a generator with chunked encoding
        for _ in range(8):
            yield chunk * 2

    response = httpx.post(
        f"http://127.0.0.1:{port}/api/events/batch",
        content=body(),
        headers={"content-type": "application/x-ndjson"},
        timeout=10,
    )
    assert response.status_code == 413
    assert healthy(port)


def test_a_body_within_the_limit_is_accepted(limited: DaemonProcess) -> None:
    lines = [event_bytes(f"within/{i}") for i in range(300)]
    body = b"\n".join(lines)
    assert len(body) < MAX_BODY_BYTES
    with RawConnection(http_port(limited)) as connection:
        reply = connection.request("POST", "/api/events/batch", body, "application/x-ndjson")
    assert reply.status == 200
    assert reply.json()["accepted"] == 300


# --- heads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("whole", [True, False])
def test_oversized_headers_are_431(limited: DaemonProcess, whole: bool) -> None:
    """Whether the head arrives at once or never ends."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES
    reply = parse_reply(raw_exchange(http_port(limited), head + b"\r\n\r\n" if whole else head))
    assert reply.status == 431
    assert json.loads(reply.body)["reason"] == "headers_too_large"


def test_headers_just_within_the_limit_are_accepted(limited: DaemonProcess) -> None:
    with RawConnection(http_port(limited)) as connection:
        reply = connection.request("GET", "/healthz", headers=(("x-big", "a" * 1900),))
    assert reply.status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires Host
    ],
)
def test_malformed_requests_are_400_json(limited: DaemonProcess, request_bytes: bytes) -> None:
    reply = parse_reply(raw_exchange(http_port(limited), request_bytes))
    assert reply.status == 400
    assert json.loads(reply.body)["reason"] == "bad_request"


# --- time and connections -------------------------------------------------------------------


def test_idle_keep_alive_connections_are_closed(limited: DaemonProcess) -> None:
    port = http_port(limited)
    with RawConnection(port) as connection:
        assert connection.request("GET", "/healthz").status == 200
        started = time.monotonic()
        assert connection.closed_by_server()
        assert IDLE_SECS * 0.8 < time.monotonic() - started < IDLE_SECS + 5
    # A request left unfinished is answered 408.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
        reply = parse_reply(read_to_close(sock))
    assert reply.status == 408
    assert json.loads(reply.body)["reason"] == "request_timeout"


# --- random bytes ---------------------------------------------------------------------------

HTTP_PREFIXES = [
    b"",
    b"GET / HTTP/1.1\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\n",
    b"POST /api/events/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 9\r\n\r\n",
    b"GET /api/schemas/%ff%00 HTTP/1.0\r\n\r\n",
]


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(prefix=st.sampled_from(HTTP_PREFIXES), junk=st.binary(max_size=4096))
def test_random_bytes_never_stop_the_daemon_answering(
    limited: DaemonProcess, prefix: bytes, junk: bytes
) -> None:
    port = http_port(limited)
    answer = raw_exchange(port, prefix + junk, shutdown=True)
    if answer:
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    assert healthy(port)


# --- a bug in a handler ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_bug_in_a_handler_is_a_500_and_the_connection_goes_on() -> None:
    ingestor = Ingestor(SchemaRegistry.load())
    dead_letter = SinkQueue(100, 1 << 20, "drop_newest", ComponentStats("sink", "rejected"))
    source = HttpSource(
        HttpApi(
            ServerSettings(unix_socket=None, http="127.0.0.1:0"),
            Intake(ingestor, Bus([]), dead_letter, ComponentStats("source", "http")),
            workers=[],
        )
    )

    def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("a bug")

    ingestor.process = broken  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await tg.start(source.serve)
        async with httpx.AsyncClient(base_url=f"http://{source.address}") as client:
            response = await client.post("/api/events", json=jupyter_event("bug"))
            assert response.status_code == 500
            assert response.json() == {
                "message": "internal error; the daemon logged it",
                "reason": "internal_error",
            }
            assert (await client.get("/healthz")).status_code == 200
        assert source.stats.errors["internal"] == 1
        source.stop()
    assert source.responses == Counter({500: 1, 200: 1})


# --- readiness and backpressure --------------------------------------------------------------


def test_readyz_is_503_while_a_sink_fails(tmp_path: Path) -> None:
    sinks = blackhole_sink("flaky", "fail_batches = 1000000\nretry_initial_secs = 0.05")
    config = http_config(tmp_path, sinks=sinks, shutdown_timeout_secs=1)
    with DaemonProcess(tmp_path, config) as daemon:
        client = httpx.Client(base_url=f"http://127.0.0.1:{http_port(daemon)}", timeout=10)
        with client:
            assert client.get("/readyz").status_code == 200
            assert client.post("/api/events", json=jupyter_event("fails")).status_code == 204

            def not_ready() -> httpx.Response | None:
                response = client.get("/readyz")
                return response if response.status_code == 503 else None

            response = wait_for(not_ready, 10, "/readyz to turn 503")
            assert client.get("/healthz").status_code == 200  # alive, only not ready
        answer = response.json()
        assert answer["reason"] == "not_ready"
        assert "flaky" in answer["message"]
        flaky, dead_letter = answer["sinks"]
        assert flaky["name"] == "flaky"
        assert (flaky["ready"], flaky["healthy"]) == (False, False)
        assert "failed attempts" in flaky["detail"]
        assert (dead_letter["name"], dead_letter["ready"]) == ("dead-letter", True)
        assert daemon.stop() == 0


def test_a_full_block_queue_is_503_with_retry_after_and_counted(tmp_path: Path) -> None:
    sinks = blackhole_sink(
        "slow", "delay_secs = 2\nqueue_max_events = 2\nbatch_max_events = 1\nwhen_full = 'block'"
    )
    config = http_config(
        tmp_path, "http_enqueue_timeout_secs = 0.3", sinks=sinks, shutdown_timeout_secs=1
    )
    with DaemonProcess(tmp_path, config) as daemon:
        statuses = []
        with RawConnection(http_port(daemon)) as connection:
            for i in range(3):  # one in flight, one queued, then the queue is full
                reply = connection.request("POST", "/api/events", event_bytes(f"full/{i}"))
                statuses.append(reply.status)
            ready = connection.request("GET", "/readyz")
        assert statuses == [204, 204, 503]
        assert reply.headers["retry-after"] == "1"
        answer = reply.json()
        assert answer["reason"] == "queue_full"
        assert "not accepted" in answer["message"]
        assert ready.status == 503
        assert ready.json()["sinks"][0]["queued"] == 2
        assert daemon.stop() == 0
        http = daemon.final_stats()["sources"][1]
    assert http["name"] == "http"
    assert http["received"] == 3
    assert http["sent"] == 2
    assert http["dropped"] == {"enqueue_timeout": 1}
    assert http["responses"] == {"204": 2, "503": 2}  # the third event, then /readyz


def test_more_waiting_requests_than_allowed_are_429_at_once(tmp_path: Path) -> None:
    """With one request already waiting for room, the next is shed with 429 instead of waiting."""
    sinks = blackhole_sink(
        "slow", "delay_secs = 4\nqueue_max_events = 2\nbatch_max_events = 1\nwhen_full = 'block'"
    )
    config = http_config(
        tmp_path,
        "http_enqueue_timeout_secs = 30\nhttp_max_waiting_requests = 1",
        sinks=sinks,
        shutdown_timeout_secs=0.1,  # the slow sink's backlog is not what this test is about
    )
    with DaemonProcess(tmp_path, config) as daemon:
        port = http_port(daemon)
        with RawConnection(port) as connection:
            for i in range(2):  # one in flight, one queued: the queue is full
                assert (
                    connection.request("POST", "/api/events", event_bytes(f"w/{i}")).status == 204
                )
        replies: dict[int, Any] = {}

        def post(n: int) -> None:
            with RawConnection(port) as one:
                replies[n] = (
                    one.request("POST", "/api/events", event_bytes(f"w/{n}")),
                    time.monotonic(),
                )

        # Whichever of the two arrives first waits (within the limit of one); the other is 429.
        threads = [threading.Thread(target=post, args=(n,)) for n in (2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        (first, _), (second, _) = sorted(replies.values(), key=lambda r: r[1])
        assert (first.status, second.status) == (429, 204)
        assert first.headers["retry-after"] == "1"
        assert first.json()["reason"] == "too_many_requests"
        assert "http_max_waiting_requests" in first.json()["message"]
        assert daemon.stop() == 0
        http = daemon.final_stats()["sources"][1]
    assert http["sent"] == 3
    assert http["dropped"] == {"too_many_waiting": 1}
    assert http["responses"] == {"204": 3, "429": 1}


# --- SIGTERM ----------------------------------------------------------------------------------


def test_sigterm_with_keep_alive_clients_exits_0_and_keeps_every_204(tmp_path: Path) -> None:
    config = http_config(tmp_path, shutdown_timeout_secs=10)
    events = tmp_path / "out" / "events.jsonl"
    with DaemonProcess(tmp_path, config) as daemon:
        port = http_port(daemon)
        confirmed: list[list[str]] = [[] for _ in range(4)]
        sending = threading.Barrier(len(confirmed) + 1)

        def client(number: int) -> None:
            with RawConnection(port, timeout=30) as connection:
                sending.wait()
                i = 0
                while True:
                    path = f"term/{number}/{i}"
                    try:
                        reply = connection.request("POST", "/api/events", event_bytes(path))
                    except (OSError, h11.ProtocolError):
                        return  # the daemon closed the connection
                    if reply.status == 204:
                        confirmed[number].append(path)
                    if reply.headers.get("connection") == "close":
                        return
                    i += 1

        idle = RawConnection(port)
        assert idle.request("GET", "/healthz").status == 200
        threads = [threading.Thread(target=client, args=(n,)) for n in range(len(confirmed))]
        for thread in threads:
            thread.start()
        sending.wait()
        wait_for(lambda: all(len(c) > 20 for c in confirmed), 10, "events confirmed")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert idle.closed_by_server()  # an idle keep-alive connection is closed at once
        for thread in threads:
            thread.join(30)
        assert daemon.proc is not None
        assert daemon.proc.wait(30) == 0
        assert time.monotonic() - started < 10
        idle.close()
    stored = Counter(r["path"] for r in read_records(events))
    assert max(stored.values()) == 1  # nothing twice
    for paths in confirmed:
        assert paths
        missing = [p for p in paths if p not in stored]
        assert not missing, f"204 but not stored: {missing[:5]}"


def test_the_http_source_is_off_without_an_address(tmp_path: Path) -> None:
    config = http_config(tmp_path).replace('http = "127.0.0.1:0"', "")
    with DaemonProcess(tmp_path, config) as daemon:
        assert not [line for line in daemon.log_lines() if "http" in line]
        assert daemon.stop() == 0
        assert [s["name"] for s in daemon.final_stats()["sources"]] == ["unix"]


def test_an_address_in_use_refuses_to_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = http_config(tmp_path).replace("127.0.0.1:0", f"127.0.0.1:{port}")
        daemon = DaemonProcess(tmp_path, config, wait_ready=False)
        with daemon:
            assert daemon.proc is not None
            assert daemon.proc.wait(30) == 1
    (refusal,) = [line for line in daemon.log_lines() if line["msg"] == "refusing to start"]
    assert f"cannot listen on 127.0.0.1:{port} (server.http)" in refusal["error"]
    assert "address already in use" in refusal["error"].lower()
    assert not [line for line in daemon.log_lines() if line["msg"] == "ready"]
