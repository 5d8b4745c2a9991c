"""The benchmark scenario registry is consistent, and the runner, the command line, the figures
and the smoke test read it (without running any scenario)."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.figures import LOAD_RESULTS, SIZE_RESULTS
from benchmarks.registry import BASELINES, BY_NAME, BY_RESULT, SCENARIOS, SINGLE_SHAPE, RunFn
from benchmarks.run_context import RunContext, RunSettings
from benchmarks.runner import Progress, build_parser, run_scenarios
from benchmarks.scenarios import ProgressFn, ScenarioResult
from benchmarks.smoke import QuickRun

RESULT_NAMES = [result for s in SCENARIOS for result in s.result_names]


def test_scenario_and_result_names_are_unique() -> None:
    assert [n for n, c in Counter(s.name for s in SCENARIOS).items() if c > 1] == []
    assert [n for n, c in Counter(RESULT_NAMES).items() if c > 1] == []
    assert list(BY_NAME) == [s.name for s in SCENARIOS]
    assert list(BY_RESULT) == RESULT_NAMES


def test_every_baseline_and_target_names_a_registered_result() -> None:
    assert set(BASELINES) <= set(RESULT_NAMES)
    for s in SCENARIOS:
        assert set(s.compared_with) <= set(BASELINES), s.name
        assert s.target is None or s.target.needs in (None, *RESULT_NAMES), s.name


def test_the_command_line_offers_every_scenario_in_order() -> None:
    parser = build_parser()
    scenario = next(a for a in parser._actions if a.dest == "scenario")
    assert list(scenario.choices or ()) == [s.name for s in SCENARIOS]
    help_text = parser.format_help()
    assert all(s.name in help_text for s in SCENARIOS)
    with pytest.raises(SystemExit):
        parser.parse_args(["--scenario", "no_such_scenario"])


def test_the_smoke_test_expects_every_registered_result() -> None:
    run = QuickRun(0, {"scenarios": []}, "", "", Path("."))
    assert run.problems() == [f"{name}: missing from the report" for name in RESULT_NAMES]


def test_the_figures_points_are_registered_results() -> None:
    assert BY_NAME["latency_at_load"].results + BY_NAME["overload"].results == LOAD_RESULTS
    assert BY_NAME["event_size"].results == SIZE_RESULTS


def _fake(events_per_sec: float) -> RunFn:
    """A registered scenario whose run returns an OK result of this rate at once."""

    def run(ctx: RunContext, folder: Path, progress: ProgressFn) -> ScenarioResult:
        result = ScenarioResult(folder.name, "fake", 1_000, status="OK")
        result.events_per_sec = events_per_sec
        return result

    return run


def test_ratios_notes_and_targets_come_from_the_registry(tmp_path: Path) -> None:
    rates = {
        "socket_file": 300_000.0,
        "socket_file_4clients": 450_000.0,
        "python_minimal": 100_000.0,
        "jupyter_events": 10_000.0,
        "rsyslog_json": 200_000.0,
        "http_batch": 75_000.0,
    }
    scenarios = [replace(BY_NAME[name], run=_fake(rate)) for name, rate in rates.items()]
    settings = RunSettings(1_000, 1_000, 1_000, SINGLE_SHAPE, quick=True)
    results = run_scenarios(scenarios, settings, tmp_path, Progress(io.StringIO()))
    by_name = {r.name: r for r in results}
    four = by_name["socket_file_4clients"]
    assert four.ratio_to_socket_file == 1.5
    assert four.ratio_to_python_minimal == 4.5
    assert four.ratio_to_jupyter_events == 45.0
    assert by_name["socket_file"].ratio_to_socket_file is None  # not its own baseline
    assert by_name["socket_file"].target_ratio == 0.75  # 1.5 x rsyslog_json, target 2x
    assert by_name["socket_file"].notes[0].startswith("1.50x rsyslog_json")
    assert by_name["http_batch"].target_ratio == 0.5
    assert by_name["http_batch"].ratio_to_jupyter_server_post is None  # not in the run
    assert by_name["http_batch"].notes == ["target >= 150,000 events/s: 0.50 of it (MISSED)"]


def test_a_scenario_that_raises_fails_each_of_its_results(tmp_path: Path) -> None:
    def crash(ctx: RunContext, folder: Path, progress: ProgressFn) -> ScenarioResult:
        raise RuntimeError("boom")

    scenario = replace(BY_NAME["overload"], run=crash)
    settings = RunSettings(1_000, 1_000, 1_000, SINGLE_SHAPE, quick=True)
    results = run_scenarios([scenario], settings, tmp_path, Progress(io.StringIO()))
    assert [r.name for r in results] == list(scenario.result_names)
    assert all(r.status == "FAILED" and "RuntimeError: boom" in r.problems[0] for r in results)


def test_a_target_set_by_the_run_gets_its_note_too(tmp_path: Path) -> None:
    def run(ctx: RunContext, folder: Path, progress: ProgressFn) -> list[ScenarioResult]:
        raw = ScenarioResult("nats_raw", "fake", 1_000, status="OK")
        sink = ScenarioResult("nats_sink", "fake", 1_000, status="OK", target="x", target_ratio=2)
        return [raw, sink]

    scenario = replace(BY_NAME["sink_nats"], run=run)
    settings = RunSettings(1_000, 1_000, 1_000, SINGLE_SHAPE, quick=True)
    raw, sink = run_scenarios([scenario], settings, tmp_path, Progress(io.StringIO()))
    assert raw.notes == []
    assert sink.notes == ["target x: 2.00 of it (met)"]
