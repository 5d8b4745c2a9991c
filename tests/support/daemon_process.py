"""telemetryd as a child process, for the tests and the benchmarks.

`with DaemonProcess(folder, config) as daemon:` writes the configuration (TOML text, or a typed
config that renders itself, such as benchmarks.daemon_config.DaemonConfig) into `folder`,
starts `python -m telemetryd run` there and waits for its READY=1 on NOTIFY_SOCKET (what
systemd's Type=notify waits for); leaving the block kills it if it still runs. The daemon is a
direct child, so `stop` reaps it with `os.wait4` for its CPU time and peak RSS; its stderr goes
to a file, never a pipe that could fill up.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.support.managed import Managed
from tests.support.proc_stats import cpu_seconds, peak_rss_bytes, rss_bytes


class DaemonError(RuntimeError):
    pass


class RendersConfig(Protocol):
    """A typed configuration: its TOML for a daemon working in `folder`."""

    @property
    def shutdown_timeout_secs(self) -> float: ...

    def render(self, folder: Path) -> str: ...


@dataclass
class DaemonResult:
    """A stopped daemon's run, for a benchmark's report."""

    exit_code: int
    stopped: dict[str, Any] | None  # the fields of the final "stopped" log line
    cpu_secs_total: float  # from wait4: the whole life of the process
    max_rss_bytes: int  # from wait4 (ru_maxrss)
    error_lines: list[str]  # log lines at level warning or above (and any that are not JSON)

    def sink(self, name: str) -> dict[str, Any] | None:
        if self.stopped is None:
            return None
        for entry in self.stopped.get("sinks", []):
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        return None


class DaemonProcess(Managed):
    """A telemetryd run in `workdir`: its config, Unix socket, file sinks and stderr are there.

    `wait_ready=False`: starting does not wait for readiness (a daemon that is to refuse to
    start, or two started at once). `stop` then `start` again restarts it on the same files; the
    stderr log is appended to across restarts."""

    def __init__(
        self, workdir: Path, config: str | RendersConfig, *, wait_ready: bool = True
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.config_path = workdir / "telemetryd.toml"
        self.socket_path = workdir / "run" / "telemetryd.sock"
        self.output_path = workdir / "out" / "events.jsonl"
        self.dead_letter_path = workdir / "out" / "rejected.jsonl"
        self.stderr_path = workdir / "stderr.log"
        self.wait_ready = wait_ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.ready_secs: float | None = None  # from the start of the process until ready
        self._usage: resource.struct_rusage | None = None  # of the last stop, from wait4
        self._log_offset = 0  # where the last start's lines begin in stderr.log
        self._notify: socket.socket | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        text = config if isinstance(config, str) else config.render(workdir)
        self.config_path.write_text(text, encoding="utf-8")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise DaemonError("daemon not started")
        return self.proc.pid

    def end(self) -> None:
        self.kill()

    def start(self, timeout: float = 30.0) -> float:
        """Starts the daemon and, with `wait_ready`, waits for READY=1; the seconds it took."""
        self._log_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        # An abstract socket: no path to clean up, and no 108-byte limit on a deep tmp_path.
        # It stays open while the daemon runs: a STOPPING=1 it could not send would be a
        # warning in its log. Closed once the daemon is reaped, else with this object.
        address = f"telemetryd-test-{secrets.token_hex(8)}"
        self._close_notify()
        notify = self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        weakref.finalize(self, notify.close)
        notify.bind("\0" + address)
        started = time.monotonic()
        with self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "telemetryd", "run", "--config", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": "@" + address},
            )
        if self.wait_ready:
            self._await_ready(notify, started + timeout, timeout)
            self.ready_secs = time.monotonic() - started
        return self.ready_secs or 0.0

    def _close_notify(self) -> None:
        notify, self._notify = self._notify, None
        if notify is not None:
            notify.close()

    def _await_ready(self, notify: socket.socket, deadline: float, timeout: float) -> None:
        assert self.proc is not None
        notify.settimeout(0.05)  # also the pace at which an early exit is noticed
        while time.monotonic() < deadline:
            try:
                states = notify.recv(4096).split(b"\n")
            except TimeoutError:
                states = []
            if b"READY=1" in states:
                return
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"telemetryd exited with {self.proc.returncode} before it was ready:\n"
                    + self.stderr()
                )
        raise DaemonError(f"telemetryd not ready after {timeout}s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log line, across restarts."""
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

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM and wait (by default the config's shutdown timeout and 30 s more, or 60 s);
        the exit code. Reaped with wait4, which gives the run's CPU time and peak RSS."""
        proc = self.proc
        if proc is None:
            raise DaemonError("daemon not started")
        if timeout is None:
            config = self.config
            timeout = 60.0 if isinstance(config, str) else config.shutdown_timeout_secs + 30
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.kill()
                raise DaemonError(
                    f"telemetryd did not exit {timeout}s after SIGTERM:\n" + self.stderr()
                )
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        self._close_notify()
        self._usage = usage
        self.returncode = proc.returncode
        return proc.returncode

    def stop_and_report(self, timeout: float | None = None) -> DaemonResult:
        """`stop`, and the run as a benchmark reports it (from the last start's log)."""
        exit_code = self.stop(timeout)
        usage = self._usage
        assert usage is not None
        stopped: dict[str, Any] | None = None
        errors: list[str] = []
        with self.stderr_path.open("rb") as log:
            log.seek(self._log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                errors.append(raw)  # not a log line: a traceback, most likely
                continue
            if not isinstance(entry, dict):
                continue
            if entry.get("level") in ("warning", "error", "critical"):
                errors.append(raw)
            if entry.get("msg") == "stopped":
                stopped = entry
        return DaemonResult(
            exit_code=exit_code,
            stopped=stopped,
            cpu_secs_total=usage.ru_utime + usage.ru_stime,
            max_rss_bytes=usage.ru_maxrss * 1024,
            error_lines=errors,
        )

    def kill(self) -> None:
        """SIGKILL if it still runs, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_notify()

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

    def sink_path(self, name: str) -> Path:
        """The file of the "archive" sink, or of another file sink writing out/<name>.jsonl."""
        return self.output_path if name == "archive" else self.workdir / "out" / f"{name}.jsonl"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.pid)


def http_port(daemon: DaemonProcess) -> int:
    """The port of the `"msg":"listening"` line with an `http` field (the last start's)."""
    for line in reversed(daemon.log_lines()):
        if line.get("msg") == "listening" and "http" in line:
            return int(str(line["http"]).rsplit(":", 1)[1])
    raise DaemonError(f"no http listening line:\n{daemon.stderr()}")
