"""What the sink scenarios (benchmarks/sink_<name>.py) share.

Each measures a backend's own Python client writing the records of events 0 .. n-1 in batches
(`<name>_raw`), then telemetryd with that backend's sink as its only sink, fed over its Unix
socket (`<name>_sink`), into the same backend; what each run stored is then read back, and a
run that loses or duplicates an event is FAILED. Each module keeps what is its own: the
backend's process, the raw client, the counter that follows a run (events in the stream, the
sink's sent counter on /metrics, lines in a file), the read-back and the sink's config keys.
Here:

- `SinkConfig`: a telemetryd whose only sink is a module's table, with the dead-letter sink.
- `run_loads`: releases a load group and waits until a counter reaches every event, or stalls
  (`wait_for_count`); takes the CPU of the processes it is given over that time.
- `measure_sink`: the `<name>_sink` run: telemetryd and its loads through `run_loads`, the
  backend's CPU, the daemon's CPU, peak RSS and latency, its "stopped" line (`check_stopped`).
- `time_client`: a raw client timed by its own report instead, from its first request to the
  answer to its last; `client_report` makes a raw client's report.
- `delivery_of`, `check_delivery`, `finish`, `against_raw`: the read-back's count, the
  result's status, and the sink's rate against its raw client's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from benchmarks.daemon_config import DaemonConfig, toml_table
from benchmarks.daemon_metrics import sink_latency
from benchmarks.events import event_index
from benchmarks.load import LoadError, LoadGroup, LoadReport, max_rss_bytes_self, split, unix_loads
from benchmarks.scenarios import ProgressFn, ScenarioResult
from benchmarks.verify import Delivery
from tests.support.daemon_process import DaemonProcess, DaemonResult, http_port

#: No change of the count for this long ends the wait; a third of it once every load has
#: reported, since then only the sink's batches are left to come.
STALL_SECS = 30.0
#: The sink's target: this share of its raw client's rate.
TARGET_SHARE = 0.8

T = TypeVar("T")


class Counter(Protocol):
    """What follows a run: how many events the backend holds (or the sink has sent)."""

    def poll(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendCpu:
    """The backend's CPU clock, and the `details` key its seconds over a run go to."""

    key: str
    seconds: Callable[[], float]


@dataclass(frozen=True)
class SinkConfig(DaemonConfig):
    """A telemetryd whose only sink is `sink_table()` (blocking when full, batches of
    `batch_max_events`), with the dead-letter file sink: a rejected event is not lost
    silently. With `metrics`, the HTTP API on a free port, for the latency histogram's
    p99.9 on /metrics."""

    def sink_table(self) -> dict[str, object]:
        raise NotImplementedError

    def render(self, folder: Path) -> str:
        server: dict[str, object] = {
            "unix_socket": folder / "run" / "telemetryd.sock",
            "shutdown_timeout_secs": self.shutdown_timeout_secs,
        }
        if self.metrics:
            server["http"] = "127.0.0.1:0"
        sink = self.sink_table() | {
            "batch_max_events": self.batch_max_events,
            "when_full": "block",
        }
        dead_letter = {
            "name": "dead-letter",
            "type": "file",
            "path": folder / "out" / "rejected.jsonl",
            "when_full": "drop_newest",
        }
        return "\n".join(
            [
                toml_table("[server]", server),
                toml_table("[schemas]", {"builtin": True}),
                toml_table("[log]", {"level": "info", "format": "json", "stats_interval_secs": 0}),
                toml_table("[[sinks]]", sink),
                toml_table("[dead_letter]", dead_letter),
            ]
        )


def sink_target(backend: str) -> str:
    return f"the {backend} sink delivers >= {TARGET_SHARE:.0%} of {backend}_raw's rate"


def wait_for_count(
    poll: Callable[[], int],
    expected: int,
    progress: ProgressFn,
    loads_done: Callable[[], bool],
    *,
    poll_secs: float,
) -> float | None:
    """perf_counter() when `poll` counts `expected` events; None if the count stalls first."""
    last_count, last_change = -1, time.monotonic()
    while True:
        count = poll()
        if count >= expected:
            progress(count, expected)
            return time.perf_counter()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
            progress(count, expected)
        elif time.monotonic() - last_change > STALL_SECS or (
            loads_done() and time.monotonic() - last_change > STALL_SECS / 3
        ):
            return None
        time.sleep(poll_secs)


