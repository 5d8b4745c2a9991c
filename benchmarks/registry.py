"""The scenario registry: every scenario's name, how it runs, the results it reports and what
they are compared with, in one table (SCENARIOS), in the order they run and are reported.

The runner, the command line (--scenario's choices and --help), the ratios and notes of the
report, the figures and the smoke test all read it: adding a scenario is one Scenario entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.comparisons import (
    TARGET_BATCH_EVENTS_PER_SEC,
    TARGET_EMIT_P50_SECS,
    TARGET_SINGLE_X_JUPYTER_SERVER,
    TARGET_X_RSYSLOG,
    batch_target,
    emit_note,
    emit_target,
    http_single_cap_note,
    large_schema_baseline_note,
    rsyslog_note,
    rsyslog_target,
    single_target,
    slow_sink_note,
    two_daemons_note,
)
from benchmarks.daemon_config import DaemonConfig
from benchmarks.event_size import (
    QUICK_SIZE_BYTES_CAP,
    SIZE_BYTES_CAP,
    SIZE_RESULTS,
    run_event_sizes,
)
from benchmarks.fanout import run_fanout, run_slow_sink
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
    run_latency_at_load,
    run_overload,
)
from benchmarks.rsyslog import run_rsyslog
from benchmarks.run_context import RunContext
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

#: A scenario's run: given the run and its folder (workdir / its name), its result or results.
RunFn = Callable[[RunContext, Path, ProgressFn], ScenarioResult | list[ScenarioResult]]
#: Notes that put a result beside the run's others, once every ratio is set.
NotesFn = Callable[[ScenarioResult, RunContext], None]
RatioField = Literal[
    "ratio_to_jupyter_events",
    "ratio_to_python_minimal",
    "ratio_to_jupyter_server_post",
    "ratio_to_socket_file",
]
#: The baselines a result's events/s can be given over (that result's, in the same run), and
#: the ScenarioResult field each ratio goes to.
BASELINES: dict[str, RatioField] = {
    "jupyter_events": "ratio_to_jupyter_events",
    # like for like: the large schema's results are over jupyter_events with the large schema
    "jupyter_events_large_schema": "ratio_to_jupyter_events",
    "python_minimal": "ratio_to_python_minimal",
    "jupyter_server_post": "ratio_to_jupyter_server_post",
    "socket_file": "ratio_to_socket_file",
}


@dataclass(frozen=True)
class Target:
    """The issue's target for a result: measured and reported, never asserted."""

    text: str  # ">= 150,000 events/s"
    #: The measured figure over the target's (>= 1: met); None when not measured.
    ratio: Callable[[ScenarioResult], float | None]
    #: A result that must be in the run for the target to apply (what it is measured against).
    needs: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str  # what --scenario selects
    summary: str  # for --help
    run: RunFn
    #: Its results' names when it reports several; empty: one result, named like the scenario.
    results: tuple[str, ...] = ()
    #: The baselines (BASELINES) its results' events/s are given over. An unpaced result is
    #: compared with jupyter_events; a paced load's rate is the one it was given.
    compared_with: tuple[str, ...] = ("jupyter_events",)
    #: Its results are the points of a figure and a SUMMARY.md table (benchmarks.figures).
    points: Literal["load", "size"] | None = None
    notes: NotesFn | None = None
    target: Target | None = None

    @property
    def result_names(self) -> tuple[str, ...]:
        return self.results or (self.name,)


#: The sink scenarios, sink_<backend> (benchmarks/sink_<backend>.py), two results each: the
#: backend's own Python client doing batched writes of the same records, then the daemon's sink.
SINK_BACKENDS = ("nats", "redis", "postgres", "http")
#: Events of each sink scenario: the backends' raw clients run at 20-150k events/s.
SINK_EVENTS_CAP = 200_000
#: Events in each request of http_batch.
BATCH_EVENTS = 1_000
#: Load shapes, chosen for telemetryd's highest rate on the 2-core VM. Batches: 4 requests in
#: flight keep the daemon busy while a response travels (1 connection: ~65-150k, 4: ~130-155k).
#: Single events: 1 to 64 connections measured 1.3k-2.9k requests/s, best from 16 to 32 (more
#: requests per event-loop turn); Jupyter Server gets the same load (--http-processes and
#: --http-connections change it for both).
BATCH_SHAPE = HttpLoadShape(processes=2, connections=2)
SINGLE_SHAPE = HttpLoadShape(processes=2, connections=16)


