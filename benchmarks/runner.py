"""Orchestration: run the chosen scenarios, print the table, write the JSON report."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from benchmarks.comparisons import TARGET_BATCH_EVENTS_PER_SEC, TARGET_SINGLE_X_JUPYTER_SERVER
from benchmarks.events import REPO_ROOT
from benchmarks.figures import write_figures
from benchmarks.registry import BASELINES, BY_NAME, BY_RESULT, SCENARIOS, SINGLE_SHAPE, Scenario
from benchmarks.run_context import RunContext, RunSettings
from benchmarks.scenarios import HttpLoadShape, ProgressFn, ScenarioResult, failed

DEFAULT_EVENTS = 1_000_000
QUICK_EVENTS = 20_000
JUPYTER_EVENTS_CAP = 200_000
#: Events of http_single and jupyter_server_post (one request each; Jupyter Server answers
#: some hundreds a second), by default and with --quick.
HTTP_SINGLE_CAP = 30_000
QUICK_HTTP_SINGLE_CAP = 2_000
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


def _scenarios_help() -> str:
    """The scenarios in the order they run, each with its summary and its results' names."""
    lines = ["scenarios:"]
    for s in SCENARIOS:
        text = s.summary + (f" (results: {', '.join(s.results)})" if s.results else "")
        lines += textwrap.wrap(
            text, width=96, initial_indent=f"  {s.name:<28}", subsequent_indent=" " * 30
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark telemetryd against jupyter_events, a minimal Python pipeline and the\n"
            "machine's floor."
        ),
        epilog=_scenarios_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        choices=list(BY_NAME),
        metavar="NAME",
        help=f"run only this scenario (repeatable; default all): {', '.join(BY_NAME)}",
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
    scenarios: list[Scenario], settings: RunSettings, workdir: Path, progress: Progress
) -> list[ScenarioResult]:
    """Runs each scenario in workdir / its name; a scenario that raises gets a FAILED result
    for each of its results. Then the ratios to the baselines, the notes and the targets."""
    run = RunContext(settings, workdir)
    for scenario in scenarios:
        update = progress.scenario(scenario.name)
        try:
            out = scenario.run(run, workdir / scenario.name, update)
            group = out if isinstance(out, list) else [out]
        except Exception as e:
            group = [failed(name, settings.events, e) for name in scenario.result_names]
        for result in group:
            progress.end(result)
            run.results.append(result)
    _ratios(run.results)
    _notes_and_targets(run)
    return run.results


def _ratios(results: list[ScenarioResult]) -> None:
    """Each result's events/s over its scenario's baselines' (those OK in this run)."""
    baselines = {r.name: r for r in results if r.ok and r.events_per_sec and r.name in BASELINES}
    for r in results:
        scenario = BY_RESULT.get(r.name)
        if not r.events_per_sec or scenario is None:
            continue
        for name in scenario.compared_with:
            base = baselines.get(name)
            if base is not None and base.events_per_sec:
                setattr(r, BASELINES[name], r.events_per_sec / base.events_per_sec)


def _notes_and_targets(run: RunContext) -> None:
    """Each scenario's notes on its results and its target; then a note on every result with a
    target (the registry's, or one its run set, like the sink scenarios') whether it was met."""
    for r in run.results:
        scenario = BY_RESULT.get(r.name)
        if scenario is None:
            continue
        if scenario.notes is not None:
            scenario.notes(r, run)
        target = scenario.target
        if target is not None and (target.needs is None or run.result(target.needs) is not None):
            r.target = target.text
            r.target_ratio = target.ratio(r) if r.ok else None
    for r in run.results:
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
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="telemetryd-bench-"))
    t0 = time.perf_counter()
    try:
        settings = RunSettings(
            events,
            jupyter_events_max=args.jupyter_events_max,
            http_single_max=args.http_single_max
            or (QUICK_HTTP_SINGLE_CAP if args.quick else HTTP_SINGLE_CAP),
            single_shape=HttpLoadShape(args.http_processes, args.http_connections),
            quick=args.quick,
        )
        results = run_scenarios(scenarios, settings, workdir, progress)
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
