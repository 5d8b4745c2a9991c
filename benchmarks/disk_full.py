"""A full disk, measured: the figures of docs/operations.md, "A full disk".

    sudo .venv/bin/python -m benchmarks.disk_full      # root: it mounts a 5 MiB tmpfs

A disk buffer and a file sink share a 5 MiB tmpfs; one client (telemetryd.client.Client)
emits 40,000 events, some 9 MB of JSON Lines, so the disk fills. The script then watches the
daemon for 30 s of full disk, SIGKILLs it, restarts it on the still full disk, grows the file
system (`mount -o remount,size=64m`) and times until every event is acknowledged and in the
file. It prints what a user would look at: whether the daemon runs, connections, log lines,
and the counts. Not part of `python -m benchmarks`: it needs root and takes about a minute.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from telemetryd.client import Client
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.waiting import wait_for

CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
EVENTS = 40_000
FULL_DISK_WATCH_SECS = 30.0


def config(folder: Path, disk: Path) -> str:
    return f"""
[server]
unix_socket = "{folder}/run/telemetryd.sock"
http = "127.0.0.1:0"
shutdown_timeout_secs = 10
[log]
stats_interval_secs = 0
[[sinks]]
name = "archive"
type = "file"
path = "{disk}/out/events.jsonl"
buffer = "disk"
buffer_path = "{disk}/buffer"
buffer_segment_bytes = 262144
[dead_letter]
name = "dead-letter"
type = "file"
path = "{folder}/rejected.jsonl"
"""


def archive(daemon: DaemonProcess) -> dict[str, Any]:
    """The archive sink's entry in GET /readyz."""
    answer = httpx.get(f"http://127.0.0.1:{http_port(daemon)}/readyz", timeout=10).json()
    sink: dict[str, Any] = next(s for s in answer["sinks"] if s["name"] == "archive")
    return sink


def running(daemon: DaemonProcess) -> bool:
    return daemon.proc is not None and daemon.proc.poll() is None


def distinct_paths(path: Path) -> set[str]:
    if not path.exists():
        return set()
    data = path.read_bytes()
    return {json.loads(line)["path"] for line in data[: data.rfind(b"\n") + 1].splitlines()}


def count(logs: list[dict[str, Any]], prefix: str) -> int:
    return sum(1 for line in logs if str(line.get("msg", "")).startswith(prefix))


def run(folder: Path) -> None:
    disk = folder / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)], check=True)
    daemon = DaemonProcess(folder, config(folder, disk))
    client: Client | None = None
    try:
        daemon.start()
        client = Client(daemon.socket_path)
        began = time.monotonic()
        for i in range(EVENTS):
            client.emit(CONTENTS, "1", {"action": "save", "path": f"e{i}"})
        wait_for(lambda: "/buffer/" in archive(daemon)["detail"], 60, "full disk on /readyz")
        print(f"disk full after {time.monotonic() - began:.2f} s: {archive(daemon)['detail']}")
        time.sleep(FULL_DISK_WATCH_SECS)  # a measurement window, not a wait for a condition
        logs = daemon.log_lines()
        print(
            f"{FULL_DISK_WATCH_SECS:.0f} s of full disk: running {running(daemon)}, "
            f"client connections {client.stats().connects}, "
            f"acknowledged {client.stats().acknowledged} of {EVENTS}, "
            f"'connection failed' lines {count(logs, 'connection failed')}, "
            f"'disk buffer cannot write' lines {count(logs, 'disk buffer cannot write')}, "
            f"'sink write failed' lines {count(logs, 'sink write failed')}"
        )
        daemon.kill()
        print(f"SIGKILL, restart on the full disk: ready in {daemon.start():.2f} s")
        wait_for(lambda: "disk full" in archive(daemon)["detail"], 60, "full disk again")
        print(f"after the restart: running {running(daemon)}: {archive(daemon)['detail']}")
        grown = time.monotonic()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        if not client.flush(300):
            raise TimeoutError("not every event acknowledged 300 s after the disk grew")
        acknowledged = time.monotonic() - grown
        output = disk / "out" / "events.jsonl"
        wait_for(lambda: len(distinct_paths(output)) == EVENTS, 300, "every event in the file")
        print(
            f"disk grown: every event acknowledged {acknowledged:.2f} s later, "
            f"all {EVENTS} in the file {time.monotonic() - grown:.2f} s later"
        )
        wait_for(lambda: archive(daemon)["healthy"], 60, "a healthy sink")
        print(f"SIGTERM: exit code {daemon.stop()}")
        stopped = daemon.final_stats()
        sink = next(s for s in stopped["sinks"] if s["name"] == "archive")
        lines = output.read_bytes().count(b"\n")
        print(
            f"client: {client.stats()}\n"
            f"sink (second run): received {sink['received']} sent {sink['sent']} "
            f"dropped {sink['dropped']} errors {sink['errors']}\n"
            f"file: {lines} records, {len(distinct_paths(output))} distinct "
            f"(at least once: the ones written but not acknowledged at the SIGKILL come twice)"
        )
    finally:
        if client is not None:
            client.close(0)
        daemon.kill()
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        run(Path(folder))