def client_report(
    start: int,
    events: int,
    *,
    bytes_sent: int,
    first: float,
    last: float,
    cpu_secs: float,
    requests: int = 0,
) -> LoadReport:
    """A raw client's report: its last answer came at `last`, which is all it waits for (a
    socket load waits for the daemon to close, and counts what it replied)."""
    return LoadReport(
        start=start,
        events=events,
        bytes_sent=bytes_sent,
        first_byte=first,
        last_byte=last,
        closed=last,
        reply_bytes=0,
        cpu_secs=cpu_secs,
        max_rss_bytes=max_rss_bytes_self(),
        requests=requests,
    )


def load_details(report: LoadReport) -> dict[str, Any]:
    """A report for `details`, without `latencies_ns`: bytes, and empty for these loads."""
    return {k: v for k, v in asdict(report).items() if k != "latencies_ns"}


@dataclass(frozen=True)
class LoadRun:
    written_at: float | None  # perf_counter() when the count reached every event; None: stalled
    reports: list[LoadReport]  # empty when a load failed
    cpu_secs: list[float]  # of each clock given to run_loads, from "go" until written_at


def run_loads(
    result: ScenarioResult,
    loads: LoadGroup,
    poll: Callable[[], int],
    progress: ProgressFn,
    *,
    clocks: Sequence[Callable[[], float]],
    stalled: str,
    poll_secs: float,
) -> LoadRun:
    """Starts `loads`, releases them and waits until `poll` counts every event; records the
    loads' CPU, the time from their first byte and their reports. `stalled` is the problem if
    the count stops short, formatted with `count` and `expected`."""
    events = result.events
    with loads:
        loads.start()
        before = [clock() for clock in clocks]
        loads.go()
        written_at = wait_for_count(poll, events, progress, loads.done, poll_secs=poll_secs)
        cpu_secs = [clock() - at for clock, at in zip(clocks, before, strict=True)]
        if written_at is None:
            result.problems.append(stalled.format(count=poll(), expected=events))
        reports: list[LoadReport] = []
        try:
            # Once every event is counted the loads are done or about to be; after a stall,
            # one that is stuck is not waited for long.
            reports = loads.reports(timeout_secs=60 if written_at is not None else 10)
        except LoadError as e:
            result.problems.append(str(e))
    if reports:
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        if written_at is not None:
            result.elapsed_secs = written_at - min(r.first_byte for r in reports)
        result.details["load"] = [load_details(r) for r in reports]
    return LoadRun(written_at, reports, cpu_secs)


def check_stopped(
    result: ScenarioResult,
    daemon: DaemonResult,
    sink_name: str,
    *,
    process: str = "telemetryd",
    label: str = "the sink",
) -> dict[str, Any] | None:
    """`process` exited cleanly and, by its "stopped" line, its sink `sink_name` (`label` in
    the problems) sent every event and dropped none, and none went to the dead-letter sink.
    Returns the sink's entry of that line."""
    events = result.events
    if daemon.exit_code != 0:
        result.problems.append(f"{process} exited with {daemon.exit_code}")
    entry = daemon.sink(sink_name)
    if entry is None:
        result.problems.append(f'no "{sink_name}" sink in the "stopped" line of {process}')
        return None
    if entry.get("sent") != events:
        result.problems.append(f"{label} sent {entry.get('sent')} of {events}")
    if entry.get("dropped"):
        result.problems.append(f"{label} dropped {entry.get('dropped')}")
    dead = daemon.sink("dead-letter")
    if dead is not None and dead.get("received"):
        result.problems.append(
            f"{dead.get('received')} events went to the dead-letter sink of {process}"
        )
    return entry


