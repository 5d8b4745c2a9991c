"""telemetryd as a child process: generated config in a temporary folder, readiness, SIGTERM,
the final `"msg":"stopped"` log line, CPU seconds and peak RSS.

The daemon is `[sys.executable, "-m", "telemetryd", "run", "--config", cfg]`, a direct child,
so `os.wait4` gives its CPU time; its stderr goes to a file (never a pipe that could fill up).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class DaemonError(RuntimeError):
    pass


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) a process used so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    """VmHWM from /proc/PID/status: a process's peak resident set size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS from /proc/PID/status: a process's resident set size now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _table(header: str, values: dict[str, object]) -> str:
    return "\n".join([header, *(f"{k} = {_toml(v)}" for k, v in values.items())]) + "\n"


@dataclass(frozen=True)
class DaemonConfig:
    """What a scenario varies; everything else is telemetryd's default."""

    sink_fsync: str = "interval"
    batch_max_events: int = 1000
    shutdown_timeout_secs: float = 120.0
    #: The HTTP API's address ("127.0.0.1:0": a free port, read from the "listening" line);
    #: "" leaves it off.
    http: str = ""
    #: A request waits this long for room in full queues before a 503: long enough that the
    #: HTTP loads meet back-pressure (as `when_full = "block"` on the socket), never losses.
    http_enqueue_timeout_secs: float = 60.0
    #: `sha256:<hex>` of the one token of `[auth] required = true`; "" leaves auth off.
    token_hash: str = ""
    #: The archive sink's buffer: "memory", or "disk" (in the scenario's folder).
    buffer: str = "memory"
    buffer_fsync: str = "batch"
    #: Serve GET /metrics (on 127.0.0.1:0 when `http` is ""), which the harness reads once
    #: every record is written: the latency histogram's p99.9 (the "stopped" line has p50 and
    #: p99 only). An idle listener; the socket scenarios send nothing to it.
    metrics: bool = True
    #: More `[schemas] paths` (the large schema's folder, benchmarks/schemas/large).
    schema_paths: tuple[str, ...] = ()
    #: More `[[sinks]]` tables beside "archive" (fan-out, a slow sink). Relative paths are
    #: the daemon's working directory, the scenario's folder: "out/<name>.jsonl".
    extra_sinks: tuple[dict[str, object], ...] = ()

    def render(self, folder: Path) -> str:
        server: dict[str, object] = {
            "unix_socket": folder / "run" / "telemetryd.sock",
            "shutdown_timeout_secs": self.shutdown_timeout_secs,
        }
        http = self.http or ("127.0.0.1:0" if self.metrics else "")
        if http:
            server |= {
                "http": http,
                "http_enqueue_timeout_secs": self.http_enqueue_timeout_secs,
            }
        auth = []
        if self.token_hash:
            auth = [
                _table("[auth]", {"required": True}),
                _table("[[auth.tokens]]", {"identity": "bench", "hash": self.token_hash}),
            ]
        return "\n".join(
            [
                _table("[server]", server),
                *auth,
                _table(
                    "[schemas]",
                    {
                        "builtin": True,
                        **({"paths": list(self.schema_paths)} if self.schema_paths else {}),
                    },
                ),
                _table("[log]", {"level": "info", "format": "json", "stats_interval_secs": 0}),
                _table(
                    "[[sinks]]",
                    {
                        "name": "archive",
                        "type": "file",
                        "path": folder / "out" / "events.jsonl",
                        "rotate_bytes": 0,
                        "fsync": self.sink_fsync,
                        "batch_max_events": self.batch_max_events,
                        "when_full": "block",
                        **(
                            {
                                "buffer": "disk",
                                "buffer_path": folder / "buffer" / "archive",
                                "buffer_fsync": self.buffer_fsync,
                            }
                            if self.buffer == "disk"
                            else {}
                        ),
                    },
                ),
                *(_table("[[sinks]]", dict(sink)) for sink in self.extra_sinks),
                _table(
                    "[dead_letter]",
                    {
                        "name": "dead-letter",
                        "type": "file",
                        "path": folder / "out" / "rejected.jsonl",
                        "when_full": "drop_newest",
                    },
                ),
            ]
        )


