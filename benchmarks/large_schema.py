"""The large schema (benchmarks/schemas/large/v1.yaml, benchmarks.events_large) through
telemetryd and through jupyter_events, like socket_file and jupyter_events with the small one:

- `socket_file_large_schema`: one load process over the Unix socket into the file sink; the
  daemon loads the schema through `[schemas] paths`;
- `jupyter_events_large_schema`: EventLogger.emit of the same events into a FileHandler, the
  baseline of the ratio (the runner sets socket_file_large_schema's x jupyter_events from it,
  so the comparison is like for like).

Besides counting records, every 97th is decoded whole and compared with the event sent: a
large record mangled on its way (a nested field lost) fails the run.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.daemon_config import DaemonConfig
from benchmarks.events import EventShape
from benchmarks.events_large import SCHEMA_DIR, check_large_records
from benchmarks.scenarios import (
    DaemonRun,
    ProgressFn,
    ScenarioResult,
    run_jupyter_events,
    run_socket_file,
)

LARGE = EventShape(schema="large")
#: Events of socket_file_large_schema (1.3-1.8 KB each: 200,000 are about 320 MB of input).
LARGE_SCHEMA_CAP = 200_000
#: jupyter_events validates the large event at a few thousand a second.
JUPYTER_EVENTS_LARGE_CAP = 30_000
QUICK_JUPYTER_EVENTS_LARGE_CAP = 5_000


def run_socket_file_large(
    events: int, requested: int, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = run_socket_file(
        "socket_file_large_schema",
        events,
        1,
        folder,
        progress,
        config=DaemonConfig(schema_paths=(str(SCHEMA_DIR),)),
        shape=LARGE,
        after=_check_records,
    )
    if events < requested:
        result.notes.append(f"capped at {events:,} of the {requested:,} events (large lines)")
    return result


def run_jupyter_events_large(
    events: int, requested: int, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    result = run_jupyter_events(
        events, requested, folder, progress, name="jupyter_events_large_schema", schema="large"
    )
    if result.ok:
        _compare(result, folder / "events.jsonl")
        result.status = "FAILED" if result.problems else "OK"
    return result


def _check_records(result: ScenarioResult, run: DaemonRun) -> None:
    _compare(result, run.daemon.output_path)


def _compare(result: ScenarioResult, path: Path) -> None:
    compared, problems = check_large_records(path)
    result.details["records_compared_whole"] = compared
    result.problems.extend(problems)
