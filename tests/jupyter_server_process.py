"""A real Jupyter Server on loopback, for tests that compare telemetryd with it or use its
extensions (JupyterLab Pioneer) as clients.

The launcher is the benchmark harness's (benchmarks.jupyter_server: its own folders, HOME and
token, port read back from jpserver-<pid>.json, stopped with SIGTERM); this adds what tests use:
`with JupyterServerProcess(tmp_path, config_text) as js:` starts it and waits until it answers,
`js.client()` is an httpx client with its token, and leaving the block stops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx

from benchmarks.jupyter_server import JupyterServer


class JupyterServerProcess(JupyterServer):
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
        """With `wait_ready=False`, entering the block only starts the process: call
        `await_ready()` before using it (to start others meanwhile)."""
        super().__init__(workdir, config_text, env=env, config_files=config_files)
        self.start_timeout = start_timeout
        self.wait_ready = wait_ready
        self.returncode: int | None = None

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

    def await_ready(self, timeout_secs: float | None = None) -> None:
        super().await_ready(self.start_timeout if timeout_secs is None else timeout_secs)

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
