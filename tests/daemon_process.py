"""Starts the real daemon as a subprocess with a temporary configuration, for integration tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"


def event_line(
    path: str, action: str = "save", schema_id: str = CONTENTS, version: str = "1"
) -> bytes:
    return json.dumps(
        {"schema_id": schema_id, "version": version, "data": {"action": action, "path": path}}
    ).encode()


def minimal_config(workdir: Path, extra: str = "", sinks: str | None = None) -> str:
    """A config with a file sink and a dead-letter file under `workdir`; `extra` is appended."""
    if sinks is None:
        sinks = f"""
[[sinks]]
name = "archive"
type = "file"
path = "{workdir}/out/events.jsonl"
fsync = "never"
"""
    return f"""
[server]
unix_socket = "{workdir}/run/telemetryd.sock"
shutdown_timeout_secs = 20

[log]
level = "info"
stats_interval_secs = 0
{sinks}
[dead_letter]
name = "dead-letter"
type = "file"
path = "{workdir}/out/rejected.jsonl"
when_full = "block"
fsync = "never"
{extra}
"""


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
            if any(line.get("msg") == "ready" for line in self.log_lines()):
                return
            time.sleep(0.02)
        raise TimeoutError(f"telemetryd not ready after {timeout}s:\n{self.stderr()}")

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
    """Every record of a file sink, across rotated files, in order."""
    files = [*sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")), path]
    records: list[dict[str, Any]] = []
    for file in files:
        if file.exists():
            records.extend(json.loads(line) for line in file.read_bytes().splitlines())
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
