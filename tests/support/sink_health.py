"""A sink's state as a running daemon reports it on GET /readyz, and as a stopped one counts
it in its final "stopped" log line."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.daemon_process import DaemonProcess, http_port


def readyz(daemon: DaemonProcess) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{http_port(daemon)}/readyz", timeout=10)
    answer: dict[str, Any] = response.json()
    return answer


def sink_health(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    for sink in readyz(daemon)["sinks"]:
        if sink["name"] == name:
            entry: dict[str, Any] = sink
            return entry
    raise AssertionError(f"no sink {name!r} in /readyz")


def final_sink(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    for sink in daemon.final_stats()["sinks"]:
        if sink["name"] == name:
            entry: dict[str, Any] = sink
            return entry
    raise AssertionError(f"no sink {name!r} in the stopped line")
