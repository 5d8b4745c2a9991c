"""The notes that put a result beside others of the same run, and the issue's targets.

Each function here is a scenario's `notes` hook in benchmarks.registry: called once every
scenario has run and every ratio is set, with the result and the run (RunContext).
"""

from __future__ import annotations

from benchmarks.run_context import RunContext
from benchmarks.scenarios import ScenarioResult

#: The issue's targets (measured and reported, never asserted).
TARGET_BATCH_EVENTS_PER_SEC = 150_000
TARGET_SINGLE_X_JUPYTER_SERVER = 10.0
TARGET_X_RSYSLOG = 2.0
TARGET_EMIT_P50_SECS = 2e-6


def large_schema_baseline_note(result: ScenarioResult, run: RunContext) -> None:
    """jupyter_events_large_schema is the large schema's baseline: how it compares with the
    small schema's."""
    baseline = run.result("jupyter_events")
    if baseline is None or not (baseline.ok and baseline.events_per_sec):
        return
    if result.ok and result.events_per_sec:
        slower = result.events_per_sec / baseline.events_per_sec
        result.notes.append(
            "x jupyter_events of the large schema's results is over this baseline; over "
            f"jupyter_events (small schema) it is {slower:.2f}"
        )


def slow_sink_note(result: ScenarioResult, run: RunContext) -> None:
    socket_file = run.result("socket_file")
    if result.ratio_to_socket_file is None or socket_file is None:
        return
    result.notes.append(
        f"the fast sinks at {result.ratio_to_socket_file:.2f} x socket_file's rate "
        f"({socket_file.events_per_sec:,.0f} events/s in this run)"
    )


def http_single_cap_note(result: ScenarioResult, run: RunContext) -> None:
    events, single = run.settings.events, run.settings.http_single_events
    if single < events:
        result.notes.append(
            f"capped at {single:,} of the {events:,} events (one request each; the "
            "same events in http_single and jupyter_server_post)"
        )


def _ratio_to_rsyslog(result: ScenarioResult, run: RunContext) -> float | None:
    """Events/s over rsyslog_json's in this run (also in the details), when both are OK."""
    rsyslog = run.result("rsyslog_json")
    if not (
        rsyslog is not None
        and result.ok
        and rsyslog.ok
        and result.events_per_sec
        and rsyslog.events_per_sec
    ):
        return None
    ratio = result.events_per_sec / rsyslog.events_per_sec
    result.details["ratio_to_rsyslog_json"] = ratio
    return ratio


def rsyslog_note(result: ScenarioResult, run: RunContext) -> None:
    ratio = _ratio_to_rsyslog(result, run)
    if ratio is not None:
        result.notes.append(
            f"{ratio:.2f}x rsyslog_json (rsyslogd with mmjsonparse into a file, same run)"
        )


def two_daemons_note(result: ScenarioResult, run: RunContext) -> None:
    ratio = _ratio_to_rsyslog(result, run)
    if ratio is not None:
        result.notes.append(
            f"{ratio:.2f}x rsyslog_json: the most any telemetryd on both cores could reach "
            f"against the {TARGET_X_RSYSLOG:g}x target, with no hand-off cost at all"
        )


def emit_note(result: ScenarioResult, run: RunContext) -> None:
    """An emit call's p50 against jupyter_events' EventLogger.emit, timed the same way."""
    jupyter_events = run.result("jupyter_events")
    baseline = (
        jupyter_events.latency_p50_secs
        if jupyter_events is not None and jupyter_events.ok
        else None
    )
    if not result.ok or not result.latency_p50_secs or not baseline:
        return
    cost = result.latency_p50_secs
    result.details["emit_p50_ratio_to_jupyter_events"] = cost / baseline
    verdict = (
        f"{baseline / cost:.1f}x less" if cost <= baseline else f"{cost / baseline:.2f}x as much"
    )
    result.notes.append(
        f"emit p50 {cost * 1e6:.2f} us against jupyter_events' EventLogger.emit into a "
        f"FileHandler {baseline * 1e6:.2f} us ({verdict})"
    )


def batch_target(result: ScenarioResult) -> float | None:
    rate = result.events_per_sec
    return rate / TARGET_BATCH_EVENTS_PER_SEC if rate else None


def single_target(result: ScenarioResult) -> float | None:
    ratio = result.ratio_to_jupyter_server_post
    return ratio / TARGET_SINGLE_X_JUPYTER_SERVER if ratio else None


def rsyslog_target(result: ScenarioResult) -> float | None:
    """From the ratio rsyslog_note put in the details."""
    ratio = result.details.get("ratio_to_rsyslog_json")
    return ratio / TARGET_X_RSYSLOG if ratio else None


def emit_target(result: ScenarioResult) -> float | None:
    p50 = result.latency_p50_secs
    return TARGET_EMIT_P50_SECS / p50 if p50 else None
