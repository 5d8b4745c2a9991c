"""The machine's ceiling for a telemetryd on more than one process: two whole daemons at once.

`socket_file_2daemons`: two independent daemons, each with its own socket, load process and
file sink, each given half of the events, released together. Nothing is shared, so no design
that splits telemetryd's work over processes (worker processes accepting on one socket, ingest
workers, an agent beside an aggregator) can do better on this machine than these two do
together: they pay no hand-off at all. The rate is all events over the time until both files
hold their half; the run fails unless every event is in one of the two files exactly once.

What it answers (see the runner's notes): how much a second process gains here over socket_file
(one daemon, same run), and so whether a target that needs more than that gain, such as twice
rsyslog_json (which uses both cores itself), can be met by using the second core.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from benchmarks.daemon_config import DaemonConfig
from benchmarks.load import CHUNK_BYTES, LoadGroup, LoadReport, unix_load
from benchmarks.scenarios import (
    ProgressFn,
    ScenarioResult,
    _check_daemon,
    _finish,
    _load_summary,
    _verify,
    _wait_for_lines,
)
from benchmarks.verify import LineCounter, verify_delivery
from tests.support.daemon_process import DaemonProcess, DaemonResult

NAME = "socket_file_2daemons"
DAEMONS = 2


def run_two_daemons(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        NAME,
        f"{events:,} events, half each into {DAEMONS} independent daemons (own socket, load "
        "process and file sink each) at once: the ceiling of any multi-process telemetryd here",
        events,
        latency_kind="accept to write (daemon histogram), the first daemon's",
    )
    half = events // DAEMONS
    shares = [(i * half, half if i < DAEMONS - 1 else events - i * half) for i in range(DAEMONS)]
    folder.mkdir(parents=True)
    stopped: list[DaemonResult] = []
    reports: list[LoadReport] = []
    with ExitStack() as stack:
        daemons = []
        for i in range(DAEMONS):
            (folder / f"daemon{i}").mkdir()
            daemon = stack.enter_context(DaemonProcess(folder / f"daemon{i}", DaemonConfig()))
            daemons.append(daemon)
        jobs: list[tuple[object, ...]] = [
            (str(d.socket_path), start, count, CHUNK_BYTES)
            for d, (start, count) in zip(daemons, shares, strict=True)
        ]
        loads = stack.enter_context(LoadGroup(unix_load, jobs))
        loads.start()
        counters = [stack.enter_context(LineCounter(d.sink_path("archive"))) for d in daemons]
        cpu_before = [d.cpu_seconds() for d in daemons]
        loads.go()
        finished = _wait_for_lines(
            _Shares(counters, [count for _, count in shares]), events, progress, loads.done
        )
        result.peak_rss_bytes = max(d.peak_rss_bytes() for d in daemons)
        cpu = [d.cpu_seconds() - before for d, before in zip(daemons, cpu_before, strict=True)]
        result.cpu_secs_server = sum(cpu)
        result.details["daemon_cpu_secs"] = cpu
        if finished is None:
            written = sum(c.lines for c in counters)
            result.problems.append(f"the outputs stopped growing at {written:,} of {events:,}")
        reports = loads.reports(timeout_secs=60 if finished is not None else 10)
        stopped = [d.stop_and_report() for d in daemons]
        paths = [d.sink_path("archive") for d in daemons]
    for (_, count), daemon_result in reversed(list(zip(shares, stopped, strict=True))):
        _check_daemon(result, daemon_result, count)  # the first daemon's latency last, kept
    result.details["daemon_max_rss_bytes"] = [s.max_rss_bytes for s in stopped]
    result.cpu_secs_load = sum(r.cpu_secs for r in reports)
    result.details["load"] = _load_summary(reports)
    if finished is not None:
        result.elapsed_secs = finished - min(r.first_byte for r in reports)
    _verify(result, verify_delivery(paths, events))
    return _finish(result)


class _Shares:
    """The records written, each file counted up to its share: the sum reaches all events
    exactly when every file holds its share."""

    def __init__(self, counters: list[LineCounter], shares: list[int]) -> None:
        self.counters = counters
        self.shares = shares

    def poll(self) -> int:
        return sum(min(c.poll(), n) for c, n in zip(self.counters, self.shares, strict=True))
