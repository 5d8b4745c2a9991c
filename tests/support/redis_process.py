"""Real redis-server processes for the Redis sink's tests and benchmark: one node, or a
cluster of six.

Every server listens on loopback on a free port, keeps its files in a temporary folder and is
killed when its context ends, whatever happened in between.

A free port is only free when it is picked: until redis-server binds it, any process may take it
(as the local port of an outgoing connection, on a busy machine often). A server that exits
because its address is in use is started again on fresh ports while nobody has been told its
port yet, else again on the same port until the deadline, as the taker may let it go.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from tests.support.managed import Managed
from tests.support.ports import free_port
from tests.support.proc_stats import cpu_seconds


def redis_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH (Debian: apt-get install redis-server openssl)")
    return found


def make_certificates(folder: Path) -> Path:
    """`folder` with ca.crt, and server.crt/server.key for 127.0.0.1 signed by it (openssl)."""
    openssl = redis_binary("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    new_key = ("-newkey", "rsa:2048", "-nodes", "-days", "1")
    for args in (
        ("req", "-x509", *new_key, "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt"),
        ("req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "s.csr"),
        (
            *("x509", "-req", "-in", "s.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "1"),
            *("-CAcreateserial", "-extfile", "san.ext", "-out", "server.crt"),
        ),
    ):
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)
    return folder


class RedisServer(Managed):
    """`with RedisServer(folder) as server:` a redis-server on 127.0.0.1:`server.port`.

    `extra` are more command-line options, e.g. ["--requirepass", "secret"]. The port and
    folder stay the same across stop() and start(), so a persistent server comes back with
    its data."""

    def __init__(
        self,
        folder: Path,
        extra: list[str] | None = None,
        port: int = 0,
        tls: Path | None = None,
        cluster: bool = False,
    ) -> None:
        self.tls = tls  # a make_certificates folder: TLS only, on `port`
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._port = port or free_port()
        self._movable = not port  # our pick, and told to nobody yet
        self.cluster = cluster  # cluster mode, its bus on a port of its own
        self.bus_port = free_port() if cluster else 0
        self.extra = extra or []
        self.log_path = folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        self._movable = False  # whoever asks may hand it on: it stays
        return self._port

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_binary("redis-server"),
            "--bind",
            "127.0.0.1",
            *self.listen(),
            *self.cluster_options(),
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.log_path),
            *self.extra,  # later options win: a test may turn appendonly on
        ]

    def listen(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self._port)]
        return [
            *("--port", "0", "--tls-port", str(self._port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(self.tls / "server.crt")),
            *("--tls-key-file", str(self.tls / "server.key")),
            *("--tls-ca-cert-file", str(self.tls / "ca.crt")),
        ]

    def cluster_options(self) -> list[str]:
        if not self.cluster:
            return []
        return [
            *("--cluster-enabled", "yes"),
            *("--cluster-config-file", str(self.folder / "nodes.conf")),
            # the bus port, not port + 10000, which may be taken
            *("--cluster-port", str(self.bus_port)),
            *("--cluster-node-timeout", "2000"),
            *("--repl-diskless-sync-delay", "0"),  # replicas in sync at once, not after 5 s
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Starts redis-server and waits until it answers. The deadline is generous: on a loaded
        machine startup is slow, and how slow is not what any test is about."""
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_answering(deadline):
                return
            log = self.log_tail()
            if "Address already in use" not in log or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            self.log_path.unlink(missing_ok=True)  # the next attempt's reason, not this one's
            if self._movable:
                self._port = free_port()
                if self.cluster:
                    self.bus_port = free_port()
                    (self.folder / "nodes.conf").unlink(missing_ok=True)  # it names the old ports
            else:
                time.sleep(0.5)

    def _wait_answering(self, deadline: float) -> bool:
        """True once the server answers; False when it exited."""
        assert self.proc is not None
        while self.proc.poll() is None:
            if self._answers():
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server not answering in time:\n{self.log_tail()}")
            time.sleep(0.02)
        return False

    def _answers(self) -> bool:
        try:
            sock = socket.create_connection(("127.0.0.1", self._port), timeout=1)
            if self.tls is not None:
                context = ssl.create_default_context(cafile=self.tls / "ca.crt")
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            with sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # -NOAUTH (a password is set) also means it is up; -LOADING means not yet.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed that was not already."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def client(self, password: str | None = None, socket_timeout: float = 10) -> redis.Redis:
        if self.tls is not None:
            ca = str(self.tls / "ca.crt")
            return redis.Redis(
                host="127.0.0.1", port=self.port, password=password, ssl=True, ssl_ca_certs=ca
            )
        return redis.Redis(port=self.port, password=password, socket_timeout=socket_timeout)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def end(self) -> None:
        self.kill()


class RedisClusterProcesses:
    """Six cluster-enabled redis-servers joined by `redis-cli --cluster create` into three
    masters with one replica each; `with` waits until every node says cluster_state:ok."""

    NODES = 6

    def __init__(self, folder: Path) -> None:
        self.nodes = [RedisServer(folder / f"node{i}", cluster=True) for i in range(self.NODES)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 120.0) -> None:
        """Generous deadlines: joining six nodes takes seconds more on a loaded machine."""
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [
                redis_binary("redis-cli"),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=False,  # its output goes into the error
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout.decode()}")
        deadline = time.monotonic() + timeout
        while not all(self._node_ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout}s")
            time.sleep(0.1)

    @staticmethod
    def _node_ok(node: RedisServer) -> bool:
        with node.client() as client:
            info = client.execute_command("CLUSTER INFO")
        return bool(info.get("cluster_state") == "ok")

    def client(self) -> RedisCluster:
        """A client that discovers the cluster from the first node still running."""
        port = next(node.port for node in self.nodes if node.proc is not None)
        return RedisCluster(host="127.0.0.1", port=port, socket_timeout=10)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> RedisClusterProcesses:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
