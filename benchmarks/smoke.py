"""The CI smoke test's helper: `python -m benchmarks --quick --output <tmp>` in a subprocess.

    result = run_quick(tmp_path)
    assert result.returncode == 0, result.stderr
    assert not result.problems()

It checks that every scenario ran and delivered every event; it never checks speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.events import REPO_ROOT
from benchmarks.registry import SCENARIOS


@dataclass(frozen=True)
class QuickRun:
    returncode: int
    report: dict[str, Any] | None  # latest.json, if it was written
    stdout: str
    stderr: str
    output_dir: Path  # where the report, the plot and SUMMARY.md went

    def problems(self) -> list[str]:
        """Everything wrong with the run; empty when it passed."""
        out: list[str] = []
        if self.returncode != 0:
            out.append(f"exit status {self.returncode}")
        if self.report is None:
            return [*out, "no latest.json written"]
        statuses = {s.get("name"): s for s in self.report.get("scenarios", [])}
        for name in (result for scenario in SCENARIOS for result in scenario.result_names):
            scenario = statuses.get(name)
            if scenario is None:
                out.append(f"{name}: missing from the report")
            elif scenario.get("status") != "OK":
                out.append(f"{name}: {scenario.get('status')}: {scenario.get('problems')}")
        return out


def run_quick(tmp_dir: Path, timeout_secs: float = 360.0) -> QuickRun:
    """Runs the quick benchmark with its report in `tmp_dir`."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(tmp_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_secs,
        check=False,
    )
    latest = tmp_dir / "latest.json"
    report: dict[str, Any] | None = None
    if latest.exists():
        report = json.loads(latest.read_text(encoding="utf-8"))
    return QuickRun(proc.returncode, report, proc.stdout, proc.stderr, tmp_dir)
