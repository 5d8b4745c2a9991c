"""A throwaway PostgreSQL cluster, for the postgres sink's tests and benchmark.

`initdb` + `pg_ctl` in a fresh folder under /tmp, listening on 127.0.0.1 only, on a free port,
with its Unix socket in that folder; trust for the `postgres` role, passwords (scram) for any
other, so a test can also get authentication wrong. PostgreSQL refuses to run as root, so as
root the binaries run as the `postgres` system user (created if missing), and the folder is
made with mkdtemp in /tmp and given to that user: pytest's tmp_path sits under a root-owned
0700 folder that user could not enter.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]

from tests.support.ports import free_port

SERVER_USER = "postgres"  # the system account the server runs as when we are root
SUPERUSER = "postgres"  # the cluster's superuser role (trust on loopback)


def pg_binary(name: str) -> str:
    """A PostgreSQL program from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise FileNotFoundError(
            f"PostgreSQL's {name} is neither on PATH nor under /usr/lib/postgresql/*/bin"
        )
    return candidates[-1]


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _parent(entry: Path) -> int:
    fields = _stat_fields(int(entry.name))
    return int(fields[1]) if fields else 0


def _cpu_ticks(pid: int, *, children: bool) -> int:
    """utime + stime (fields 14, 15 of proc(5)), and cutime + cstime (16, 17) if asked."""
    fields = _stat_fields(pid)
    if not fields:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    return ticks + (int(fields[13]) + int(fields[14]) if children else 0)


def _ensure_server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        # CI installs the Debian package, which makes this account; a bare machine with
        # the binaries alone does not have it.
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(SERVER_USER)


HBA = """\
local all postgres trust
host all postgres 127.0.0.1/32 trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
"""


class PostgresServer:
    """`with PostgresServer() as pg:` initialises and starts a cluster; leaving stops it
    (immediately) and deletes its folder. `stop()`/`start()` in between simulate an outage."""

    def __init__(self, settings: Sequence[str] = ("fsync=off",)) -> None:
        self.settings = list(settings)
        self.root = Path(tempfile.mkdtemp(prefix="telemetryd-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = _ensure_server_user()
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def init(self) -> None:
        self._run(
            pg_binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: nothing to make crash-safe
        )
        (self.data / "pg_hba.conf").write_text(HBA)

    def start(self, timeout_secs: float = 30) -> None:
        """Starts the server (on a new free port the first time; on the same one again)."""
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            if self.port == 0 or attempt:
                self.port = free_port()
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.root}",
                *(f"-c {setting}" for setting in self.settings),
            ]
            result = self._run(
                pg_binary("pg_ctl"),
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(timeout_secs)),
                "-o",
                " ".join(options),
                check=False,
            )
            if result.returncode == 0:
                self.running = True
                return
        raise RuntimeError(f"pg_ctl start failed:\n{result.stdout}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        if not self.running:
            return
        self._run(pg_binary("pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w")
        self.running = False

    def close(self) -> None:
        try:
            if self.running and (self.data / "postmaster.pid").exists():
                self._run(
                    pg_binary("pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    check=False,
                )
        finally:
            self.running = False
            shutil.rmtree(self.root, ignore_errors=True)

    # -- addressing ------------------------------------------------------------------------

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{database}"

    def cpu_seconds(self) -> float:
        """CPU the server used so far: the postmaster, its live processes, and the exited ones
        it reaped (a backend's CPU moves into the postmaster's cutime when it ends)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        total = _cpu_ticks(pid, children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _parent(entry) == pid:
                total += _cpu_ticks(int(entry.name), children=False)
        return total / _CLOCK_TICKS

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- queries, as the tests assert with them -------------------------------------------

    def fetch(self, query: str, *args: Any, database: str = "postgres") -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn(database), timeout=10)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows
            finally:
                await conn.close()

        return asyncio.run(run())

    def value(self, query: str, *args: Any) -> Any:
        return self.fetch(query, *args)[0][0]

    def execute(self, script: str, database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.dsn(database), timeout=10)
            try:
                await conn.execute(script)
            finally:
                await conn.close()

        asyncio.run(run())

    # -- running the binaries --------------------------------------------------------------

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", SERVER_USER, "--", *argv] if self._as_root else list(argv)
        result = subprocess.run(
            command,
            cwd=self.root,  # the server user may not enter the caller's working folder
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}\n"
                + self.log_tail()
            )
        return result
