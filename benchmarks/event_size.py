"""Throughput against event size: socket_file with the event's `path` padded so that every
line has the same size, from 100 B to 10 KB. The unpadded event, socket_file's, is 153-159 B,
so the 100 B lines are the tiny schema's (benchmarks/schemas/tiny, schema id `urn:t`, one
property), loaded with `[schemas] paths`.

Each size is a run of its own (event_size_200b ... event_size_10kb): one load process over the
Unix socket into the file sink, like socket_file. The number of events is the run's, capped so
that no run sends more than SIZE_BYTES_CAP bytes (QUICK_SIZE_BYTES_CAP with --quick). Each
reports events/s, and input MB/s in its details (`input_mb_per_sec`, line bytes / elapsed).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.daemon_config import DaemonConfig
from benchmarks.events import TINY_SCHEMA_DIR, EventShape
from benchmarks.scenarios import ProgressFn, ScenarioResult, failed, run_socket_file

#: Line sizes, bytes (1 KB = 1,000 bytes), newline included.
SIZES = (100, 200, 500, 1_000, 3_000, 10_000)
#: Below this, the contents_service envelope does not fit: the tiny schema's events instead.
TINY_BELOW = 160
SIZE_BYTES_CAP = 500_000_000
QUICK_SIZE_BYTES_CAP = 20_000_000


def size_name(line_bytes: int) -> str:
    if line_bytes % 1000 == 0:
        return f"event_size_{line_bytes // 1000}kb"
    return f"event_size_{line_bytes}b"


SIZE_RESULTS = tuple(size_name(s) for s in SIZES)


def run_event_sizes(
    events: int, bytes_cap: int, workdir: Path, progress: ProgressFn
) -> list[ScenarioResult]:
    out = []
    for size in SIZES:
        name = size_name(size)
        count = max(1, min(events, bytes_cap // size))
        tiny = size < TINY_BELOW
        try:
            result = run_socket_file(
                name,
                count,
                1,
                workdir / name,
                progress,
                config=DaemonConfig(schema_paths=(str(TINY_SCHEMA_DIR),)) if tiny else None,
                shape=EventShape(schema="tiny" if tiny else "small", line_bytes=size),
            )
        except Exception as e:
            result = failed(name, count, e)
        result.details["line_bytes"] = size
        if count < events:
            result.notes.append(
                f"capped at {count:,} of the {events:,} events ({count * size / 1e6:,.0f} MB "
                "of input)"
            )
        if result.elapsed_secs:
            result.details["input_mb_per_sec"] = count * size / result.elapsed_secs / 1e6
        out.append(result)
    return out