def _sink_scenario(backend: str) -> Scenario:
    name = f"sink_{backend}"
    results = (f"{backend}_raw", f"{backend}_sink")

    def run(ctx: RunContext, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
        events = min(ctx.settings.events, SINK_EVENTS_CAP)
        try:  # imported here: a backend's missing client library fails only its scenario
            module = importlib.import_module(f"benchmarks.{name}")
            out: list[ScenarioResult] = module.run(events, folder, progress)
        except Exception as e:
            return [failed(result, events, e) for result in results]
        return out

    return Scenario(
        name,
        f"the {backend} backend's own Python client doing batched writes, then telemetryd's "
        f"{backend} sink with the same records",
        run,
        results=results,
    )


def _socket_file(name: str, clients: int, config: DaemonConfig | None = None) -> RunFn:
    def run(ctx: RunContext, folder: Path, progress: ProgressFn) -> ScenarioResult:
        return run_socket_file(name, ctx.settings.events, clients, folder, progress, config=config)

    return run


def _client_emit(name: str, kind: str, *, capped: bool = False) -> RunFn:
    """benchmarks.scenarios.run_client_emit of `kind`; capped: at --jupyter-events-max, as
    jupyter_events (its emit calls are as slow)."""

    def run(ctx: RunContext, folder: Path, progress: ProgressFn) -> ScenarioResult:
        s = ctx.settings
        events = min(s.events, s.jupyter_events_max) if capped else s.events
        return run_client_emit(name, events, kind, folder, progress, requested=s.events)

    return run


#: telemetryd over the socket, beside the straightforward Python pipeline and socket_file.
SOCKET_TELEMETRYD = ("jupyter_events", "python_minimal", "socket_file")
EMIT_TARGET = Target(f"emit p50 <= {TARGET_EMIT_P50_SECS * 1e6:g} us", emit_target)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "socket_file",
        "N events over the Unix socket from one load process into the file sink",
        _socket_file("socket_file", 1),
        compared_with=("jupyter_events", "python_minimal"),
        notes=rsyslog_note,
        target=Target(f">= {TARGET_X_RSYSLOG:g} x rsyslog_json", rsyslog_target, "rsyslog_json"),
    ),
    Scenario(
        "socket_file_4clients",
        "the same, from four concurrent load processes",
        _socket_file("socket_file_4clients", 4),
        compared_with=SOCKET_TELEMETRYD,
    ),
    Scenario(
        "socket_file_16clients",
        "the same, from sixteen",
        _socket_file("socket_file_16clients", 16),
        compared_with=SOCKET_TELEMETRYD,
    ),
    Scenario(
        "socket_file_disk",
        "socket_file through the disk buffer",
        _socket_file("socket_file_disk", 1, DaemonConfig(buffer="disk")),
        compared_with=SOCKET_TELEMETRYD,
    ),
    Scenario(
        "socket_file_2daemons",
        "two independent daemons at once, half the events each: the ceiling of any telemetryd "
        "split over processes on this machine",
        lambda ctx, folder, progress: run_two_daemons(ctx.settings.events, folder, progress),
        compared_with=("jupyter_events", "socket_file"),
        notes=two_daemons_note,
    ),
    Scenario(
        "fanout_3sinks",
        "every event to three file sinks, each of which must hold every event",
        lambda ctx, folder, progress: run_fanout(ctx.settings.events, folder, progress),
        compared_with=("jupyter_events", "socket_file"),
    ),
    Scenario(
        "slow_sink",
        "two file sinks and a slow blackhole sink (drop_newest, small queue): the fast sinks "
        "get every event, the slow one's drops are counted",
        lambda ctx, folder, progress: run_slow_sink(ctx.settings.events, folder, progress),
        compared_with=("jupyter_events", "socket_file"),
        notes=slow_sink_note,
    ),
    Scenario(
        "socket_file_large_schema",
        "socket_file with the large schema (benchmarks/schemas/large)",
        lambda ctx, folder, progress: run_socket_file_large(
            min(ctx.settings.events, LARGE_SCHEMA_CAP), ctx.settings.events, folder, progress
        ),
        compared_with=("jupyter_events_large_schema", "socket_file"),
    ),
    Scenario(
        "latency_at_load",
        "a paced load at 25/50/75% of socket_file's rate: send-to-visible latency p50/p99/p99.9",
        lambda ctx, folder, progress: run_latency_at_load(
            ctx.settings.events, *ctx.max_events_per_sec(progress), folder, progress
        ),
        results=LATENCY_RESULTS,
        compared_with=(),
        points="load",
    ),
    Scenario(
        "overload",
        "the same load offered at 2/5/10x: back-pressure, offered against achieved rate, peak RSS",
        lambda ctx, folder, progress: run_overload(
            ctx.settings.events, *ctx.max_events_per_sec(progress), folder, progress
        ),
        results=OVERLOAD_RESULTS,
        compared_with=(),
        points="load",
    ),
    Scenario(
        "event_size",
        "socket_file with lines of 100 B to 10 KB",
        lambda ctx, folder, progress: run_event_sizes(
            ctx.settings.events,
            QUICK_SIZE_BYTES_CAP if ctx.settings.quick else SIZE_BYTES_CAP,
            folder,
            progress,
        ),
        results=SIZE_RESULTS,
        compared_with=("jupyter_events", "socket_file"),
        points="size",
    ),
    Scenario(
        "python_minimal",
        "the same events through a minimal blocking Python server",
        lambda ctx, folder, progress: run_python_minimal(ctx.settings.events, folder, progress),
    ),
    Scenario(
        "jupyter_events",
        "the baseline: jupyter_events' EventLogger into a logging.FileHandler",
        lambda ctx, folder, progress: run_jupyter_events(
            min(ctx.settings.events, ctx.settings.jupyter_events_max),
            ctx.settings.events,
            folder,
            progress,
        ),
    ),
    Scenario(
        "jupyter_events_large_schema",
        "the same with the large schema (socket_file_large_schema's baseline)",
        lambda ctx, folder, progress: run_jupyter_events_large(
            min(
                ctx.settings.events,
                QUICK_JUPYTER_EVENTS_LARGE_CAP if ctx.settings.quick else JUPYTER_EVENTS_LARGE_CAP,
            ),
            ctx.settings.events,
            folder,
            progress,
        ),
        compared_with=("jupyter_events_large_schema",),
        notes=large_schema_baseline_note,
    ),
    Scenario(
        "socket_floor",
        "the machine's floor: the same bytes copied through a Unix socket into a file by a "
        "minimal Python server that parses nothing",
        lambda ctx, folder, progress: run_socket_floor(ctx.settings.events, folder, progress),
    ),
    Scenario(
        "rsyslog_json",
        "the same lines into rsyslogd (imptcp on a Unix socket, mmjsonparse, omfile): JSON "
        "checked and written, no schema",
        lambda ctx, folder, progress: run_rsyslog(ctx.settings.events, folder, progress),
    ),
    Scenario(
        "http_batch",
        f"NDJSON batches of {BATCH_EVENTS:,} events to POST /api/events/batch over keep-alive "
        "connections into the file sink",
        lambda ctx, folder, progress: run_http(
            "http_batch",
            ctx.settings.events,
            batch_events=BATCH_EVENTS,
            shape=BATCH_SHAPE,
            folder=folder,
            progress=progress,
        ),
        compared_with=("jupyter_events", "jupyter_server_post"),
        target=Target(f">= {TARGET_BATCH_EVENTS_PER_SEC:,} events/s", batch_target),
    ),
    Scenario(
        "http_single",
        "one event per POST /api/events, many keep-alive connections, each waiting for its 204 "
        "(no pipelining)",
        lambda ctx, folder, progress: run_http(
            "http_single",
            ctx.settings.http_single_events,
            batch_events=0,
            shape=ctx.settings.single_shape,
            folder=folder,
            progress=progress,
        ),
        compared_with=("jupyter_events", "jupyter_server_post"),
        notes=http_single_cap_note,
        target=Target(
            f">= {TARGET_SINGLE_X_JUPYTER_SERVER:g} x jupyter_server_post", single_target
        ),
    ),
    Scenario(
        "jupyter_server_post",
        "the HTTP baseline: a live Jupyter Server answering the same requests from the same "
        "load, its EventLogger writing through a FileHandler",
        lambda ctx, folder, progress: run_jupyter_server_post(
            ctx.settings.http_single_events, ctx.settings.single_shape, folder, progress
        ),
        notes=http_single_cap_note,
    ),
    Scenario(
        "client_emit",
        "telemetryd.client.Client.emit, each call timed in the caller's thread (against "
        "jupyter_events' EventLogger.emit, timed the same way)",
        _client_emit("client_emit", "client"),
        notes=emit_note,
        target=EMIT_TARGET,
    ),
    Scenario(
        "jupyter_events_handler",
        "EventLogger.emit with a TelemetrydHandler as its only handler",
        _client_emit("jupyter_events_handler", "jupyter_events_handler", capped=True),
        notes=emit_note,
    ),
    Scenario(
        "jupyter_server_fast",
        "EventLogger.emit with the Jupyter Server extension's fast path",
        _client_emit("jupyter_server_fast", "jupyter_server_fast"),
        notes=emit_note,
        target=EMIT_TARGET,
    ),
    *(_sink_scenario(backend) for backend in SINK_BACKENDS),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
#: The scenario that reports each result.
BY_RESULT = {result: s for s in SCENARIOS for result in s.result_names}


def results_of(points: Literal["load", "size"]) -> tuple[str, ...]:
    """The results that are the points of one figure, in the registry's order."""
    return tuple(r for s in SCENARIOS if s.points == points for r in s.result_names)
