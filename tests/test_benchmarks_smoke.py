"""`python -m benchmarks --quick` runs every scenario and loses no event (never checks speed)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.smoke import QuickRun, run_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    return run_quick(tmp_path_factory.mktemp("bench"))


def _scenarios(result: QuickRun) -> dict[str, dict[str, Any]]:
    assert result.report is not None
    return {s["name"]: s for s in result.report["scenarios"]}


def test_quick_benchmark_runs_every_scenario_and_loses_nothing(quick: QuickRun) -> None:
    assert quick.problems() == [], quick.stderr[-3000:]
    assert quick.report is not None
    for scenario in quick.report["scenarios"]:
        assert scenario["events"] > 0


def test_fanout_and_slow_sink_are_counted_per_sink(quick: QuickRun) -> None:
    by_name = _scenarios(quick)
    fanout = by_name["fanout_3sinks"]["details"]["deliveries"]
    assert sorted(fanout) == ["archive", "copy-2", "copy-3"]
    assert all(d["complete"] for d in fanout.values())
    slow = by_name["slow_sink"]["details"]
    assert all(d["complete"] for d in slow["deliveries"].values())
    counts = slow["slow_sink"]
    assert (
        counts["sent"] + counts["dropped"]
        == counts["received"]
        == slow["deliveries"]["archive"]["expected"]
    )


def test_paced_results_report_latency_with_p999(quick: QuickRun) -> None:
    by_name = _scenarios(quick)
    for name in ("latency_25pct", "latency_50pct", "latency_75pct", "overload_10x"):
        scenario = by_name[name]
        p50, p99, p999 = (
            scenario["latency_p50_secs"],
            scenario["latency_p99_secs"],
            scenario["latency_p999_secs"],
        )
        assert 0 < p50 <= p99 <= p999, name
        assert scenario["details"]["latency_resolution_secs"] > 0
        assert scenario["details"]["offered_events_per_sec"] > 0
    assert by_name["socket_file"]["latency_p999_secs"] is not None  # the daemon's, /metrics


def test_quick_run_with_output_writes_the_summary(quick: QuickRun) -> None:
    assert quick.report is not None
    text = quick.output_dir.joinpath("SUMMARY.md").read_text(encoding="utf-8")
    assert "| latency_50pct |" in text
    assert "| event_size_10kb |" in text
    # The plot needs matplotlib (the `bench` extra); without it SUMMARY.md says so.
    assert list(quick.output_dir.glob("bench-*.png")) or "no plot" in text
