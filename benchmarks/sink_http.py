"""The http sink against httpx posting directly, both into one aggregator telemetryd.

- `http_raw`: one process (httpx.Client, one keep-alive connection) POSTs the events as NDJSON
  batches of BATCH_EVENTS to the aggregator's /api/events/batch, one request at a time.
- `http_sink`: an agent telemetryd, fed over its Unix socket (benchmarks.load.unix_loads),
  forwards with the http sink (`format = "events"`, batches of BATCH_EVENTS,
  `batches_in_flight = BATCHES_IN_FLIGHT`) to an aggregator configured the same way.

Both count records in the aggregator's file sink, from the load's first byte until the last
record is written; a run that loses, duplicates or mangles an event is FAILED.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.daemon_process import DaemonConfig, DaemonProcess, DaemonResult, _table
from benchmarks.events import encode_events
from benchmarks.load import (
    LoadError,
    LoadGroup,
    LoadReport,
    ReadyFn,
    cpu_seconds_self,
    max_rss_bytes_self,
    split,
    unix_loads,
)
from benchmarks.scenarios import HTTP_TOKEN, HTTP_TOKEN_HASH, ScenarioResult
from benchmarks.verify import LineCounter, verify_delivery

BATCH_EVENTS = 1000
#: The agent's http sink posts the next batch while the aggregator answers the last: one at
#: a time, agent and aggregator wait for each other (measured 0.49 of http_raw, 0.63 with 2).
BATCHES_IN_FLIGHT = 2
TARGET = "the http sink delivers >= 80% of http_raw's rate"
STALL_SECS = 30.0
POLL_SECS = 0.005

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class RawTarget:
    host: str
    port: int
    token: str
    batch_events: int


def raw_post_load(ready: ReadyFn, target: RawTarget, start: int, count: int) -> LoadReport:
    """httpx POSTing NDJSON batches in order, each answered before the next is sent."""
    host, port, token, batch = target.host, target.port, target.token, target.batch_events
    bodies = [
        encode_events(first, min(batch, start + count - first))
        for first in range(start, start + count, batch)
    ]
    statuses: Counter[int] = Counter()
    accepted = 0
    samples: list[str] = []
    headers = {"content-type": "application/x-ndjson", "authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=120) as client:
        client.get("/healthz")  # the connection is open before "go"
        ready(sum(len(b) for b in bodies))
        cpu_before = cpu_seconds_self()
        first_byte = time.perf_counter()
        for body in bodies:
            response = client.post("/api/events/batch", content=body)
            statuses[response.status_code] += 1
            if response.status_code == 200:
                accepted += int(response.json()["accepted"])
            elif len(samples) < 3:
                samples.append(f"{response.status_code} {response.text[:200]}")
        last = time.perf_counter()
    return LoadReport(
        start=start,
        events=count,
        bytes_sent=sum(len(b) for b in bodies),
        first_byte=first_byte,
        last_byte=last,
        closed=last,
        reply_bytes=0,
        cpu_secs=cpu_seconds_self() - cpu_before,
        max_rss_bytes=max_rss_bytes_self(),
        requests=len(bodies),
        statuses=dict(statuses),
        accepted=accepted,
        error_samples=samples,
    )


@dataclass(frozen=True)
class AgentConfig(DaemonConfig):
    """A telemetryd whose only sink is the http sink, forwarding to `url`."""

    url: str = ""

    def render(self, folder: Path) -> str:
        return "\n".join(
            [
                _table(
                    "[server]",
                    {
                        "unix_socket": folder / "run" / "telemetryd.sock",
                        "shutdown_timeout_secs": self.shutdown_timeout_secs,
                    },
                ),
                _table("[schemas]", {"builtin": True}),
                _table("[log]", {"level": "info", "format": "json", "stats_interval_secs": 0}),
                _table(
                    "[[sinks]]",
                    {
                        "name": "forward",
                        "type": "http",
                        "url": self.url,
                        "format": "events",
                        "auth_token": HTTP_TOKEN,
                        "batch_max_events": self.batch_max_events,
                        "batches_in_flight": BATCHES_IN_FLIGHT,
                        "when_full": "block",
                    },
                ),
                _table(
                    "[dead_letter]",
                    {
                        "name": "dead-letter",
                        "type": "file",
                        "path": folder / "out" / "rejected.jsonl",
                        "when_full": "drop_newest",
                    },
                ),
            ]
        )


def _aggregator_config() -> DaemonConfig:
    return DaemonConfig(http="127.0.0.1:0", token_hash=HTTP_TOKEN_HASH)


def _wait_for_lines(
    counter: LineCounter, expected: int, progress: ProgressFn, loads_done: Callable[[], bool]
) -> float | None:
    """perf_counter() when the file holds `expected` lines; None if it stops growing first."""
    last_count, last_change = -1, time.monotonic()
    while True:
        count = counter.poll()
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
        time.sleep(POLL_SECS)


def _check_stopped(result: ScenarioResult, name: str, daemon: DaemonResult, sink: str) -> None:
    events = result.events
    if daemon.exit_code != 0:
        result.problems.append(f"{name} exited with {daemon.exit_code}")
    entry = daemon.sink(sink)
    if entry is None:
        result.problems.append(f'no "{sink}" sink in the {name}\'s "stopped" line')
        return
    if entry.get("sent") != events:
        result.problems.append(f"the {name}'s {sink} sink sent {entry.get('sent')} of {events}")
    if entry.get("dropped"):
        result.problems.append(f"the {name}'s {sink} sink dropped {entry.get('dropped')}")
    dead = daemon.sink("dead-letter")
    if dead is not None and dead.get("received"):
        result.problems.append(f"{dead.get('received')} events in the {name}'s dead-letter")


def _measure(
    result: ScenarioResult,
    folder: Path,
    progress: ProgressFn,
    make_loads: Callable[
        [DaemonProcess, contextlib.ExitStack], tuple[LoadGroup, DaemonProcess | None]
    ],
) -> ScenarioResult:
    """Starts the aggregator (and, through make_loads, the agent), releases the load, waits for
    every record at the aggregator, stops everything and checks the counts."""
    events = result.events
    folder.mkdir(parents=True)
    (folder / "aggregator").mkdir()
    reports: list[LoadReport] = []
    stopped_agent: DaemonResult | None = None
    with (
        DaemonProcess(folder / "aggregator", _aggregator_config()) as aggregator,
        contextlib.ExitStack() as stack,
    ):
        aggregator.start()
        loads, agent = make_loads(aggregator, stack)
        with loads:
            loads.start()
            watched = [aggregator] if agent is None else [aggregator, agent]
            cpu_before = [d.cpu_seconds() for d in watched]
            with LineCounter(aggregator.output_path) as counter:
                loads.go()
                written_at = _wait_for_lines(counter, events, progress, loads.done)
            cpu = [d.cpu_seconds() - before for d, before in zip(watched, cpu_before, strict=True)]
            result.cpu_secs_server = sum(cpu)
            result.details["cpu_secs_aggregator"] = cpu[0]
            if agent is not None:
                result.details["cpu_secs_agent"] = cpu[1]
            result.peak_rss_bytes = watched[-1].peak_rss_bytes()
            if written_at is None:
                result.problems.append(
                    f"the aggregator's output stopped growing at {counter.lines:,} of {events:,}"
                )
            try:
                reports = loads.reports(timeout_secs=60 if written_at is not None else 10)
            except LoadError as e:
                result.problems.append(str(e))
            if agent is not None:
                stopped_agent = agent.stop()
        stopped = aggregator.stop()
    _check_stopped(result, "aggregator", stopped, "archive")
    result.details["aggregator_log_problems"] = stopped.error_lines[:10]
    if stopped_agent is not None:
        _check_stopped(result, "agent", stopped_agent, "forward")
        result.details["agent_log_problems"] = stopped_agent.error_lines[:10]
        result.details["agent_stopped"] = stopped_agent.stopped
    if reports:
        result.cpu_secs_load = sum(r.cpu_secs for r in reports)
        if written_at is not None:
            result.elapsed_secs = written_at - min(r.first_byte for r in reports)
        result.details["load"] = [
            {k: v for k, v in asdict(r).items() if k != "latencies_ns"} for r in reports
        ]
    delivery = verify_delivery([aggregator.output_path], events)
    result.delivery = delivery.as_dict()
    if not delivery.complete:
        result.problems.append(
            f"the aggregator holds {delivery.unique:,} of {events:,} events "
            f"({delivery.duplicates:,} duplicated, {delivery.foreign:,} foreign lines)"
        )
    if result.elapsed_secs:
        result.events_per_sec = events / result.elapsed_secs
    result.status = "FAILED" if result.problems else "OK"
    return result


def run_raw(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "http_raw",
        f"{events:,} events POSTed by httpx (one process, one keep-alive connection, one "
        f"request at a time) as NDJSON batches of {BATCH_EVENTS:,} to an aggregator "
        "telemetryd's /api/events/batch, into its file sink",
        events,
    )

    def loads(
        aggregator: DaemonProcess, _: contextlib.ExitStack
    ) -> tuple[LoadGroup, DaemonProcess | None]:
        port = aggregator.http_port()
        job = (RawTarget("127.0.0.1", port, HTTP_TOKEN, BATCH_EVENTS), 0, events)
        group = LoadGroup(raw_post_load, [job])
        return group, None

    _measure(result, folder, progress, loads)
    for report in result.details.get("load", []):
        if report["accepted"] != events:
            result.problems.append(
                f"the aggregator accepted {report['accepted']:,} of {events:,}; statuses "
                f"{report['statuses']}; samples {report['error_samples']}"
            )
            result.status = "FAILED"
    return result


def run_sink(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "http_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into an agent "
        f"telemetryd whose http sink (format = events, batches of {BATCH_EVENTS:,}, "
        f"{BATCHES_IN_FLIGHT} in flight) forwards "
        "them to an aggregator telemetryd's /api/events/batch, into its file sink",
        events,
        target=TARGET,
    )

    def loads(
        aggregator: DaemonProcess, stack: contextlib.ExitStack
    ) -> tuple[LoadGroup, DaemonProcess | None]:
        url = f"http://127.0.0.1:{aggregator.http_port()}/api/events/batch"
        (folder / "agent").mkdir()
        agent = stack.enter_context(DaemonProcess(folder / "agent", AgentConfig(url=url)))
        agent.start()
        return unix_loads(agent.socket_path, split(events, 1)), agent

    return _measure(result, folder, progress, loads)


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    raw = run_raw(events, folder / "http_raw", progress)
    sink = run_sink(events, folder / "http_sink", progress)
    if raw.events_per_sec and sink.events_per_sec:
        sink.target_ratio = sink.events_per_sec / (0.8 * raw.events_per_sec)
        sink.details["ratio_to_http_raw"] = sink.events_per_sec / raw.events_per_sec
    return [raw, sink]