def measure_sink(
    result: ScenarioResult,
    folder: Path,
    config: DaemonConfig,
    progress: ProgressFn,
    *,
    sink_name: str,
    counter: Callable[[DaemonProcess], Counter],
    backend: BackendCpu,
    stalled: str,
    poll_secs: float,
    label: str = "the sink",
) -> DaemonResult:
    """telemetryd with `config` in `folder`, fed by one Unix socket load, timed until
    `counter(daemon)` counts every event (see run_loads for `stalled`). Records the daemon's
    CPU (cpu_secs_server) and the backend's, the daemon's peak RSS, the sink's latency (p50
    and p99 from the "stopped" line, p99.9 from /metrics) and its entry of that line
    (details["daemon_sink"], checked by check_stopped); returns the stopped daemon's result."""
    folder.mkdir(parents=True)
    with DaemonProcess(folder, config) as daemon:
        count = counter(daemon)
        try:
            run = run_loads(
                result,
                unix_loads(daemon.socket_path, split(result.events, 1)),
                count.poll,
                progress,
                clocks=(daemon.cpu_seconds, backend.seconds),
                stalled=stalled,
                poll_secs=poll_secs,
            )
        finally:
            count.close()
        result.cpu_secs_server, result.details[backend.key] = run.cpu_secs
        result.peak_rss_bytes = daemon.peak_rss_bytes()
        if run.written_at is not None:
            histogram = sink_latency(http_port(daemon), sink_name, result.events)
            if histogram is not None:
                result.latency_p999_secs = histogram.p999_secs
        stopped = daemon.stop_and_report()
    result.details["daemon_log_problems"] = stopped.error_lines[:10]
    entry = check_stopped(result, stopped, sink_name, label=label)
    if entry is not None:
        result.details["daemon_sink"] = entry
        result.latency_p50_secs = entry.get("latency_p50_secs")
        result.latency_p99_secs = entry.get("latency_p99_secs")
    return stopped


def time_client(
    result: ScenarioResult,
    loads: LoadGroup,
    progress: ProgressFn,
    backend: BackendCpu | None = None,
) -> None:
    """Runs a raw client's one load process, timed by its own report (its first request to
    the answer to its last): its process does the sink's work, so its CPU and peak RSS are
    the "server" figures. With `backend`, the backend's CPU over the run too."""
    events = result.events
    progress(0, events)
    with loads:
        try:
            loads.start()
            backend_before = backend.seconds() if backend is not None else 0.0
            loads.go()
            reports = loads.reports()
            if backend is not None:
                result.details[backend.key] = backend.seconds() - backend_before
        except LoadError as e:
            result.problems.append(str(e))
            reports = []
    if reports:
        report = reports[0]
        result.elapsed_secs = report.last_byte - report.first_byte
        result.cpu_secs_server = report.cpu_secs
        result.peak_rss_bytes = report.max_rss_bytes
        result.details["load"] = load_details(report)
    progress(events, events)


def delivery_of(
    expected: int,
    items: Iterable[T],
    path: Callable[[T], str | None],
    sample: Callable[[T], str] = str,
) -> Delivery:
    """Each of `items` read back from a backend, by its event's `path` (None: not an event
    record), against events 0 .. expected-1: each must be there once. `sample` shows an item
    that is not one of them."""
    delivery = Delivery(expected)
    seen = bytearray(expected)
    for item in items:
        delivery.lines += 1
        found = path(item)
        n = event_index(found) if found is not None else None
        if n is None or n >= expected:
            delivery.foreign += 1
            if len(delivery.samples) < 3:
                delivery.samples.append(sample(item)[:200])
        elif seen[n]:
            delivery.duplicates += 1
        else:
            seen[n] = 1
    delivery.unique = expected - seen.count(0)
    return delivery


def check_delivery(result: ScenarioResult, delivery: Delivery, holder: str, items: str) -> None:
    """Records `delivery`; a problem unless `holder` has every event once (`items`: what it
    holds, for the count of foreign ones)."""
    result.delivery = delivery.as_dict()
    if not delivery.complete:
        result.problems.append(
            f"{holder} holds {delivery.unique:,} of {result.events:,} events "
            f"({delivery.duplicates:,} duplicated, {delivery.foreign:,} foreign {items})"
        )


def finish(result: ScenarioResult) -> ScenarioResult:
    if result.elapsed_secs:
        result.events_per_sec = result.events / result.elapsed_secs
    result.status = "FAILED" if result.problems else "OK"
    return result


def against_raw(raw: ScenarioResult, sink: ScenarioResult) -> list[ScenarioResult]:
    """Both results, the sink's with its rate against the raw client's and its target's."""
    if raw.events_per_sec and sink.events_per_sec:
        sink.target_ratio = sink.events_per_sec / (TARGET_SHARE * raw.events_per_sec)
        sink.details[f"ratio_to_{raw.name}"] = sink.events_per_sec / raw.events_per_sec
    return [raw, sink]
