"""The TOML text of a test daemon's configuration: a file sink and a dead-letter file under
its folder, with lines added to the tables a test varies."""

from __future__ import annotations

from pathlib import Path


def daemon_config(
    workdir: Path,
    *,
    server: str = "",
    schemas: str = "",
    sinks: str | None = None,
    shutdown_timeout_secs: float = 20,
    stats_interval_secs: float = 0,
) -> str:
    """A config with a file sink and a dead-letter file under `workdir`, with lines added to
    the [server] and [schemas] tables."""
    if sinks is None:
        sinks = file_sink("archive", workdir / "out" / "events.jsonl")
    return f"""
[server]
unix_socket = "{workdir}/run/telemetryd.sock"
shutdown_timeout_secs = {shutdown_timeout_secs}
{server}

[schemas]
{schemas}

[log]
level = "info"
stats_interval_secs = {stats_interval_secs}
{sinks}
[dead_letter]
name = "dead-letter"
type = "file"
path = "{workdir}/out/rejected.jsonl"
when_full = "block"
fsync = "never"
"""


def file_sink(name: str, path: Path, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "file"
path = "{path}"
fsync = "never"
{extra}
"""


def blackhole_sink(name: str, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "blackhole"
{extra}
"""


def http_config(
    workdir: Path, server: str = "", sinks: str | None = None, shutdown_timeout_secs: float = 20
) -> str:
    """daemon_config with the HTTP API on a free port of 127.0.0.1."""
    return daemon_config(
        workdir,
        server=f'http = "127.0.0.1:0"\n{server}',
        sinks=sinks,
        shutdown_timeout_secs=shutdown_timeout_secs,
    )
