"""One event stream to several sinks: fan-out, and a slow sink beside fast ones.

- `fanout_3sinks`: three file sinks (archive, copy-2, copy-3), each `when_full = "block"`;
  every one must hold every event (each file is verified on its own), and the rate is until
  all three are complete.
- `slow_sink`: two file sinks (archive, fast-2) and a `blackhole` sink that takes
  SLOW_DELAY_SECS per batch of SLOW_BATCH_EVENTS, with `when_full = "drop_newest"` and a
  queue of SLOW_QUEUE_EVENTS: the fast sinks must get every event at their usual speed (the
  runner puts their rate beside socket_file's), and the slow one drops what does not fit.
  Its drops are counted in the details (`slow_sink`), not a failure; what fails the run is an
  event the fast sinks lack, or a slow-sink count that does not add up
  (received = sent + dropped = events).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.daemon_config import DaemonConfig, file_sink
from benchmarks.load import split, unix_loads
from benchmarks.scenarios import DaemonRun, ProgressFn, ScenarioResult, _run_daemon

FANOUT_SINKS = ("archive", "copy-2", "copy-3")
FAST_SINKS = ("archive", "fast-2")
SLOW_SINK = "slow"
SLOW_DELAY_SECS = 0.05
SLOW_BATCH_EVENTS = 100
SLOW_QUEUE_EVENTS = 1_000


def run_fanout(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    config = DaemonConfig(extra_sinks=tuple(file_sink(name) for name in FANOUT_SINKS[1:]))
    result = ScenarioResult(
        "fanout_3sinks",
        f"{events:,} events over the Unix socket from 1 load process, each to three file sinks "
        f"({', '.join(FANOUT_SINKS)}; fsync={config.sink_fsync}, when_full = block); every "
        "file must hold every event, and the rate is until all three do",
        events,
    )
    return _run_daemon(
        result,
        config,
        folder=folder,
        make_loads=lambda daemon: unix_loads(daemon.socket_path, split(events, 1)),
        source="unix",
        progress=progress,
        outputs=FANOUT_SINKS,
        after=_sink_latencies,
    )


def run_slow_sink(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    slow: dict[str, object] = {
        "name": SLOW_SINK,
        "type": "blackhole",
        "delay_secs": SLOW_DELAY_SECS,
        "when_full": "drop_newest",
        "queue_max_events": SLOW_QUEUE_EVENTS,
        "batch_max_events": SLOW_BATCH_EVENTS,
    }
    config = DaemonConfig(extra_sinks=(file_sink(FAST_SINKS[1]), slow))
    result = ScenarioResult(
        "slow_sink",
        f"{events:,} events over the Unix socket from 1 load process to two file sinks "
        f"({', '.join(FAST_SINKS)}) and a blackhole sink taking {SLOW_DELAY_SECS * 1e3:g} ms "
        f"per batch of {SLOW_BATCH_EVENTS} (queue {SLOW_QUEUE_EVENTS:,} events, when_full = "
        "drop_newest); the file sinks must hold every event, the slow sink's drops are counted",
        events,
    )
    result.details["slow_sink_settings"] = slow
    return _run_daemon(
        result,
        config,
        folder=folder,
        make_loads=lambda daemon: unix_loads(daemon.socket_path, split(events, 1)),
        source="unix",
        progress=progress,
        outputs=FAST_SINKS,
        after=_check_slow,
    )


def _sink_latencies(result: ScenarioResult, run: DaemonRun) -> None:
    """Every sink's own counters and latency from the "stopped" line, in the details."""
    per_sink: dict[str, Any] = {}
    for entry in (run.stopped.stopped or {}).get("sinks", []):
        if isinstance(entry, dict) and entry.get("name") != "dead-letter":
            per_sink[str(entry.get("name"))] = {
                k: entry.get(k)
                for k in ("sent", "dropped", "batches", "latency_p50_secs", "latency_p99_secs")
            }
    result.details["sinks"] = per_sink


def _check_slow(result: ScenarioResult, run: DaemonRun) -> None:
    _sink_latencies(result, run)
    slow = run.stopped.sink(SLOW_SINK)
    if slow is None:
        result.problems.append(f'no "{SLOW_SINK}" sink in the "stopped" log line')
        return
    received = int(slow.get("received") or 0)
    sent = int(slow.get("sent") or 0)
    dropped_by = {str(k): int(v) for k, v in (slow.get("dropped") or {}).items()}
    dropped = sum(dropped_by.values())
    result.details["slow_sink"] = {
        "received": received,
        "sent": sent,
        "dropped": dropped,
        "dropped_by_reason": dropped_by,
        "dropped_fraction": dropped / result.events if result.events else None,
        "batches": slow.get("batches"),
    }
    if received != result.events or sent + dropped != received:
        result.problems.append(
            f"the slow sink's counts do not add up: received {received:,}, sent {sent:,}, "
            f"dropped {dropped:,} of {result.events:,} events"
        )
    result.notes.append(
        f"the slow sink took {sent:,} and dropped {dropped:,} of {result.events:,} events "
        "(drop_newest; counted, not a failure)"
    )
