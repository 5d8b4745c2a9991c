"""Starts the real daemon as a subprocess with a temporary configuration, for integration tests."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"

_T = TypeVar("_T")


def event_line(
    path: str, action: str = "save", schema_id: str = CONTENTS, version: str = "1"
) -> bytes:
    return json.dumps(
        {"schema_id": schema_id, "version": version, "data": {"action": action, "path": path}}
    ).encode()


class DaemonProcess:
    """`with DaemonProcess(tmp_path, config_text) as d:` starts telemetryd and waits until ready."""

    def __init__(self, workdir: Path, config_text: str, *, wait_ready: bool = True) -> None:
        self.workdir = workdir
        self.config_path = workdir / "telemetryd.toml"
        self.config_path.write_text(config_text)
        self.socket_path = workdir / "run" / "telemetryd.sock"
        self.stderr_path = workdir / "stderr.log"
        self.wait_ready = wait_ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._ready_lines_before = 0

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def start(self) -> None:
        # The log is appended to across restarts: readiness is a "ready" line after these.
        self._ready_lines_before = self._count_ready()
        stderr = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telemetryd", "run", "--config", str(self.config_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stderr.close()
        if self.wait_ready:
            self._await_ready()

    def _await_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"telemetryd exited with {self.proc.returncode}:\n{self.stderr()}"
                )
            if self._count_ready() > self._ready_lines_before:
                return
            time.sleep(0.02)
        raise TimeoutError(f"telemetryd not ready after {timeout}s:\n{self.stderr()}")

    def _count_ready(self) -> int:
        return sum(1 for line in self.log_lines() if line.get("msg") == "ready")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def final_stats(self) -> dict[str, Any]:
        for line in reversed(self.log_lines()):
            if line.get("msg") == "stopped":
                stats: dict[str, Any] = line
                return stats
        raise AssertionError(f"no 'stopped' line in the log:\n{self.stderr()}")

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(self.socket_path))
        return sock


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a file sink, across rotated files (gzipped or not), in order."""
    rotated = {p.name: p for p in path.parent.glob(f"{path.stem}.*{path.suffix}")}
    for gz in path.parent.glob(f"{path.stem}.*{path.suffix}.gz"):
        # While a gzip is completed both are there, each with every record: read one.
        rotated.setdefault(gz.name.removesuffix(".gz"), gz)
    files = [*(rotated[name] for name in sorted(rotated)), path]
    records: list[dict[str, Any]] = []
    for file in files:
        if file.exists():
            data = file.read_bytes()
            if file.suffix == ".gz":
                data = gzip.decompress(data)
            records.extend(json.loads(line) for line in data.splitlines())
    return records


def receive_lines(sock: socket.socket, until: int | None = None) -> list[dict[str, Any]]:
    """Reads reply lines until EOF, or until an ack covering line `until` arrives."""
    buffer = b""
    replies: list[dict[str, Any]] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            reply = json.loads(line)
            replies.append(reply)
            if until is not None and reply.get("ack", 0) >= until:
                return replies
    return replies


# --- helpers added for the test_daemon_* integration tests ----------------------------------


def daemon_config(
    workdir: Path,
    *,
    server: str = "",
    schemas: str = "",
    sinks: str | None = None,
    shutdown_timeout_secs: float = 20,
    stats_interval_secs: float = 0,
) -> str:
    """A config with a file sink and a dead-letter file under `workdir`, with lines added to
    the [server] and [schemas] tables."""
    if sinks is None:
        sinks = file_sink("archive", workdir / "out" / "events.jsonl")
    return f"""
[server]
unix_socket = "{workdir}/run/telemetryd.sock"
shutdown_timeout_secs = {shutdown_timeout_secs}
{server}

[schemas]
{schemas}

[log]
level = "info"
stats_interval_secs = {stats_interval_secs}
{sinks}
[dead_letter]
name = "dead-letter"
type = "file"
path = "{workdir}/out/rejected.jsonl"
when_full = "block"
fsync = "never"
"""


def file_sink(name: str, path: Path, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "file"
path = "{path}"
fsync = "never"
{extra}
"""


def blackhole_sink(name: str, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "blackhole"
{extra}
"""


def wait_for(
    condition: Callable[[], _T | None], timeout: float = 10.0, what: str = "a condition"
) -> _T:
    """Polls `condition` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def rss_bytes(pid: int) -> int:
    """The resident set size of a process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class ReplyReader:
    """Reads the daemon's reply lines from a socket, keeping what follows a returned line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self.eof = False

    def line(self) -> dict[str, Any] | None:
        """The next reply, or None at the end of the stream."""
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def until_ack(self, count: int) -> list[dict[str, Any]]:
        """Replies up to and including the first ack covering line `count`."""
        replies: list[dict[str, Any]] = []
        while True:
            reply = self.line()
            if reply is None:
                raise AssertionError(f"connection closed before ack {count}; got {replies}")
            replies.append(reply)
            if reply.get("ack", 0) >= count:
                return replies

    def rest(self) -> list[dict[str, Any]]:
        replies: list[dict[str, Any]] = []
        while (reply := self.line()) is not None:
            replies.append(reply)
        return replies


def acked_connection(daemon: DaemonProcess) -> tuple[socket.socket, ReplyReader, dict[str, Any]]:
    """A connection in acknowledged mode: (socket, its reply reader, the daemon's hello)."""
    sock = daemon.connect()
    sock.sendall(b'{"hello":"telemetryd","protocol":1}\n')
    reader = ReplyReader(sock)
    hello = reader.line()
    assert hello is not None, "no hello reply"
    assert hello.get("hello") == "telemetryd", hello
    return sock, reader, hello


RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
METADATA_KEYS = [
    "__timestamp__",
    "__schema__",
    "__schema_version__",
    "__metadata_version__",
    "__origin__",
]


def expected_origin(pid: int) -> dict[str, Any]:
    """`__origin__` of a record sent over the Unix socket by process `pid` of this user."""
    return {
        "transport": "unix",
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": pid,
    }


def parse_record_time(stamp: str) -> datetime:
    """A record's `__timestamp__`, checked to be RFC 3339 in UTC as docs/events.md says."""
    assert RFC3339_UTC.fullmatch(stamp), f"not an RFC 3339 UTC time: {stamp!r}"
    moment = datetime.fromisoformat(stamp)
    assert moment.utcoffset() == timedelta(0), stamp
    return moment


def assert_record_shape(
    record: dict[str, Any], schema_id: str, pid: int, version: str = "1"
) -> dict[str, Any]:
    """Checks the §4 metadata of a record; returns its data (the keys that are not metadata)."""
    assert list(record)[: len(METADATA_KEYS)] == METADATA_KEYS, record
    parse_record_time(record["__timestamp__"])
    assert record["__schema__"] == schema_id
    assert record["__schema_version__"] == version
    assert record["__metadata_version__"] == 1
    assert type(record["__metadata_version__"]) is int
    assert record["__origin__"] == expected_origin(pid)
    return {k: v for k, v in record.items() if k not in METADATA_KEYS}


def records_so_far(path: Path) -> list[dict[str, Any]]:
    """The complete records of a file a running daemon is appending to (no partial last line)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def wait_for_records(
    path: Path, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Polls a sink's file until `count` records match `predicate`; returns the matches."""

    def matches() -> list[dict[str, Any]] | None:
        found = [r for r in records_so_far(path) if predicate(r)]
        assert len(found) <= count, f"more than {count} records match: {found}"
        return found if len(found) == count else None

    return wait_for(matches, timeout, f"{count} matching record(s) in {path}")
