"""Orchestration: run the chosen scenarios, print the table, write the JSON report."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from benchmarks.daemon_config import DaemonConfig
from benchmarks.event_size import (
    QUICK_SIZE_BYTES_CAP,
    SIZE_BYTES_CAP,
    SIZE_RESULTS,
    run_event_sizes,
)
from benchmarks.events import REPO_ROOT
from benchmarks.fanout import run_fanout, run_slow_sink
from benchmarks.figures import write_figures
from benchmarks.large_schema import (
    JUPYTER_EVENTS_LARGE_CAP,
    LARGE_SCHEMA_CAP,
    QUICK_JUPYTER_EVENTS_LARGE_CAP,
    run_jupyter_events_large,
    run_socket_file_large,
)
from benchmarks.latency_load import (
    LATENCY_RESULTS,
    OVERLOAD_RESULTS,
    max_rate,
    run_latency_at_load,
    run_overload,
)
from benchmarks.rsyslog import run_rsyslog
from benchmarks.scenarios import (
    HttpLoadShape,
    ProgressFn,
    ScenarioResult,
    failed,
    run_client_emit,
    run_http,
    run_jupyter_events,
    run_jupyter_server_post,
    run_python_minimal,
    run_socket_file,
    run_socket_floor,
)
from benchmarks.two_daemons import run_two_daemons

SCENARIOS = (
    "socket_file",
    "socket_file_4clients",
    "socket_file_16clients",
    "socket_file_disk",
    "socket_file_2daemons",
    "fanout_3sinks",
    "slow_sink",
    "socket_file_large_schema",
    "latency_at_load",
    "overload",
    "event_size",
    "python_minimal",
    "jupyter_events",
    "jupyter_events_large_schema",
    "socket_floor",
    "rsyslog_json",
    "http_batch",
    "http_single",
    "jupyter_server_post",
    "client_emit",
    "jupyter_events_handler",
    "jupyter_server_fast",
    *(f"sink_{name}" for name in ("nats", "redis", "postgres", "http")),
)
#: Each sink scenario (benchmarks/sink_<name>.py) measures the backend's own Python client
#: doing batched writes of the same records (<name>_raw), then the daemon's sink (<name>_sink).
SINK_SCENARIOS = {
    f"sink_{n}": (f"{n}_raw", f"{n}_sink") for n in ("nats", "redis", "postgres", "http")
}
#: Scenarios of several runs (benchmarks.latency_load, benchmarks.event_size), one result each.
MULTI_SCENARIOS = {
    "latency_at_load": LATENCY_RESULTS,
    "overload": OVERLOAD_RESULTS,
    "event_size": SIZE_RESULTS,
} | SINK_SCENARIOS
#: The results each scenario reports, by name.
RESULTS = {name: MULTI_SCENARIOS.get(name, (name,)) for name in SCENARIOS}
#: The client library's emit cost, compared per call with jupyter_events' EventLogger.emit.
EMIT_SCENARIOS = ("client_emit", "jupyter_events_handler", "jupyter_server_fast")
TARGET_EMIT_P50_SECS = 2e-6
#: The scenarios that measure telemetryd's socket (and get a ratio to python_minimal).
TELEMETRYD_SCENARIOS = (
    "socket_file",
    "socket_file_4clients",
    "socket_file_16clients",
    "socket_file_disk",
)
#: Results whose events/s is also given over socket_file's (in the same run).
SOCKET_FILE_RELATIVE = (
    "socket_file_4clients",
    "socket_file_2daemons",
    "socket_file_16clients",
    "socket_file_disk",
    "fanout_3sinks",
    "slow_sink",
    "socket_file_large_schema",
    *SIZE_RESULTS,
)
PACED_RESULTS = LATENCY_RESULTS + OVERLOAD_RESULTS
#: Results compared with jupyter_events_large_schema instead of jupyter_events (like for like).
LARGE_SCHEMA_RESULTS = ("socket_file_large_schema", "jupyter_events_large_schema")
#: telemetryd's HTTP scenarios (and get a ratio to jupyter_server_post).
HTTP_SCENARIOS = ("http_batch", "http_single")
DEFAULT_EVENTS = 1_000_000
QUICK_EVENTS = 20_000
JUPYTER_EVENTS_CAP = 200_000
#: Events of http_single and jupyter_server_post (one request each; Jupyter Server answers
#: some hundreds a second), by default and with --quick.
HTTP_SINGLE_CAP = 30_000
QUICK_HTTP_SINGLE_CAP = 2_000
BATCH_EVENTS = 1_000
#: The issue's targets (measured and reported, never asserted).
TARGET_BATCH_EVENTS_PER_SEC = 150_000
TARGET_SINGLE_X_JUPYTER_SERVER = 10.0
TARGET_X_RSYSLOG = 2.0
#: Load shapes, chosen for telemetryd's highest rate on the 2-core VM. Batches: 4 requests in
#: flight keep the daemon busy while a response travels (1 connection: ~65-150k, 4: ~130-155k).
#: Single events: 1 to 64 connections measured 1.3k-2.9k requests/s, best from 16 to 32 (more
#: requests per event-loop turn); Jupyter Server gets the same load.
BATCH_SHAPE = HttpLoadShape(processes=2, connections=2)
SINGLE_SHAPE = HttpLoadShape(processes=2, connections=16)
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results"
PACKAGES = (
    "telemetryd",
    "msgspec",
    "fastjsonschema",
    "jupyter_events",
    "anyio",
    "uvloop",
    "httptools",
    "jupyter_server",
    "tornado",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark telemetryd against jupyter_events, a minimal Python pipeline and the "
            "machine's floor."
        ),
    )
    parser.add_argument(
        "--events",
        type=int,
        metavar="N",
        help=f"events per scenario (default {DEFAULT_EVENTS:,}; {QUICK_EVENTS:,} with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: few events; checks that every event arrives, never speed",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"run only this scenario (repeatable; default all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="folder for the JSON reports, the PNG plot and SUMMARY.md (default: "
        "benchmarks/results/; a --quick run writes SUMMARY.md only with --output)",
    )
    parser.add_argument(
        "--jupyter-events-max",
        type=int,
        default=JUPYTER_EVENTS_CAP,
        metavar="N",
        help=f"cap of the jupyter_events scenario, which is slow (default {JUPYTER_EVENTS_CAP:,})",
    )
    parser.add_argument(
        "--http-single-max",
        type=int,
        metavar="N",
        help=f"cap of http_single and jupyter_server_post, one request per event (default "
        f"{HTTP_SINGLE_CAP:,}; {QUICK_HTTP_SINGLE_CAP:,} with --quick)",
    )
    parser.add_argument(
        "--http-processes",
        type=int,
        default=SINGLE_SHAPE.processes,
        metavar="P",
        help="load processes of http_single and jupyter_server_post "
        f"(default {SINGLE_SHAPE.processes})",
    )
    parser.add_argument(
        "--http-connections",
        type=int,
        default=SINGLE_SHAPE.connections,
        metavar="C",
        help="keep-alive connections per load process of http_single and jupyter_server_post "
        f"(default {SINGLE_SHAPE.connections})",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="keep the scenarios' temporary folders (outputs, daemon logs) and print where",
    )
    return parser


class Progress:
    """A `\\r` status line on stderr while a scenario runs (only on a terminal)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._name = ""
        self._started = 0.0
        self._last = 0.0

    def scenario(self, name: str) -> ProgressFn:
        self._name = name
        self._started = time.monotonic()
        self._last = 0.0
        self.stream.write(f"{name}: starting\n" if not self.live else f"\r{name}: starting")
        self.stream.flush()
        return self.update

    def update(self, done: int, expected: int) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last < 0.2 and done < expected:
            return
        self._last = now
        elapsed = now - self._started
        self.stream.write(f"\r\x1b[K{self._name}: {done:,}/{expected:,} records ({elapsed:.1f}s)")
        self.stream.flush()

    def end(self, result: ScenarioResult) -> None:
        rate = f"{result.events_per_sec:,.0f} events/s" if result.events_per_sec else "-"
        prefix = "\r\x1b[K" if self.live else ""
        self.stream.write(f"{prefix}{result.name}: {result.status} ({rate})\n")
        for problem in result.problems:
            self.stream.write(f"  {problem.splitlines()[0]}\n")
        self.stream.flush()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # read-only
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "mem_total_bytes": _mem_total_bytes(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": versions,
        "git_commit": _git_commit(),
        "temp_dir": tempfile.gettempdir(),
    }


