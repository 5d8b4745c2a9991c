"""Latency against load, and overload: a paced socket load (benchmarks.paced_load) at
fractions and multiples of the daemon's maximum rate, measured in the same run.

- `latency_at_load` -> latency_25pct, latency_50pct, latency_75pct: the paced load at 25, 50
  and 75% of socket_file's events/s (or of a short probe of the same kind, when socket_file
  is not in the run); the daemon keeps up, so these show what an event waits at that load.
- `overload` -> overload_2x, overload_5x, overload_10x: the same open-loop load offered at 2,
  5 and 10 times that rate. The daemon cannot drain that fast; its queue fills, it stops
  reading the socket (`when_full = "block"`) and the load's sends block: back-pressure. They
  report the offered rate against the achieved one (the load's send rate, and the delivered
  rate, which is the scenario's events/s), how far the load fell behind its schedule, and the
  daemon's peak RSS (bounded by its queue limits, not by the offered load), with its RSS
  sampled every 50 ms in the details.

How latency is measured (p50/p99/p99.9 of every event): from the perf_counter() just before
the load's `sendall` of the piece (at most 32 KiB of whole lines, benchmarks.paced_load) that
held the event, to the perf_counter() at which the harness, reading the file sink's file every
millisecond (OutputWatch), first saw the event's line. Both are CLOCK_MONOTONIC on the same
machine. The file is then decoded in order to know which event each line is, so nothing is
assumed about order. This is send-to-visible, a little more than the daemon's accept-to-write:
it includes the socket transit and the daemon's read, and it is late by up to one read of the
file (the mean time between reads is in the details as `latency_resolution_secs`, about
1-1.2 ms). The daemon's own histogram (accept to write, p99.9 from /metrics) is in the details
for comparison; its resolution is its bucket widths (about three a decade).

Under overload the time a piece waits in a blocked `sendall` is part of its events' latency;
the time before that (an event due at its schedule but not yet sent because the load was
blocked) is not: that is the schedule lag, reported apart (so these latencies are what an
event that got in waited, not the growing backlog of an open-loop client).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path

from benchmarks.baselines import nearest_rank
from benchmarks.daemon_config import DaemonConfig
from benchmarks.paced_load import PIECE_BYTES, TICK_SECS, PacedReport, paced_loads
from benchmarks.scenarios import (
    DaemonRun,
    ProgressFn,
    ScenarioResult,
    _daemon_latency_to_details,
    _run_daemon,
    failed,
    run_socket_file,
)
from benchmarks.verify import OutputWatch, record_indices

FRACTIONS = (0.25, 0.5, 0.75)
FACTORS = (2, 5, 10)
#: The output is read this often while a paced load runs: the latencies' resolution.
PACED_POLL_SECS = 0.001
#: A paced run sends for at most this long (fewer events than the run's at low rates).
PACED_MAX_SECS = 20.0
#: Events of the probe that measures the maximum rate when socket_file is not in the run.
PROBE_EVENTS = 200_000
LATENCY_KIND = "send to visible in the file sink's file (paced load -> reader of the file)"


def latency_name(fraction: float) -> str:
    return f"latency_{round(fraction * 100)}pct"


def overload_name(factor: float) -> str:
    return f"overload_{factor:g}x"


LATENCY_RESULTS = tuple(latency_name(f) for f in FRACTIONS)
OVERLOAD_RESULTS = tuple(overload_name(f) for f in FACTORS)


def max_rate(
    results: list[ScenarioResult], events: int, workdir: Path, progress: ProgressFn
) -> tuple[float | None, str]:
    """socket_file's events/s from this run, or a probe's: (rate, where it came from)."""
    for r in results:
        if r.name == "socket_file" and r.ok and r.events_per_sec:
            return r.events_per_sec, f"socket_file in this run ({r.events:,} events)"
    probe_events = min(events, PROBE_EVENTS)
    folder = workdir / "max_rate_probe"
    n = 0
    while folder.exists():
        n += 1
        folder = workdir / f"max_rate_probe_{n}"
    probe = run_socket_file("max_rate_probe", probe_events, 1, folder, progress)
    if not probe.ok or not probe.events_per_sec:
        return None, f"the probe failed: {probe.problems}"
    return probe.events_per_sec, f"a socket_file probe of {probe_events:,} events"


def run_latency_at_load(
    events: int, rate: float | None, source: str, workdir: Path, progress: ProgressFn
) -> list[ScenarioResult]:
    def describe(fraction: float, offered: float, rate: float) -> tuple[int, str]:
        count = max(1, min(events, int(offered * PACED_MAX_SECS)))
        return count, (
            f"{count:,} events paced at {offered:,.0f} events/s ({fraction:.0%} of "
            f"{rate:,.0f} events/s, the maximum measured by {source}) in {TICK_SECS * 1e3:g} ms "
            "ticks, one load process over the Unix socket, into the file sink"
        )

    return _paced_runs(
        events,
        [(latency_name(f), f) for f in FRACTIONS],
        describe,
        rate=rate,
        source=source,
        workdir=workdir,
        progress=progress,
    )


def run_overload(
    events: int, rate: float | None, source: str, workdir: Path, progress: ProgressFn
) -> list[ScenarioResult]:
    def describe(factor: float, offered: float, rate: float) -> tuple[int, str]:
        return events, (
            f"{events:,} events offered open-loop at {offered:,.0f} events/s ({factor:g}x the "
            f"{rate:,.0f} events/s measured by {source}) in {TICK_SECS * 1e3:g} ms ticks, one "
            "load process over the Unix socket, into the file sink (when_full = block)"
        )

    return _paced_runs(
        events,
        [(overload_name(f), f) for f in FACTORS],
        describe,
        rate=rate,
        source=source,
        workdir=workdir,
        progress=progress,
    )


def _paced_runs(
    events: int,
    points: list[tuple[str, float]],
    describe: Callable[[float, float, float], tuple[int, str]],
    *,
    rate: float | None,
    source: str,
    workdir: Path,
    progress: ProgressFn,
) -> list[ScenarioResult]:
    """One paced run per (name, load) point, at `load` times the maximum `rate`; `describe`
    gives each run's event count and description from (load, offered rate, rate)."""
    out = []
    for name, load in points:
        if rate is None:
            out.append(failed(name, events, RuntimeError(f"no maximum rate: {source}")))
            continue
        offered = rate * load
        count, description = describe(load, offered, rate)
        result = ScenarioResult(name, description, count, latency_kind=LATENCY_KIND)
        out.append(
            _paced(
                result,
                offered=offered,
                rate=rate,
                source=source,
                load=load,
                folder=workdir / name,
                progress=progress,
            )
        )
    return out