def file_sink(name: str, **settings: object) -> dict[str, object]:
    """An extra file sink's table, like "archive" (block when full, never rotated), writing
    `out/<name>.jsonl` (DaemonProcess.sink_path)."""
    return {
        "name": name,
        "type": "file",
        "path": f"out/{name}.jsonl",
        "rotate_bytes": 0,
        "fsync": "interval",
        "when_full": "block",
        **settings,
    }


@dataclass
class DaemonResult:
    exit_code: int
    stopped: dict[str, Any] | None  # the fields of the final "stopped" log line
    cpu_secs_total: float  # from wait4: the whole life of the process
    max_rss_bytes: int  # from wait4 (ru_maxrss)
    error_lines: list[str]  # log lines at level warning or above

    def sink(self, name: str) -> dict[str, Any] | None:
        if self.stopped is None:
            return None
        for entry in self.stopped.get("sinks", []):
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        return None


class DaemonProcess:
    """Use as a context manager: leaving it kills the daemon if it still runs."""

    def __init__(self, folder: Path, config: DaemonConfig) -> None:
        self.folder = folder
        self.config = config
        self.config_path = folder / "telemetryd.toml"
        self.socket_path = folder / "run" / "telemetryd.sock"
        self.output_path = folder / "out" / "events.jsonl"
        self.dead_letter_path = folder / "out" / "rejected.jsonl"
        self.stderr_path = folder / "stderr.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.ready_secs: float | None = None  # from the start of the process until ready

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DaemonError("daemon not started")
        return self._proc.pid

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def start(self, timeout_secs: float = 30.0) -> None:
        self.config_path.write_text(self.config.render(self.folder), encoding="utf-8")
        with self.stderr_path.open("wb") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "telemetryd", "run", "--config", str(self.config_path)],
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started = time.monotonic()
        deadline = started + timeout_secs
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DaemonError(
                    f"telemetryd exited with {self._proc.returncode} before it was ready:\n"
                    + self._stderr_tail()
                )
            if self._is_ready():
                self.ready_secs = time.monotonic() - started
                return
            time.sleep(0.02)
        raise DaemonError(f"telemetryd not ready after {timeout_secs}s:\n" + self._stderr_tail())

    def _is_ready(self) -> bool:
        if not self.socket_path.exists() or b'"msg":"ready"' not in self.stderr_path.read_bytes():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(os.fspath(self.socket_path))
            except OSError:
                return False
        return True

    def http_port(self) -> int:
        """The port of the `"msg":"listening"` log line with an `http` field."""
        for raw in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("msg") == "listening" and "http" in entry:
                return int(str(entry["http"]).rsplit(":", 1)[1])
        raise DaemonError("no HTTP listening line from telemetryd:\n" + self._stderr_tail())

    def sink_path(self, name: str) -> Path:
        """The file of the "archive" sink, or of an extra file sink made by `file_sink`."""
        return self.output_path if name == "archive" else self.folder / "out" / f"{name}.jsonl"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.pid)

    def stop(self, timeout_secs: float | None = None) -> DaemonResult:
        """SIGTERM, wait for the exit (reaping with wait4 for the rusage), parse the logs."""
        proc = self._proc
        if proc is None:
            raise DaemonError("daemon not started")
        if timeout_secs is None:
            timeout_secs = self.config.shutdown_timeout_secs + 30
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_secs
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.kill()
                raise DaemonError(
                    f"telemetryd did not exit {timeout_secs}s after SIGTERM:\n"
                    + self._stderr_tail()
                )
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        self._proc = None
        stopped, errors = self._parse_log()
        return DaemonResult(
            exit_code=proc.returncode,
            stopped=stopped,
            cpu_secs_total=usage.ru_utime + usage.ru_stime,
            max_rss_bytes=usage.ru_maxrss * 1024,
            error_lines=errors,
        )

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _parse_log(self) -> tuple[dict[str, Any] | None, list[str]]:
        stopped: dict[str, Any] | None = None
        errors: list[str] = []
        for raw in self.stderr_path.read_text(errors="replace").splitlines():
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
        return stopped, errors

    def _stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no stderr)"