def run_scenarios(
    names: list[str],
    events: int,
    jupyter_events_max: int,
    workdir: Path,
    progress: Progress,
    *,
    http_single_events: int | None = None,
    single_shape: HttpLoadShape = SINGLE_SHAPE,
    quick: bool = False,
) -> list[ScenarioResult]:
    single = min(events, http_single_events or HTTP_SINGLE_CAP)
    large = min(events, LARGE_SCHEMA_CAP)
    large_baseline = min(
        events, QUICK_JUPYTER_EVENTS_LARGE_CAP if quick else JUPYTER_EVENTS_LARGE_CAP
    )
    runners: dict[str, Callable[[Path, ProgressFn], ScenarioResult]] = {
        "socket_file": lambda d, p: run_socket_file("socket_file", events, 1, d, p),
        "socket_file_4clients": lambda d, p: run_socket_file(
            "socket_file_4clients", events, 4, d, p
        ),
        "socket_file_16clients": lambda d, p: run_socket_file(
            "socket_file_16clients", events, 16, d, p
        ),
        "socket_file_2daemons": lambda d, p: run_two_daemons(events, d, p),
        "fanout_3sinks": lambda d, p: run_fanout(events, d, p),
        "slow_sink": lambda d, p: run_slow_sink(events, d, p),
        "socket_file_large_schema": lambda d, p: run_socket_file_large(large, events, d, p),
        "jupyter_events_large_schema": lambda d, p: run_jupyter_events_large(
            large_baseline, events, d, p
        ),
        "socket_file_disk": lambda d, p: run_socket_file(
            "socket_file_disk", events, 1, d, p, config=DaemonConfig(buffer="disk")
        ),
        "jupyter_events": lambda d, p: run_jupyter_events(
            min(events, jupyter_events_max), events, d, p
        ),
        "python_minimal": lambda d, p: run_python_minimal(events, d, p),
        "socket_floor": lambda d, p: run_socket_floor(events, d, p),
        "rsyslog_json": lambda d, p: run_rsyslog(events, d, p),
        "http_batch": lambda d, p: run_http(
            "http_batch",
            events,
            batch_events=BATCH_EVENTS,
            shape=BATCH_SHAPE,
            folder=d,
            progress=p,
        ),
        "http_single": lambda d, p: run_http(
            "http_single", single, batch_events=0, shape=single_shape, folder=d, progress=p
        ),
        "jupyter_server_post": lambda d, p: run_jupyter_server_post(single, single_shape, d, p),
        "client_emit": lambda d, p: run_client_emit(
            "client_emit", events, "client", d, p, requested=events
        ),
        "jupyter_events_handler": lambda d, p: run_client_emit(
            "jupyter_events_handler",
            min(events, jupyter_events_max),
            "jupyter_events_handler",
            d,
            p,
            requested=events,
        ),
        "jupyter_server_fast": lambda d, p: run_client_emit(
            "jupyter_server_fast", events, "jupyter_server_fast", d, p, requested=events
        ),
    }
    results: list[ScenarioResult] = []
    rate: list[tuple[float | None, str]] = []  # socket_file's, or a probe's, once measured

    def max_events_per_sec(p: ProgressFn) -> tuple[float | None, str]:
        if not rate:
            rate.append(max_rate(results, events, workdir, p))
        return rate[0]

    multi: dict[str, Callable[[Path, ProgressFn], list[ScenarioResult]]] = {
        "latency_at_load": lambda d, p: run_latency_at_load(events, *max_events_per_sec(p), d, p),
        "overload": lambda d, p: run_overload(events, *max_events_per_sec(p), d, p),
        "event_size": lambda d, p: run_event_sizes(
            events, QUICK_SIZE_BYTES_CAP if quick else SIZE_BYTES_CAP, d, p
        ),
    }
    for name in names:
        update = progress.scenario(name)
        if name in SINK_SCENARIOS or name in multi:
            try:
                if name in SINK_SCENARIOS:
                    group = _run_sink_scenario(name, min(events, SINK_EVENTS_CAP), workdir, update)
                else:
                    group = multi[name](workdir / name, update)
            except Exception as e:
                group = [failed(result, events, e) for result in MULTI_SCENARIOS[name]]
            for result in group:
                progress.end(result)
                results.append(result)
            continue
        try:
            result = runners[name](workdir / name, update)
        except Exception as e:
            result = failed(name, events, e)
        progress.end(result)
        results.append(result)
    _ratios(results)
    minimal = next((r for r in results if r.name == "python_minimal" and r.ok), None)
    if minimal is not None and minimal.events_per_sec:
        for r in results:
            if r.name in TELEMETRYD_SCENARIOS and r.events_per_sec:
                r.ratio_to_python_minimal = r.events_per_sec / minimal.events_per_sec
    if single < events:
        for r in results:
            if r.name in ("http_single", "jupyter_server_post"):
                r.notes.append(
                    f"capped at {single:,} of the {events:,} events (one request each; the "
                    "same events in http_single and jupyter_server_post)"
                )
    _targets(results)
    return results


