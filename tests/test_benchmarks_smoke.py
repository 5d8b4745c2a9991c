"""`python -m benchmarks --quick` runs every scenario and loses no event (never checks speed)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.smoke import run_quick


def test_quick_benchmark_runs_every_scenario_and_loses_nothing(tmp_path: Path) -> None:
    result = run_quick(tmp_path)
    assert result.problems() == [], result.stderr[-3000:]
    assert result.report is not None
    for scenario in result.report["scenarios"]:
        assert scenario["events"] > 0
