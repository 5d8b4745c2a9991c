"""The scenarios: each runs in its own temporary folder and returns a ScenarioResult.

A scenario's rate is events / (time from the load's first byte until every record is in the
output file). The output is then decoded record by record: a run that lost, duplicated or
mangled an event is FAILED, however fast it was.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks.baselines import (
    BaselineProcess,
    FloorReport,
    JupyterEventsReport,
    MinimalReport,
    nearest_rank,
    start_floor_server,
    start_jupyter_events,
    start_minimal_server,
)
from benchmarks.daemon_config import DaemonConfig
from benchmarks.daemon_metrics import sink_latency
from benchmarks.emit_load import emit_loads
from benchmarks.events import SMALL, EventShape
from benchmarks.http_load import HttpTarget, http_loads
from benchmarks.load import LoadError, LoadGroup, LoadReport, split, unix_loads
from benchmarks.verify import Delivery, LineCounter, OutputWatch, verify_delivery
from tests.support.daemon_process import DaemonProcess, DaemonResult, http_port
from tests.support.jupyter_server_process import JupyterServerProcess

#: No new record for this long ends the wait: the run is then checked (and fails) as it is.
STALL_SECS = 30.0
#: The same, once every load process has seen the daemon close its connection (so the daemon
#: has read and processed every line; only the sink's batching is left).
STALL_AFTER_LOAD_SECS = 5.0
POLL_SECS = 0.005

#: How often a paced scenario samples the daemon's RSS while it waits.
RSS_SAMPLE_SECS = 0.05

ProgressFn = Callable[[int, int], None]  # (records so far, records expected)


@dataclass
class ScenarioResult:
    name: str
    description: str
    events: int  # events this scenario sent (and must find in its output)
    status: str = "FAILED"
    problems: list[str] = field(default_factory=list)
    elapsed_secs: float | None = None
    events_per_sec: float | None = None
    ratio_to_jupyter_events: float | None = None
    ratio_to_python_minimal: float | None = None  # telemetryd's socket scenarios only
    ratio_to_jupyter_server_post: float | None = None  # the HTTP scenarios
    ratio_to_socket_file: float | None = None  # same run (registry: compared_with)
    #: The issue's target for this scenario, if it has one ("≥ 150,000 events/s"), and the
    #: measured rate over the target's rate (≥ 1: met). Measured, never asserted.
    target: str | None = None
    target_ratio: float | None = None
    # the daemon (or jupyter_events' emitting process, or a baseline's server)
    cpu_secs_server: float | None = None
    cpu_secs_load: float | None = None  # every load process together
    peak_rss_bytes: int | None = None  # of the server process
    latency_p50_secs: float | None = None
    latency_p99_secs: float | None = None
    latency_p999_secs: float | None = None
    latency_kind: str | None = None
    notes: list[str] = field(default_factory=list)
    delivery: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def latency_text(self, *, separator: str, unmeasured: str) -> str:
        """p50/p99/p99.9 in ms, "-" for a quantile not measured (e.g. p99.9 of a sink
        scenario), `unmeasured` when none is."""
        values = (self.latency_p50_secs, self.latency_p99_secs, self.latency_p999_secs)
        if all(v is None for v in values):
            return unmeasured
        return separator.join("-" if v is None else f"{v * 1e3:.3f}" for v in values)


class Polled(Protocol):
    """What _wait_for_lines watches: a count of the records written so far."""

    def poll(self) -> int: ...


def _wait_for_lines(
    counter: Polled,
    expected: int,
    progress: ProgressFn,
    loads_done: Callable[[], bool],
    *,
    poll_secs: float = POLL_SECS,
    on_poll: Callable[[], None] | None = None,
) -> float | None:
    """perf_counter() when the file holds `expected` lines; None if it stops growing first."""
    last_count = -1
    last_change = time.monotonic()
    while True:
        if on_poll is not None:
            on_poll()
        count = counter.poll()
        if count >= expected:
            now = time.perf_counter()
            progress(count, expected)
            return now
        if count != last_count:
            last_count = count
            last_change = time.monotonic()
            progress(count, expected)
        else:
            stalled = time.monotonic() - last_change
            if stalled > STALL_SECS or (stalled > STALL_AFTER_LOAD_SECS and loads_done()):
                return None
        time.sleep(poll_secs)


def _load_summary(reports: list[LoadReport]) -> dict[str, Any]:
    return {
        "processes": len(reports),
        "bytes_sent": sum(r.bytes_sent for r in reports),
        "send_secs": max(r.last_byte for r in reports) - min(r.first_byte for r in reports),
        "reply_bytes": sum(r.reply_bytes for r in reports),
        "max_rss_bytes": max(r.max_rss_bytes for r in reports),
        "per_process": [
            {k: v for k, v in asdict(r).items() if not isinstance(v, bytes)} for r in reports
        ],
    }


def _check_daemon(
    result: ScenarioResult,
    daemon: DaemonResult,
    events: int,
    source: str = "unix",
    sinks: tuple[str, ...] = ("archive",),
) -> None:
    """The daemon exited cleanly, its source received every event and each of `sinks` sent
    every one and dropped none; the first sink's latency is the scenario's."""
    problems = result.problems
    if daemon.exit_code != 0:
        problems.append(f"telemetryd exited with {daemon.exit_code}")
    if daemon.stopped is None:
        problems.append('no "stopped" log line from telemetryd')
        return
    dead = daemon.sink("dead-letter")
    sources = [s for s in daemon.stopped.get("sources") or [] if s.get("name") == source]
    for name in sinks:
        entry = daemon.sink(name)
        if entry is None:
            problems.append(f'no "{name}" sink in the "stopped" log line')
            continue
        if entry.get("sent") != events:
            problems.append(f"{name} sink sent {entry.get('sent')} of {events}")
        if entry.get("dropped"):
            problems.append(f"{name} sink dropped {entry.get('dropped')}")
        if name == sinks[0]:
            result.latency_p50_secs = entry.get("latency_p50_secs")
            result.latency_p99_secs = entry.get("latency_p99_secs")
            result.latency_kind = "accept to write (daemon histogram)"
    if dead is not None and dead.get("received"):
        problems.append(f"{dead.get('received')} events went to the dead-letter sink")
    received = sources[0].get("received") if sources else None
    if received != events:
        problems.append(f"the {source} source received {received} of {events}")


def run_socket_file(
    name: str,
    events: int,
    clients: int,
    folder: Path,
    progress: ProgressFn,
    *,
    config: DaemonConfig | None = None,
    shape: EventShape = SMALL,
    after: Callable[[ScenarioResult, DaemonRun], None] | None = None,
) -> ScenarioResult:
    config = config or DaemonConfig()
    buffer = (
        f", through a disk buffer (buffer_fsync={config.buffer_fsync})"
        if config.buffer == "disk"
        else ""
    )
    what = "events" if shape == SMALL else shape.describe()
    result = ScenarioResult(
        name,
        f"{events:,} {what} over the Unix socket (plain mode) from {clients} load "
        f"process{'es' if clients > 1 else ''} into the file sink (fsync={config.sink_fsync})"
        f"{buffer}",
        events,
        latency_kind="accept to write (daemon histogram)",
    )
    return _run_daemon(
        result,
        config,
        folder=folder,
        make_loads=lambda daemon: unix_loads(
            daemon.socket_path, split(events, clients), shape=shape
        ),
        source="unix",
        progress=progress,
        after=after,
    )


def run_client_emit(
    name: str, events: int, kind: str, folder: Path, progress: ProgressFn, *, requested: int
) -> ScenarioResult:
    """The client library's cost in the caller's thread (benchmarks.emit_load), with the
    daemon delivering every event into the file sink."""
    what = {
        "client": "telemetryd.client.Client.emit calls",
        "jupyter_events_handler": "jupyter_events EventLogger.emit calls with a "
        "TelemetrydHandler as the only handler",
        "jupyter_server_fast": "jupyter_events EventLogger.emit calls with the Jupyter Server "
        "extension's fast path (validate_in_process = False)",
    }[kind]
    result = ScenarioResult(
        name,
        f"{events:,} {what} in one process, acknowledged over the Unix socket, into the file sink",
        events,
    )
    if events < requested:
        result.notes.append(f"capped at {events:,} of the {requested:,} events (as jupyter_events)")
    return _run_daemon(
        result,
        DaemonConfig(),
        folder=folder,
        make_loads=lambda daemon: emit_loads(daemon.socket_path, events, kind),
        source="unix",
        progress=progress,
    )


_EMIT_LATENCY = "per emit call, in the caller's thread"


def _emit_latencies(result: ScenarioResult, reports: list[LoadReport]) -> None:
    """The emit calls' times as the scenario's latency (the daemon's histogram to details)."""
    latencies = array("q")
    for r in reports:
        latencies.frombytes(r.latencies_ns)
    ordered = sorted(latencies)
    _daemon_latency_to_details(result)
    result.latency_kind = _EMIT_LATENCY
    result.latency_p50_secs = nearest_rank(ordered, 0.5) / 1e9
    result.latency_p99_secs = nearest_rank(ordered, 0.99) / 1e9
    result.latency_p999_secs = nearest_rank(ordered, 0.999) / 1e9
    result.details["emit_mean_secs"] = sum(ordered) / max(1, len(ordered)) / 1e9
    result.details["emit_max_secs"] = (ordered[-1] / 1e9) if ordered else None
    result.details["flush_secs"] = max(r.closed for r in reports) - max(
        r.last_byte for r in reports
    )


@dataclass(frozen=True)
class HttpLoadShape:
    """How many load processes, and keep-alive connections in each, drive an HTTP scenario."""

    processes: int
    connections: int  # per process

    def describe(self) -> str:
        total = self.processes * self.connections
        return (
            f"{self.processes} load process{'es' if self.processes > 1 else ''} x "
            f"{self.connections} keep-alive connection{'s' if self.connections > 1 else ''} "
            f"({total} concurrent request{'s' if total > 1 else ''}, no pipelining)"
        )


#: The token of the HTTP scenarios: telemetryd runs with `[auth] required = true`, Jupyter
#: Server with its own token, and both check the same `Authorization: token ...` header.
HTTP_TOKEN = "telemetryd-benchmark-" + "0" * 24
#: Its stored form in telemetryd's [[auth.tokens]] (as `telemetryd hash-token` prints it).
HTTP_TOKEN_HASH = "sha256:" + hashlib.sha256(HTTP_TOKEN.encode()).hexdigest()


def run_http(
    name: str,
    events: int,
    *,
    batch_events: int,
    shape: HttpLoadShape,
    folder: Path,
    progress: ProgressFn,
) -> ScenarioResult:
    """POST /api/events (batch_events == 0) or NDJSON batches to POST /api/events/batch."""
    config = DaemonConfig(http="127.0.0.1:0", token_hash=HTTP_TOKEN_HASH)
    what = (
        f"NDJSON batches of {batch_events:,} events to POST /api/events/batch"
        if batch_events
        else "single-event POST /api/events requests"
    )
    result = ScenarioResult(
        name,
        f"{events:,} events as {what} from {shape.describe()}, with a token "
        f"([auth] required), into the file sink (fsync={config.sink_fsync})",
        events,
        latency_kind=_HTTP_LATENCY,
    )
    result.details["http_load"] = asdict(shape) | {"batch_events": batch_events}

    def loads(daemon: DaemonProcess) -> LoadGroup:
        target = HttpTarget(
            "127.0.0.1",
            http_port(daemon),
            path="/api/events/batch" if batch_events else "/api/events",
            batch_events=batch_events,
            token=HTTP_TOKEN,
            ok_status=200 if batch_events else 204,
        )
        return http_loads(target, split(events, shape.processes), shape.connections)

    return _run_daemon(
        result, config, folder=folder, make_loads=loads, source="http", progress=progress
    )


_HTTP_LATENCY = "request round trip (load processes, send to whole response)"


def _daemon_latency_to_details(result: ScenarioResult) -> None:
    """Moves the daemon's histogram quantiles to the details, where a scenario reports a
    latency of its own (the client's round trip, the emit call)."""
    result.details["daemon_latency_p50_secs"] = result.latency_p50_secs
    result.details["daemon_latency_p99_secs"] = result.latency_p99_secs
    result.details["daemon_latency_p999_secs"] = result.latency_p999_secs
    result.latency_p999_secs = None


@dataclass
class DaemonRun:
    """What `_run_daemon` hands its `after` hook: for checks and figures of its own."""

    daemon: DaemonProcess
    stopped: DaemonResult
    reports: list[LoadReport]
    watch: OutputWatch
    written_at: float | None
    go_at: float  # perf_counter() just before "go"
    rss_samples: list[tuple[float, int]]  # (secs since go, the daemon's VmRSS)


def _run_daemon(
    result: ScenarioResult,
    config: DaemonConfig,
    *,
    folder: Path,
    make_loads: Callable[[DaemonProcess], LoadGroup],
    source: str,
    progress: ProgressFn,
    outputs: tuple[str, ...] = ("archive",),
    poll_secs: float = POLL_SECS,
    sample_rss: bool = False,
    after: Callable[[ScenarioResult, DaemonRun], None] | None = None,
) -> ScenarioResult:
    """Starts telemetryd, releases the loads, waits until the file sink holds every event,
    stops the daemon and checks its counters, the loads' answers and the output.

    outputs: the file sinks that must each hold every event (the rate is until all do);
    poll_secs: how often the output is read (its records' arrival times, OutputWatch.marks,
    are that precise); sample_rss: the daemon's RSS every RSS_SAMPLE_SECS in the details;
    after: more checks and figures, given everything the run saw (DaemonRun)."""
    events = result.events
    result.details["daemon_config"] = asdict(config)
    folder.mkdir(parents=True)
    reports: list[LoadReport] = []
    stopped: DaemonResult | None = None
    rss_samples: list[tuple[float, int]] = []
    with DaemonProcess(folder, config) as daemon:
        paths = [daemon.sink_path(name) for name in outputs]
        with make_loads(daemon) as loads:
            loads.start()
            cpu_before = daemon.cpu_seconds()
            with OutputWatch(paths) as watch:
                go_at = time.perf_counter()
                next_sample = [go_at]

                def sample() -> None:
                    now = time.perf_counter()
                    if now >= next_sample[0]:
                        rss_samples.append((now - go_at, daemon.rss_bytes()))
                        next_sample[0] = now + RSS_SAMPLE_SECS

                loads.go()
                written_at = _wait_for_lines(
                    watch,
                    events,
                    progress,
                    loads.done,
                    poll_secs=poll_secs,
                    on_poll=sample if sample_rss else None,
                )
            result.peak_rss_bytes = daemon.peak_rss_bytes()
            cpu_at_written = daemon.cpu_seconds()
            if written_at is None:
                result.problems.append(
                    f"the output stopped growing at {watch.lines:,} of {events:,} records"
                )
                stopped = daemon.stop_and_report()
            elif config.metrics or config.http:
                histogram = sink_latency(http_port(daemon), outputs[0], events)
                if histogram is not None:
                    result.latency_p999_secs = histogram.p999_secs
                    result.details["daemon_histogram"] = asdict(histogram)
            try:
                reports = loads.reports(timeout_secs=60 if written_at is not None else 10)
            except LoadError as e:
                result.problems.append(str(e))
            if stopped is None:
                stopped = daemon.stop_and_report()
    # From "go" until every record was written (or the wait gave up); the whole life of the
    # process (start-up and shutdown included) is in the details.
    result.cpu_secs_server = cpu_at_written - cpu_before
    result.details["daemon_stopped"] = stopped.stopped
    result.details["daemon_ready_secs"] = daemon.ready_secs
    result.details["daemon_cpu_secs_before_go"] = cpu_before
    result.details["daemon_cpu_secs_total"] = stopped.cpu_secs_total
    result.details["daemon_max_rss_bytes"] = stopped.max_rss_bytes
    result.details["daemon_log_problems"] = stopped.error_lines[:20]
    if sample_rss:
        result.details["daemon_rss_samples"] = [(round(t, 3), b) for t, b in rss_samples]
    _check_daemon(result, stopped, events, source, outputs)
    if reports:
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        result.details["load"] = _load_summary(reports)
        if written_at is not None:
            result.elapsed_secs = written_at - min(r.first_byte for r in reports)
        if source == "http":
            _check_http_loads(result, reports)
        elif any(r.latencies_ns for r in reports):
            _emit_latencies(result, reports)
    _verify(result, verify_delivery([paths[0]], events))
    if len(paths) > 1:
        deliveries = {
            name: verify_delivery([p], events) for name, p in zip(outputs, paths, strict=True)
        }
        result.details["deliveries"] = {name: d.as_dict() for name, d in deliveries.items()}
        for name, d in deliveries.items():
            if not d.complete and name != outputs[0]:
                result.problems.append(f"{name}: {_delivery_problem(d.as_dict())}")
    if after is not None:
        after(result, DaemonRun(daemon, stopped, reports, watch, written_at, go_at, rss_samples))
    return _finish(result)


def _check_http_loads(result: ScenarioResult, reports: list[LoadReport]) -> None:
    """Every request answered with its success status and every event accepted; the client's
    round-trip latency as the scenario's latency (the daemon's histogram goes to details)."""
    summary = result.details["load"]
    statuses: Counter[int] = Counter()
    for r in reports:
        statuses.update(r.statuses)
    requests = sum(r.requests for r in reports)
    accepted = sum(r.accepted for r in reports)
    if accepted != result.events:
        result.problems.append(
            f"the server accepted {accepted:,} of {result.events:,} events; responses by "
            f"status: {dict(statuses)}; samples: {[s for r in reports for s in r.error_samples]}"
        )
    first = min(r.first_byte for r in reports)
    last = max(r.closed for r in reports)
    summary |= {
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted": accepted,
        "responses_secs": last - first,
        "requests_per_sec": requests / (last - first) if last > first else None,
    }
    latencies = array("q")
    for r in reports:
        latencies.frombytes(r.latencies_ns)
    ordered = sorted(latencies)
    if result.latency_p50_secs is not None:  # telemetryd's accept-to-write histogram
        _daemon_latency_to_details(result)
    result.latency_kind = _HTTP_LATENCY
    result.latency_p50_secs = nearest_rank(ordered, 0.5) / 1e9
    result.latency_p99_secs = nearest_rank(ordered, 0.99) / 1e9
    result.latency_p999_secs = nearest_rank(ordered, 0.999) / 1e9
    summary["latency_mean_secs"] = sum(ordered) / max(1, len(ordered)) / 1e9
    summary["latency_max_secs"] = (ordered[-1] / 1e9) if ordered else None


def run_jupyter_server_post(
    events: int, shape: HttpLoadShape, folder: Path, progress: ProgressFn
) -> ScenarioResult:
    """The baseline of http_single: the same requests to a live Jupyter Server."""
    result = ScenarioResult(
        "jupyter_server_post",
        f"the same {events:,} single-event POST /api/events requests from the same "
        f"{shape.describe()} to a live Jupyter Server (its token; its EventLogger validating "
        "and writing each event through a logging.FileHandler)",
        events,
        latency_kind=_HTTP_LATENCY,
    )
    result.details["http_load"] = asdict(shape) | {"batch_events": 0}
    folder.mkdir(parents=True)
    reports: list[LoadReport] = []
    with JupyterServerProcess(folder) as server:
        result.details["jupyter_server_ready_secs"] = server.ready_secs
        result.details["jupyter_server_extensions"] = server.extensions()
        target = HttpTarget("127.0.0.1", server.port, token=server.token)
        with http_loads(target, split(events, shape.processes), shape.connections) as loads:
            loads.start()
            cpu_before = server.cpu_seconds()
            with LineCounter(server.output_path) as counter:
                loads.go()
                written_at = _wait_for_lines(counter, events, progress, loads.done)
            result.peak_rss_bytes = server.peak_rss_bytes()
            result.cpu_secs_server = server.cpu_seconds() - cpu_before
            if written_at is None:
                result.problems.append(
                    f"the output stopped growing at {counter.lines:,} of {events:,} records"
                )
            try:
                reports = loads.reports(timeout_secs=60 if written_at is not None else 10)
            except LoadError as e:
                result.problems.append(str(e))
        stopped = server.stop()
    result.details["jupyter_server_stopped"] = stopped
    if stopped.get("exit_code") != 0:
        result.problems.append(f"jupyter_server exited with {stopped.get('exit_code')}")
    if reports:
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        result.details["load"] = _load_summary(reports)
        if written_at is not None:
            result.elapsed_secs = written_at - min(r.first_byte for r in reports)
        _check_http_loads(result, reports)
    _verify(result, verify_delivery([server.output_path], events))
    return _finish(result)


def run_jupyter_events(
    events: int,
    requested: int,
    folder: Path,
    progress: ProgressFn,
    *,
    name: str = "jupyter_events",
    schema: str = "small",
) -> ScenarioResult:
    """schema "large": the large schema's events (jupyter_events_large_schema)."""
    what = " of the large schema (benchmarks/schemas/large)" if schema == "large" else ""
    result = ScenarioResult(
        name,
        f"{events:,} EventLogger.emit calls{what} into a logging.FileHandler, in one process",
        events,
        latency_kind="per emit call",
    )
    if events < requested:
        speed = "a few thousand" if schema == "large" else "~10k"
        result.notes.append(
            f"capped at {events:,} of the {requested:,} events (it runs at {speed} events/s)"
        )
    folder.mkdir(parents=True)
    out = folder / "events.jsonl"
    with start_jupyter_events(events, out, schema) as proc, LineCounter(out) as counter:
        proc.receive("ready", timeout_secs=120)
        proc.go()
        while not proc.poll():
            progress(counter.poll(), events)
            time.sleep(0.1)
        report = proc.receive("done", timeout_secs=0)
    assert isinstance(report, JupyterEventsReport)
    result.elapsed_secs = report.elapsed_secs
    result.cpu_secs_server = report.cpu_secs
    result.peak_rss_bytes = report.max_rss_bytes
    result.latency_p50_secs = report.emit_p50_secs
    result.latency_p99_secs = report.emit_p99_secs
    result.latency_p999_secs = report.emit_p999_secs
    result.details["jupyter_events"] = asdict(report)
    delivery = verify_delivery([out], events)
    result.delivery = delivery.as_dict()
    if not delivery.complete:
        result.problems.append(_delivery_problem(delivery.as_dict()))
    return _finish(result)


def run_python_minimal(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "python_minimal",
        f"the same {events:,} events from the same load process over a Unix socket into a file "
        "through a minimal single-process Python server (blocking sockets, 256 KiB reads, "
        "msgspec decode + fastjsonschema + record + msgspec encode per line, one write per "
        "read): the straightforward Python pipeline",
        events,
    )
    out = folder / "events.jsonl"
    report = _drive_baseline(
        result,
        folder=folder,
        socket_name="minimal.sock",
        out=out,
        start=start_minimal_server,
        report_type=MinimalReport,
        progress=progress,
    )
    assert isinstance(report, MinimalReport)
    if report.rejected:
        result.problems.append(f"the minimal server rejected {report.rejected:,} lines")
    _verify(result, verify_delivery([out], events))
    return _finish(result)


def run_socket_floor(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "socket_floor",
        f"the same {events:,} lines copied from a Unix socket into a file by a minimal "
        "Python server (recv_into + write, no parsing): the ceiling",
        events,
    )
    out = folder / "copy.jsonl"
    _drive_baseline(
        result,
        folder=folder,
        socket_name="floor.sock",
        out=out,
        start=start_floor_server,
        report_type=FloorReport,
        progress=progress,
    )
    _verify(result, verify_delivery([out], events, nested=True))
    return _finish(result)


def _drive_baseline(
    result: ScenarioResult,
    *,
    folder: Path,
    socket_name: str,
    out: Path,
    start: Callable[[Path, Path], BaselineProcess],
    report_type: type[MinimalReport] | type[FloorReport],
    progress: ProgressFn,
) -> MinimalReport | FloorReport:
    """Runs a baseline server fed by one load process, like socket_file, and records its
    time, CPU and memory in `result`."""
    folder.mkdir(parents=True)
    sock = folder / socket_name
    events = result.events
    with start(sock, out) as server:
        server.receive("ready", timeout_secs=60)
        with unix_loads(sock, split(events, 1)) as loads, LineCounter(out) as counter:
            loads.start()
            loads.go()
            while not server.poll():
                progress(counter.poll(), events)
                time.sleep(0.05)
            report = server.receive("done", timeout_secs=0)
            reports = loads.reports(timeout_secs=60)
    assert isinstance(report, report_type)
    result.elapsed_secs = report.last_write - min(r.first_byte for r in reports)
    result.cpu_secs_server = report.cpu_secs
    result.cpu_secs_load = sum(r.cpu_secs for r in reports)
    result.peak_rss_bytes = report.max_rss_bytes
    result.details["server"] = asdict(report)
    result.details["load"] = _load_summary(reports)
    return report


def _verify(result: ScenarioResult, delivery: Delivery) -> None:
    result.delivery = delivery.as_dict()
    if not delivery.complete:
        result.problems.append(_delivery_problem(delivery.as_dict()))


def _delivery_problem(d: dict[str, Any]) -> str:
    return (
        f"output holds {d['unique']:,} of {d['expected']:,} events "
        f"({d['missing']:,} missing, {d['duplicates']:,} duplicated, {d['foreign']:,} foreign "
        f"lines{', torn last line' if d['torn_tail'] else ''})"
    )


def _finish(result: ScenarioResult) -> ScenarioResult:
    if result.elapsed_secs and result.elapsed_secs > 0:
        result.events_per_sec = result.events / result.elapsed_secs
    result.status = "FAILED" if result.problems else "OK"
    return result


def failed(name: str, events: int, error: BaseException) -> ScenarioResult:
    """The result of a scenario that raised instead of finishing."""
    result = ScenarioResult(name, "the scenario crashed", events)
    result.problems.append(f"{type(error).__name__}: {error}")
    result.details["traceback"] = traceback.format_exception(error)
    return result