def _ratios(results: list[ScenarioResult]) -> None:
    """x jupyter_events (the large schema's results over its own baseline) and
    x socket_file."""
    by_name = {r.name: r for r in results if r.ok and r.events_per_sec}
    baseline = by_name.get("jupyter_events")
    large = by_name.get("jupyter_events_large_schema")
    for r in results:
        if not r.events_per_sec or r.name in PACED_RESULTS:
            continue  # a paced load's rate is the one it was given
        base = large if r.name in LARGE_SCHEMA_RESULTS else baseline
        if base is not None and base.events_per_sec:
            r.ratio_to_jupyter_events = r.events_per_sec / base.events_per_sec
    if large is not None and baseline is not None and baseline.events_per_sec:
        assert large.events_per_sec is not None
        slower = large.events_per_sec / baseline.events_per_sec
        large.notes.append(
            "x jupyter_events of the large schema's results is over this baseline; over "
            f"jupyter_events (small schema) it is {slower:.2f}"
        )
    socket_file = by_name.get("socket_file")
    if socket_file is None or not socket_file.events_per_sec:
        return
    for r in results:
        if r.name in SOCKET_FILE_RELATIVE and r.events_per_sec:
            r.ratio_to_socket_file = r.events_per_sec / socket_file.events_per_sec
    slow = next((r for r in results if r.name == "slow_sink"), None)
    if slow is not None and slow.ratio_to_socket_file is not None:
        slow.notes.append(
            f"the fast sinks at {slow.ratio_to_socket_file:.2f} x socket_file's rate "
            f"({socket_file.events_per_sec:,.0f} events/s in this run)"
        )


