"""Starts a real Jupyter Server on loopback as a subprocess, for tests that compare telemetryd with
it or use its extensions (JupyterLab Pioneer) as clients.

`with JupyterServerProcess(tmp_path, config_text) as js:` starts `python -m jupyter_server` on a
free port of 127.0.0.1 with a random token, its config, data and runtime folders and HOME inside
`tmp_path` (so the developer's ~/.jupyter is not read), and waits until GET /api/status answers
with the token. The environment's own config ({sys.prefix}/etc/jupyter, where pip enables server
extensions such as jupyterlab_pioneer) is still read, as for any server run from this venv.
Leaving the block stops it: SIGTERM, then SIGKILL if it has not exited in time.
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
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

#: Environment variables that would point the server at the developer's own Jupyter setup.
_JUPYTER_ENV_PREFIXES = ("JUPYTER_", "JPY_")


class JupyterServerProcess:
    """A live Jupyter Server. `url`, `port`, `token` and `headers` are set once it is started."""

    def __init__(
        self,
        workdir: Path,
        config_text: str = "",
        *,
        env: Mapping[str, str] | None = None,
        config_files: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        wait_ready: bool = True,
    ) -> None:
        """`config_text` becomes jupyter_server_config.py (its settings reach the server's
        extensions too); `config_files` adds other files to the config folder, by name; `env`
        is added to the server's environment. With `wait_ready=False`, entering the block only
        starts the process: call `await_ready()` before using it (to start others meanwhile)."""
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.data_dir = workdir / "data"
        self.runtime_dir = workdir / "runtime"
        self.home = workdir / "home"
        self.root_dir = workdir / "root"
        self.log_path = workdir / "jupyter_server.log"
        self.config_text = config_text
        self.config_files = dict(config_files or {})
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.wait_ready = wait_ready
        self.token = secrets.token_hex(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.returncode: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> JupyterServerProcess:
        try:
            self.start()
        except BaseException:
            self._terminate()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._terminate()

    def start(self) -> None:
        for folder in (self.config_dir, self.data_dir, self.runtime_dir, self.home, self.root_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "jupyter_server_config.py").write_text(self.config_text)
        for name, text in self.config_files.items():
            (self.config_dir / name).write_text(text)
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
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_server",
                    "--ServerApp.ip=127.0.0.1",
                    "--ServerApp.port=0",  # the OS picks a free port; read back from jpserver-*
                    "--ServerApp.port_retries=0",
                    f"--IdentityProvider.token={self.token}",
                    "--ServerApp.open_browser=False",
                    f"--ServerApp.root_dir={self.root_dir}",
                    "--allow-root",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            log.close()
        if self.wait_ready:
            self.await_ready()

    def await_ready(self) -> None:
        """Waits until GET /api/status answers 200 with the token (the port read back from the
        server's jpserver-<pid>.json)."""
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        info = self.runtime_dir / f"jpserver-{proc.pid}.json"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter_server exited with {proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"jupyter_server not ready after {self.start_timeout}s:\n{self.log()}"
                )
            if not self.port and info.exists():
                with contextlib.suppress(ValueError, KeyError):  # being written
                    self.port = int(json.loads(info.read_text())["port"])
            if self.port and self._status_ok():
                return
            time.sleep(0.05)

    def _status_ok(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/api/status", headers=self.headers, timeout=5)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (SIGKILL after `timeout`); returns the exit code."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode
        return self.returncode

    def _terminate(self) -> None:
        if self.proc is not None:
            self.stop()

    # -- access --------------------------------------------------------------------------------

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
