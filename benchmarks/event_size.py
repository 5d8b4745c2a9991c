"""Throughput against event size: socket_file with the event's `path` padded so that every
line has the same size, from 200 B to 10 KB (the unpadded event, socket_file's, is 153-159 B).

Each size is a run of its own (event_size_200b ... event_size_10kb): one load process over the
Unix socket into the file sink, like socket_file. The number of events is the run's, capped so
that no run sends more than SIZE_BYTES_CAP bytes (QUICK_SIZE_BYTES_CAP with --quick). Each
reports events/s, and input MB/s in its details (`input_mb_per_sec`, line bytes / elapsed).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.events import EventShape
from benchmarks.scenarios import ProgressFn, ScenarioResult, failed, run_socket_file

#: Line sizes, bytes (1 KB = 1,000 bytes), newline included.
SIZES = (200, 500, 1_000, 3_000, 10_000)
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
        try:
            result = run_socket_file(
                name, count, 1, workdir / name, progress, shape=EventShape(line_bytes=size)
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