#: Events of each sink scenario: the backends' raw clients run at 20-150k events/s.
SINK_EVENTS_CAP = 200_000


def _run_sink_scenario(
    name: str, events: int, workdir: Path, progress: ProgressFn
) -> list[ScenarioResult]:
    """benchmarks/sink_<name>.run: its raw client's result and its sink's, or two failures."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        out: list[ScenarioResult] = module.run(events, workdir / name, progress)
    except Exception as e:
        return [failed(result, events, e) for result in SINK_SCENARIOS[name]]
    return out


def _targets(results: list[ScenarioResult]) -> None:
    """The ratios to jupyter_server_post and the issue's targets, with a note each."""
    by_name = {r.name: r for r in results}
    server = by_name.get("jupyter_server_post")
    server_rate = server.events_per_sec if server is not None and server.ok else None
    for r in results:
        if r.name in HTTP_SCENARIOS and r.events_per_sec and server_rate:
            r.ratio_to_jupyter_server_post = r.events_per_sec / server_rate
    batch = by_name.get("http_batch")
    if batch is not None:
        batch.target = f">= {TARGET_BATCH_EVENTS_PER_SEC:,} events/s"
        if batch.ok and batch.events_per_sec:
            batch.target_ratio = batch.events_per_sec / TARGET_BATCH_EVENTS_PER_SEC
    single = by_name.get("http_single")
    if single is not None:
        single.target = f">= {TARGET_SINGLE_X_JUPYTER_SERVER:g} x jupyter_server_post"
        if single.ok and single.ratio_to_jupyter_server_post:
            single.target_ratio = (
                single.ratio_to_jupyter_server_post / TARGET_SINGLE_X_JUPYTER_SERVER
            )
    socket_file, rsyslog = by_name.get("socket_file"), by_name.get("rsyslog_json")
    if socket_file is not None and rsyslog is not None:
        socket_file.target = f">= {TARGET_X_RSYSLOG:g} x rsyslog_json"
        if socket_file.ok and rsyslog.ok and socket_file.events_per_sec and rsyslog.events_per_sec:
            ratio = socket_file.events_per_sec / rsyslog.events_per_sec
            socket_file.details["ratio_to_rsyslog_json"] = ratio
            socket_file.target_ratio = ratio / TARGET_X_RSYSLOG
            socket_file.notes.append(
                f"{ratio:.2f}x rsyslog_json (rsyslogd with mmjsonparse into a file, same run)"
            )
    ceiling = by_name.get("socket_file_2daemons")
    if (
        ceiling is not None
        and rsyslog is not None
        and ceiling.ok
        and rsyslog.ok
        and ceiling.events_per_sec
        and rsyslog.events_per_sec
    ):
        ratio = ceiling.events_per_sec / rsyslog.events_per_sec
        ceiling.details["ratio_to_rsyslog_json"] = ratio
        ceiling.notes.append(
            f"{ratio:.2f}x rsyslog_json: the most any telemetryd on both cores could reach "
            f"against the {TARGET_X_RSYSLOG:g}x target, with no hand-off cost at all"
        )
    jupyter_events = by_name.get("jupyter_events")
    baseline_emit = (
        jupyter_events.latency_p50_secs
        if jupyter_events is not None and jupyter_events.ok
        else None
    )
    for name in EMIT_SCENARIOS:
        emitted = by_name.get(name)
        if emitted is None or not emitted.ok or not emitted.latency_p50_secs or not baseline_emit:
            continue
        cost = emitted.latency_p50_secs
        emitted.details["emit_p50_ratio_to_jupyter_events"] = cost / baseline_emit
        verdict = (
            f"{baseline_emit / cost:.1f}x less"
            if cost <= baseline_emit
            else f"{cost / baseline_emit:.2f}x as much"
        )
        emitted.notes.append(
            f"emit p50 {cost * 1e6:.2f} us against jupyter_events' EventLogger.emit into a "
            f"FileHandler {baseline_emit * 1e6:.2f} us ({verdict})"
        )
    for name in ("client_emit", "jupyter_server_fast"):
        emitted = by_name.get(name)
        if emitted is not None:
            emitted.target = f"emit p50 <= {TARGET_EMIT_P50_SECS * 1e6:g} us"
            if emitted.ok and emitted.latency_p50_secs:
                emitted.target_ratio = TARGET_EMIT_P50_SECS / emitted.latency_p50_secs
    for r in results:
        if r.target is None:
            continue
        if r.target_ratio is None:
            r.notes.append(f"target {r.target}: not measured in this run")
        else:
            verdict = "met" if r.target_ratio >= 1 else "MISSED"
            r.notes.append(f"target {r.target}: {r.target_ratio:.2f} of it ({verdict})")


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def format_latency(r: ScenarioResult) -> str:
    return r.latency_text(separator="/", unmeasured="-")


