"""A live Jupyter Server as a child process: the baseline of telemetryd's HTTP API in the
benchmarks, and the server tests compare telemetryd with or use the extensions of (JupyterLab
Pioneer) as clients.

`python -m jupyter_server` on a free port of 127.0.0.1 (port 0, read back from its
jpserver-<pid>.json) with a random token, its config, data and runtime folders and HOME in the
given folder (so no developer's ~/.jupyter is read; the venv's own config, which enables
installed server extensions, still is, as for any server run from this venv). By default its
EventLogger gets a `logging.FileHandler` through `c.EventLogger.handlers`, so an event POSTed to
it is validated and written to a file, as telemetryd's file sink does (without a handler,
Jupyter Server's `emit` returns before validating and the event goes nowhere).

`with JupyterServerProcess(folder) as js:` starts it and waits until it answers; `js.client()`
is an httpx client with its token; leaving the block stops it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.proc_stats import cpu_seconds, peak_rss_bytes

_JUPYTER_ENV_PREFIXES = ("JUPYTER_", "JPY_")

CONFIG = """\
import logging

c.EventLogger.handlers = [logging.FileHandler({out!r}, encoding="utf-8")]
"""


class JupyterServerError(RuntimeError):
    pass


class JupyterServerProcess:
    def __init__(
        self,
        folder: Path,
        config_text: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        config_files: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        wait_ready: bool = True,
    ) -> None:
        """`config_text` becomes jupyter_server_config.py (default: CONFIG, the file handler);
        `config_files` adds other files to the config folder, by name; `env` is added to the
        server's environment. With `wait_ready=False`, entering the block only starts the
        process: call `await_ready()` before using it (to start others meanwhile)."""
        self.folder = folder
        self.config_text = config_text
        self.config_files = dict(config_files or {})
        self.extra_env = dict(env or {})
        self.config_dir = folder / "config"
        self.runtime_dir = folder / "runtime"
        self.data_dir = folder / "data"
        self.home = folder / "home"
        self.root_dir = folder / "root"
        self.output_path = folder / "out" / "events.jsonl"
        self.log_path = folder / "jupyter_server.log"
        self.token = secrets.token_hex(24)
        self.port = 0
        self.ready_secs: float | None = None
        self.start_timeout = start_timeout
        self.wait_ready = wait_ready
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise JupyterServerError("jupyter_server not started")
        return self._proc.pid

    def __enter__(self) -> JupyterServerProcess:
        try:
            self.launch()
            if self.wait_ready:
                self.await_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self.stop_code()

    def launch(self) -> None:
        """Starts the process without waiting for it (to start others meanwhile)."""
        for d in (
            self.config_dir,
            self.runtime_dir,
            self.data_dir,
            self.home,
            self.root_dir,
            self.output_path.parent,
        ):
            d.mkdir(parents=True, exist_ok=True)
        config = self.config_text
        if config is None:
            config = CONFIG.format(out=os.fspath(self.output_path))
        (self.config_dir / "jupyter_server_config.py").write_text(config, encoding="utf-8")
        for name, text in self.config_files.items():
            (self.config_dir / name).write_text(text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_JUPYTER_ENV_PREFIXES)}
        env.update(
            HOME=str(self.home),
            JUPYTER_CONFIG_DIR=str(self.config_dir),
            JUPYTER_DATA_DIR=str(self.data_dir),
            JUPYTER_RUNTIME_DIR=str(self.runtime_dir),
            JUPYTER_PLATFORM_DIRS="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        self._started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_server",
                    "--ServerApp.ip=127.0.0.1",
                    "--ServerApp.port=0",  # the OS picks a free port: read from jpserver-*.json
                    "--ServerApp.port_retries=0",
                    f"--IdentityProvider.token={self.token}",
                    "--ServerApp.open_browser=False",
                    f"--ServerApp.root_dir={self.root_dir}",
                    "--allow-root",
                ],
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def await_ready(self, timeout_secs: float | None = None) -> None:
        """Waits until GET /api/status answers 200 with the token (the port read back from the
        server's jpserver-<pid>.json), by default for `start_timeout`."""
        if timeout_secs is None:
            timeout_secs = self.start_timeout
        proc = self._proc
        if proc is None:
            raise JupyterServerError("jupyter_server not started")
        info = self.runtime_dir / f"jpserver-{proc.pid}.json"
        while time.monotonic() < self._started + timeout_secs:
            if proc.poll() is not None:
                raise JupyterServerError(
                    f"jupyter_server exited with {proc.returncode}:\n{self.log_tail()}"
                )
            if not self.port and info.exists():
                with contextlib.suppress(ValueError, KeyError):  # being written
                    self.port = int(json.loads(info.read_text())["port"])
            if self.port and self._status_ok():
                self.ready_secs = time.monotonic() - self._started
                return
            time.sleep(0.05)
        raise JupyterServerError(
            f"jupyter_server not ready after {timeout_secs}s:\n{self.log_tail()}"
        )

    def _status_ok(self) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/status",
            headers={"Authorization": f"token {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.pid)

    def stop(self, timeout_secs: float = 30.0) -> dict[str, Any]:
        """SIGTERM (Jupyter Server's clean stop), SIGKILL after `timeout_secs`; its exit code
        and the CPU and peak RSS of its whole life (wait4)."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise JupyterServerError("jupyter_server not started")
        killed = False
        if proc.poll() is not None:  # it had already exited (and was reaped)
            return {"exit_code": proc.returncode, "killed": False}
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_secs
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline and not killed:
                proc.kill()
                killed = True
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return {
            "exit_code": proc.returncode,
            "killed": killed,
            "cpu_secs_total": usage.ru_utime + usage.ru_stime,
            "max_rss_bytes": usage.ru_maxrss * 1024,
        }

    def stop_code(self) -> int:
        """SIGTERM and wait (SIGKILL after 30 s); the exit code."""
        self.returncode = int(self.stop()["exit_code"])
        return self.returncode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The header Jupyter Server's API clients authenticate with (no XSRF check with it)."""
        return {"Authorization": f"token {self.token}"}

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """An httpx client on the server, authenticated with its token; close it after use."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def extensions(self) -> list[str]:
        """The server extensions it loaded, from its log."""
        return [
            line.split("]", 1)[-1].split("|", 1)[0].strip()
            for line in self.log_tail(10_000).splitlines()
            if "extension was successfully loaded" in line
        ]
