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
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from benchmarks.daemon_config import DaemonConfig
from benchmarks.events import encode_events
from benchmarks.load import LoadGroup, LoadReport, ReadyFn, cpu_seconds_self, split, unix_loads
from benchmarks.scenarios import HTTP_TOKEN, HTTP_TOKEN_HASH, ProgressFn, ScenarioResult
from benchmarks.sink_run import (
    SinkConfig,
    against_raw,
    check_delivery,
    check_stopped,
    client_report,
    finish,
    run_loads,
    sink_target,
)
from benchmarks.verify import LineCounter, verify_delivery
from tests.support.daemon_process import DaemonProcess, DaemonResult, http_port

BATCH_EVENTS = 1000
#: The agent's http sink posts the next batches while the aggregator answers the last: one at
#: a time, agent and aggregator wait for each other. Measured (200k events, alternating runs,
#: as the sink's share of http_raw's rate): 1 in flight 0.38-0.48, 2 0.76-1.03, 3 0.80-0.96,
#: 4 0.70-0.94.
BATCHES_IN_FLIGHT = 3
POLL_SECS = 0.005


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
    report = client_report(
        start,
        count,
        bytes_sent=sum(len(b) for b in bodies),
        first=first_byte,
        last=last,
        cpu_secs=cpu_seconds_self() - cpu_before,
        requests=len(bodies),
    )
    return replace(report, statuses=dict(statuses), accepted=accepted, error_samples=samples)


@dataclass(frozen=True)
class AgentConfig(SinkConfig):
    """A telemetryd whose only sink is the http sink, forwarding to `url`."""

    url: str = ""
    metrics: bool = False  # the aggregator's file is what is counted; no /metrics needed

    def sink_table(self) -> dict[str, object]:
        return {
            "name": "forward",
            "type": "http",
            "url": self.url,
            "format": "events",
            "auth_token": HTTP_TOKEN,
            "batches_in_flight": BATCHES_IN_FLIGHT,
        }


def _aggregator_config() -> DaemonConfig:
    return DaemonConfig(http="127.0.0.1:0", token_hash=HTTP_TOKEN_HASH)


def _measure(
    result: ScenarioResult,
    folder: Path,
    progress: ProgressFn,
    make_loads: Callable[
        [DaemonProcess, contextlib.ExitStack], tuple[LoadGroup, DaemonProcess | None]
    ],
) -> None:
    """Starts the aggregator (and, through make_loads, the agent), releases the load, waits for
    every record at the aggregator, stops everything and checks the counts."""
    folder.mkdir(parents=True)
    (folder / "aggregator").mkdir()
    stopped_agent: DaemonResult | None = None
    with (
        DaemonProcess(folder / "aggregator", _aggregator_config()) as aggregator,
        contextlib.ExitStack() as stack,
    ):
        loads, agent = make_loads(aggregator, stack)
        watched = [aggregator] if agent is None else [aggregator, agent]
        with LineCounter(aggregator.output_path) as counter:
            run = run_loads(
                result,
                loads,
                counter.poll,
                progress,
                clocks=[d.cpu_seconds for d in watched],
                stalled="the aggregator's output stopped growing at {count:,} of {expected:,}",
                poll_secs=POLL_SECS,
            )
        result.cpu_secs_server = sum(run.cpu_secs)
        result.details["cpu_secs_aggregator"] = run.cpu_secs[0]
        if agent is not None:
            result.details["cpu_secs_agent"] = run.cpu_secs[1]
        result.peak_rss_bytes = watched[-1].peak_rss_bytes()
        if agent is not None:
            stopped_agent = agent.stop_and_report()
        stopped = aggregator.stop_and_report()
    check_stopped(
        result, stopped, "archive", process="aggregator", label="the aggregator's archive sink"
    )
    result.details["aggregator_log_problems"] = stopped.error_lines[:10]
    if stopped_agent is not None:
        check_stopped(
            result, stopped_agent, "forward", process="agent", label="the agent's forward sink"
        )
        result.details["agent_log_problems"] = stopped_agent.error_lines[:10]
        result.details["agent_stopped"] = stopped_agent.stopped
    delivery = verify_delivery([aggregator.output_path], result.events)
    check_delivery(result, delivery, "the aggregator", "lines")


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
        port = http_port(aggregator)
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
    return finish(result)


def run_sink(events: int, folder: Path, progress: ProgressFn) -> ScenarioResult:
    result = ScenarioResult(
        "http_sink",
        f"{events:,} events over the Unix socket (plain mode, one load process) into an agent "
        f"telemetryd whose http sink (format = events, batches of {BATCH_EVENTS:,}, "
        f"{BATCHES_IN_FLIGHT} in flight) forwards "
        "them to an aggregator telemetryd's /api/events/batch, into its file sink",
        events,
        target=sink_target("http"),
    )

    def loads(
        aggregator: DaemonProcess, stack: contextlib.ExitStack
    ) -> tuple[LoadGroup, DaemonProcess | None]:
        url = f"http://127.0.0.1:{http_port(aggregator)}/api/events/batch"
        (folder / "agent").mkdir()
        agent = stack.enter_context(DaemonProcess(folder / "agent", AgentConfig(url=url)))
        return unix_loads(agent.socket_path, split(events, 1)), agent

    _measure(result, folder, progress, loads)
    return finish(result)


def run(events: int, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
    raw = run_raw(events, folder / "http_raw", progress)
    sink = run_sink(events, folder / "http_sink", progress)
    return against_raw(raw, sink)
