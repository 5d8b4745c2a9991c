"""The typed configuration of a benchmark's telemetryd: what a scenario varies, rendered as the
TOML that tests.support.daemon_process.DaemonProcess writes into the scenario's folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


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


def toml_table(header: str, values: dict[str, object]) -> str:
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
                toml_table("[auth]", {"required": True}),
                toml_table("[[auth.tokens]]", {"identity": "bench", "hash": self.token_hash}),
            ]
        return "\n".join(
            [
                toml_table("[server]", server),
                *auth,
                toml_table(
                    "[schemas]",
                    {
                        "builtin": True,
                        **({"paths": list(self.schema_paths)} if self.schema_paths else {}),
                    },
                ),
                toml_table("[log]", {"level": "info", "format": "json", "stats_interval_secs": 0}),
                toml_table(
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
                *(toml_table("[[sinks]]", dict(sink)) for sink in self.extra_sinks),
                toml_table(
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