def format_table(results: list[ScenarioResult]) -> str:
    headers = (
        "scenario",
        "events",
        "events/s",
        "x jupyter_events",
        "x minimal",
        "x js_post",
        "x sock_file",
        "vs target",
        "CPU s daemon/load",
        "peak RSS MB",
        "p50/p99/p99.9 ms",
        "status",
    )
    rows = []
    for r in results:
        cpu = f"{_fmt(r.cpu_secs_server, '.2f')}/{_fmt(r.cpu_secs_load, '.2f')}"
        rss = _fmt(r.peak_rss_bytes, ".0f", 1 / (1024 * 1024))
        latency = format_latency(r)
        rows.append(
            (
                r.name,
                f"{r.events:,}",
                _fmt(r.events_per_sec, ",.0f"),
                _fmt(r.ratio_to_jupyter_events, ".1f"),
                _fmt(r.ratio_to_python_minimal, ".2f"),
                _fmt(r.ratio_to_jupyter_server_post, ".1f"),
                _fmt(r.ratio_to_socket_file, ".2f"),
                _fmt(r.target_ratio, ".2f"),
                cpu,
                rss,
                latency,
                r.status,
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    left = {0, len(headers) - 1}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]
    for r in results:
        out.extend(f"  {r.name}: {note}" for note in r.notes)
        out.extend(f"  {r.name}: FAILED: {problem.splitlines()[0]}" for problem in r.problems)
    out.extend(
        [
            "  events/s: events / (first byte sent .. last record in the output file)",
            "  x minimal: events/s over python_minimal's (the same events from one load process"
            " through a minimal blocking Python server: decode, fastjsonschema, encode, one"
            " write per 256 KiB read)",
            "  x js_post: events/s over jupyter_server_post's (a live Jupyter Server answering"
            " the same single-event POST /api/events requests from the same load)",
            "  x sock_file: events/s over socket_file's in the same run (slow_sink: its fast"
            " sinks' rate; fanout_3sinks: until all three files are complete)",
            f"  vs target: events/s over the issue's target (http_batch:"
            f" {TARGET_BATCH_EVENTS_PER_SEC:,} events/s; http_single:"
            f" {TARGET_SINGLE_X_JUPYTER_SERVER:g} x jupyter_server_post); >= 1 meets it",
            "  CPU s: the daemon (the emitting process for jupyter_events, the baseline server"
            " for python_minimal and socket_floor, Jupyter Server for jupyter_server_post) from"
            " the first byte until every record was written / the loads",
            "  p50/p99/p99.9: accept-to-write latency from the daemon's histogram for"
            " telemetryd's socket and sinks (at saturation, so mostly time spent queued; p99.9"
            " from its buckets in /metrics); per emit call for jupyter_events; request"
            " round trip seen by the load for the HTTP scenarios; latency_*/overload_*: send to"
            " visible in the file (benchmarks/latency_load.py)",
        ]
    )
    return "\n".join(out)


def write_report(output: Path, report: dict[str, Any], stamp: str) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"
    path = output / f"bench-{stamp}.json"
    path.write_text(text, encoding="utf-8")
    (output / "latest.json").write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events: int = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    if events <= 0:
        raise SystemExit("--events must be positive")
    names = [n for n in SCENARIOS if not args.scenario or n in args.scenario]
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="telemetryd-bench-"))
    t0 = time.perf_counter()
    try:
        results = run_scenarios(
            names,
            events,
            args.jupyter_events_max,
            workdir,
            progress,
            http_single_events=args.http_single_max
            or (QUICK_HTTP_SINGLE_CAP if args.quick else HTTP_SINGLE_CAP),
            single_shape=HttpLoadShape(args.http_processes, args.http_connections),
            quick=args.quick,
        )
    finally:
        if args.keep_files:
            print(f"scenario files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "duration_secs": round(time.perf_counter() - t0, 3),
        "command": [
            sys.executable,
            "-m",
            "benchmarks",
            *(argv if argv is not None else sys.argv[1:]),
        ],
        "quick": args.quick,
        "events": events,
        "machine": machine_info(),
        "ok": all(r.ok for r in results),
        "scenarios": [r.as_dict() for r in results],
    }
    output: Path = args.output or DEFAULT_OUTPUT
    path = write_report(output, report, stamp)
    print(format_table(results))
    print(f"report: {path}")
    summary = not args.quick or args.output is not None
    for line in write_figures(results, report, output, stamp, summary=summary):
        print(line)
    return 0 if report["ok"] else 1
