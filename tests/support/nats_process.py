"""Real nats-server processes for the NATS sink's tests and benchmark: one JetStream node, or a
3-node JetStream cluster, on free loopback ports in temporary folders; and a reader of a stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig, StreamInfo

from tests.support.ports import free_port
from tests.support.proc_stats import cpu_seconds

NATS_SERVER = shutil.which("nats-server") or "nats-server"


class NatsServer:
    """`nats-server -js` on 127.0.0.1; `start` waits until its /healthz says JetStream is up.

    The ports and the store folder stay the same across stop/start, as a restarted server's."""

    def __init__(
        self,
        workdir: Path,
        name: str = "n1",
        *,
        extra_args: tuple[str, ...] = (),
        cluster_port: int | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir / name
        self.store = self.workdir / "store"
        self.log_path = self.workdir / "server.log"
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.extra_args = extra_args
        self.routes: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            NATS_SERVER,
            "-js",
            "-sd",
            str(self.store),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "--server_name",
            self.name,
            *self.extra_args,
        ]
        if self.cluster_port is not None:
            cmd += [
                "--cluster_name",
                "telemetryd-test",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(self.routes),
            ]
        return cmd

    def start(self, wait: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until /healthz answers ok: listening, JetStream enabled and, in a cluster, current."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited:\n{self.log()}")
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(url, timeout=1) as reply,
            ):
                if json.loads(reply.read()).get("status") == "ok":
                    return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} not healthy after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stops the server (SIGTERM: cleanly; SIGKILL: as a crash) and waits for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(signal.SIGKILL)


@contextlib.contextmanager
def nats_cluster(workdir: Path, size: int = 3) -> Iterator[list[NatsServer]]:
    """`size` JetStream nodes routed to each other; every one stopped on the way out."""
    nodes = [NatsServer(workdir, f"n{i + 1}", cluster_port=free_port()) for i in range(size)]
    for node in nodes:
        node.routes = [f"nats://127.0.0.1:{other.cluster_port}" for other in nodes]
    try:
        for node in nodes:
            node.start(wait=False)  # a node is healthy only once the others are there
        for node in nodes:
            node.wait_healthy(timeout=30)
        yield nodes
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL)


# --- talking to JetStream from the test process ------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    subject: str
    data: bytes
    msg_id: str | None


@contextlib.asynccontextmanager
async def connection(servers: list[str]) -> AsyncIterator[Client]:
    async def quiet(error: Exception) -> None:
        pass  # nats-py's default logs a traceback; the caller gets the exception anyway

    nc = await nats.connect(
        servers=servers, connect_timeout=2, max_reconnect_attempts=2, error_cb=quiet
    )
    try:
        yield nc
    finally:
        await nc.close()


async def _stream_info(servers: list[str], stream: str) -> StreamInfo:
    async with connection(servers) as nc:
        return await nc.jsm(timeout=5).stream_info(stream)


def stream_info(servers: list[str], stream: str) -> StreamInfo:
    return asyncio.run(_stream_info(servers, stream))


async def _add_stream(servers: list[str], config: StreamConfig) -> None:
    async with connection(servers) as nc:
        await nc.jsm(timeout=10).add_stream(config)


def add_stream(servers: list[str], config: StreamConfig) -> None:
    asyncio.run(_add_stream(servers, config))


async def _delete_stream(servers: list[str], stream: str) -> None:
    async with connection(servers) as nc:
        await nc.jsm(timeout=10).delete_stream(stream)


def delete_stream(servers: list[str], stream: str) -> None:
    asyncio.run(_delete_stream(servers, stream))


async def _read_stream(servers: list[str], stream: str) -> list[StoredMessage]:
    async with connection(servers) as nc:
        info = await nc.jsm(timeout=5).stream_info(stream)
        total = info.state.messages
        js = nc.jetstream(timeout=5)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30
        )
        subscription = await js.pull_subscribe(
            (info.config.subjects or [">"])[0], stream=stream, config=config
        )
        stored: list[StoredMessage] = []
        try:
            while len(stored) < total:
                for msg in await subscription.fetch(min(1000, total - len(stored)), timeout=10):
                    headers = msg.headers or {}
                    stored.append(
                        StoredMessage(
                            msg.metadata.sequence.stream,
                            msg.subject,
                            msg.data,
                            headers.get("Nats-Msg-Id"),
                        )
                    )
        finally:
            await subscription.unsubscribe()
        return stored


def read_stream(servers: list[str], stream: str) -> list[StoredMessage]:
    """Every message of the stream, in order (from the first server of `servers` that answers)."""
    return asyncio.run(_read_stream(servers, stream))