def _paced(
    result: ScenarioResult,
    *,
    offered: float,
    rate: float,
    source: str,
    load: float,
    folder: Path,
    progress: ProgressFn,
) -> ScenarioResult:
    result.details["max_rate"] = {"events_per_sec": rate, "measured_by": source}
    result.details["offered_fraction_of_max"] = load
    result.details["offered_events_per_sec"] = offered
    try:
        return _run_daemon(
            result,
            DaemonConfig(),
            folder=folder,
            make_loads=lambda daemon: paced_loads(daemon.socket_path, result.events, offered),
            source="unix",
            progress=progress,
            poll_secs=PACED_POLL_SECS,
            sample_rss=True,
            after=_analyse,
        )
    except Exception as e:
        return failed(result.name, result.events, e)


def _analyse(result: ScenarioResult, run: DaemonRun) -> None:
    report = next((r for r in run.reports if isinstance(r, PacedReport)), None)
    if report is None or run.written_at is None:
        return  # the run failed: its problems say why
    latencies = send_to_visible(report, run.watch, run.daemon.output_path)
    _daemon_latency_to_details(result)
    result.latency_kind = LATENCY_KIND
    d = result.details
    if len(latencies) != result.events:
        result.problems.append(
            f"timed {len(latencies):,} of {result.events:,} records (the rest were not seen "
            "while the run was watched, or are not the benchmark's)"
        )
    ordered = sorted(latencies)
    if ordered:
        result.latency_p50_secs = nearest_rank(ordered, 0.5)
        result.latency_p99_secs = nearest_rank(ordered, 0.99)
        result.latency_p999_secs = nearest_rank(ordered, 0.999)
        d["latency_max_secs"] = ordered[-1]
        d["latency_mean_secs"] = sum(ordered) / len(ordered)
    d["latency_resolution_secs"] = run.watch.poll_period_secs
    d["latency_method"] = (
        f"load's perf_counter() before the sendall of the event's piece (<= {PIECE_BYTES:,} "
        "bytes) to the harness's first read of the file that held its line"
    )
    send_secs = report.last_byte - report.first_byte
    d["achieved_send_events_per_sec"] = result.events / send_secs if send_secs > 0 else None
    d["schedule_secs"] = result.events / report.rate
    d["max_lag_secs"] = report.max_lag_secs
    d["end_lag_secs"] = report.end_lag_secs
    d["pieces"] = len(report.piece_first) // 8
    d["daemon_peak_rss_bytes"] = result.peak_rss_bytes
    achieved = d["achieved_send_events_per_sec"]
    if report.rate > d["max_rate"]["events_per_sec"] and achieved:
        rss = f"{result.peak_rss_bytes / (1 << 20):.0f} MiB" if result.peak_rss_bytes else "?"
        result.notes.append(
            f"offered {report.rate:,.0f} events/s, sent {achieved:,.0f} "
            f"({achieved / report.rate:.0%}): back-pressure held the load to the daemon's rate, "
            f"{report.end_lag_secs:.2f} s behind its schedule at the end; daemon peak RSS {rss}"
        )


def send_to_visible(report: PacedReport, watch: OutputWatch, path: Path) -> array[float]:
    """Each record's latency (seconds): when the reader first saw its line, less when the load
    began sending the piece that held its event. Lines seen after the watch ended, and lines
    that are not the benchmark's, get none."""
    firsts = array("q")
    firsts.frombytes(report.piece_first)
    sent = array("d")
    sent.frombytes(report.piece_sent)
    mark_lines, mark_times = watch.mark_lines, watch.mark_times
    out = array("d")
    marks = len(mark_lines)
    j = 0
    for i, n in enumerate(record_indices(path)):
        while j < marks and mark_lines[j] <= i:
            j += 1
        if j == marks:
            break
        if n < 0 or n < firsts[0]:
            continue
        out.append(mark_times[j] - sent[bisect_right(firsts, n) - 1])
    return out
