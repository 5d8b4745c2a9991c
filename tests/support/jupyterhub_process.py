"""A real JupyterHub on loopback, for the tests of [auth.jupyterhub] (test_jupyterhub_live.py).

`with JupyterHubProcess(workdir) as hub:` writes a jupyterhub_config.py into `workdir` (the
dummy authenticator, every user allowed, random free ports, the sqlite database, cookie secret
and pid files in `workdir`), starts `python -m jupyterhub` with configurable-http-proxy (from
npm) as its proxy, and waits until the hub says it is running. `hub.api_url` is what
telemetryd's `[auth.jupyterhub] api_url` takes; `hub.create_user`, `hub.create_group` and
`hub.new_token` go through the REST API with the token of a `test-admin` service. Leaving the
block stops the hub (SIGTERM), which stops its proxy and the single-user servers it runs.

`extra_config` lines are appended to jupyterhub_config.py. `spawner_config(workdir)` gives the
lines for single-user servers that run here and in CI, as root: SimpleLocalProcessSpawner with
homes under `workdir/home`, `python -m jupyterhub.singleuser --allow-root`, and Jupyter's
config, data and runtime folders in `workdir`. `hub.start_server`/`hub.stop_server` start and
stop a server through the REST API and wait until it is ready, or gone. A single-user server
the hub leaves behind (it was killed, or its cleanup failed) is killed when the block ends.

The services: `telemetryd`, declared without a token (telemetryd sends its clients' tokens,
never one of its own; the declaration is what makes `access:services!service=telemetryd` a scope
tokens can hold), and `test-admin`. The `user` role adds `access:services!service=telemetryd` to
`self`, so users may create tokens scoped to telemetryd alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.managed import Managed
from tests.support.ports import free_port

SERVICE = "telemetryd"
TELEMETRYD_SCOPE = f"access:services!service={SERVICE}"


def missing() -> str | None:
    """Why a JupyterHub cannot be started here, or None."""
    if importlib.util.find_spec("jupyterhub") is None:
        return "jupyterhub is not installed (pip install -e '.[dev]')"
    if shutil.which("configurable-http-proxy") is None:
        return (
            "configurable-http-proxy is not on PATH "
            "(npm install -g configurable-http-proxy@5, as .ci/run does)"
        )
    return None


CONFIG = """
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.pid_file = {hub_pid!r}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [
    {{"name": "{service}"}},
    {{"name": "test-admin", "api_token": {admin_token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "{scope}"]}},
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:groups", "servers", "tokens", "{scope}"],
        "services": ["test-admin"],
    }},
]
"""

SPAWNER_CONFIG = """
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = {home!r}
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]
c.Spawner.notebook_dir = {home!r}
c.Spawner.environment = {environment!r}
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
"""


def spawner_config(workdir: Path) -> str:
    """jupyterhub_config.py lines for single-user servers running here, as this user (root
    included), each in `workdir/home/<name>`, with Jupyter's folders in `workdir/jupyter`."""
    jupyter = workdir / "jupyter"
    environment = {
        "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return SPAWNER_CONFIG.format(
        home=str(workdir / "home" / "{username}"),
        python=sys.executable,
        environment=environment,
    )


class JupyterHubProcess(Managed):
    def __init__(
        self, workdir: Path, *, extra_config: str = "", start_timeout_secs: float = 30
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.admin_token = secrets.token_hex(32)
        self.config_path = workdir / "jupyterhub_config.py"
        self.log_path = workdir / "jupyterhub.log"
        self.proxy_pid_path = workdir / "jupyterhub-proxy.pid"
        self.start_timeout_secs = start_timeout_secs
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path.write_text(
            CONFIG.format(
                proxy_port=free_port(),
                hub_port=self.hub_port,
                proxy_api_port=self.proxy_api_port,
                proxy_pid=str(self.proxy_pid_path),
                hub_pid=str(workdir / "jupyterhub.pid"),
                db=workdir / "jupyterhub.sqlite",
                cookie_secret=str(workdir / "jupyterhub_cookie_secret"),
                service=SERVICE,
                admin_token=self.admin_token,
                scope=TELEMETRYD_SCOPE,
            )
            + extra_config
        )

    @property
    def api_url(self) -> str:
        """The hub's REST API, as JupyterHub gives its services in $JUPYTERHUB_API_URL."""
        return f"http://127.0.0.1:{self.hub_port}/hub/api"

    def end(self) -> None:
        self.stop()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + self.start_timeout_secs
        while "JupyterHub is now running" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyterhub not running after {deadline} s:\n{self.log()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (the hub then stops its proxy and its servers); SIGKILL after 20 s, and to a
        proxy or single-user server left."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # left when the hub was killed, or died: by then, it would have stopped them
        self._kill_proxy()
        self._kill_servers()

    def _kill_servers(self) -> None:
        """Single-user servers still running in this hub's homes (`spawner_config`), by pid."""
        homes = self.workdir / "home"
        if not homes.is_dir():
            return
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = Path(os.readlink(entry / "cwd"))
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cwd.is_relative_to(homes) and b"jupyterhub.singleuser" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _kill_proxy(self) -> None:
        """The proxy this hub started, by the pid in its pid file, if it is still that proxy."""
        try:
            pid = int(self.proxy_pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        args = cmdline.split(b"\0")
        if b"configurable-http-proxy" in cmdline and b"%d" % self.proxy_api_port in args:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- the REST API, as the test-admin service ---------------------------------------------

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method,
            f"{self.api_url}/{path}",
            json=body,
            headers={"authorization": f"token {self.admin_token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def create_user(self, name: str) -> None:
        self._admin("POST", f"users/{name}")

    def user(self, name: str) -> dict[str, Any]:
        model: dict[str, Any] = self._admin("GET", f"users/{name}")
        return model

    def start_server(self, user: str, server: str = "", timeout_secs: float = 30) -> None:
        """Starts a server of `user` and waits until the hub says it is ready."""
        self._admin("POST", f"users/{user}/servers/{server}" if server else f"users/{user}/server")
        self._wait_server(user, server, True, timeout_secs)

    def stop_server(self, user: str, server: str = "", timeout_secs: float = 30) -> None:
        """Stops a server of `user` and waits until the hub no longer lists it."""
        path = f"users/{user}/servers/{server}" if server else f"users/{user}/server"
        self._admin("DELETE", path)
        self._wait_server(user, server, False, timeout_secs)

    def _wait_server(self, user: str, server: str, ready: bool, timeout_secs: float) -> None:
        deadline = time.monotonic() + timeout_secs
        while True:
            model = self.user(user)["servers"].get(server)
            if (model is not None and model["ready"]) if ready else model is None:
                return
            if time.monotonic() > deadline:
                state = "ready" if ready else "gone"
                raise TimeoutError(
                    f"server {user}/{server} not {state} after {timeout_secs} s: {model}\n"
                    f"{self.log()}"
                )
            time.sleep(0.1)

    def create_group(self, name: str, users: Sequence[str]) -> None:
        self._admin("POST", f"groups/{name}", {"users": list(users)})

    def new_token(self, user: str, scopes: Sequence[str] | None = None) -> str:
        """A new API token of `user` (with the user's own scopes when `scopes` is None)."""
        body: dict[str, Any] = {"note": "telemetryd live test"}
        if scopes is not None:
            body["scopes"] = list(scopes)
        token: str = self._admin("POST", f"users/{user}/tokens", body)["token"]
        return token
