"""The run's figures: a PNG plot of throughput and latency against load, and SUMMARY.md.

- `bench-<stamp>.png`, next to the run's JSON: (1) latency (p50/p99/p99.9) against the
  offered load, from latency_25pct .. overload_10x; (2) the achieved rate (the load's sends
  and the delivered records) against the offered one; (3) the daemon's peak RSS against the
  offered load; (4) events/s and MB/s against event size (event_size_*). Drawn with
  matplotlib (the `bench` extra); without it the plot is skipped, with a note.
- `SUMMARY.md` in the same folder: every result in a table, the load and size points in
  tables of their own, the notes, and the run's plot (linked: `bench-<stamp>.png`). Written by
  a full run, and by a --quick run only when --output is given (so a quick run never replaces
  the committed summary in benchmarks/results/).

`python -m benchmarks.figures benchmarks/results/bench-<stamp>.json [--summary]` draws them
again from a saved report (after installing matplotlib, say), without running anything.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from benchmarks.registry import results_of
from benchmarks.scenarios import ScenarioResult

#: The points of the load figure and table (latency_*, overload_*) and of the size ones.
LOAD_RESULTS = results_of("load")
SIZE_RESULTS = results_of("size")
NO_MATPLOTLIB = (
    "no plot: matplotlib is not installed (it is in the `bench` extra: `pip install -e '.[bench]'`)"
)


def _mb(value: float | None) -> float | None:
    return None if value is None else value / (1024 * 1024)


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def load_points(results: list[ScenarioResult]) -> list[ScenarioResult]:
    by_name = {r.name: r for r in results}
    return [by_name[n] for n in LOAD_RESULTS if n in by_name and by_name[n].ok]


def size_points(results: list[ScenarioResult]) -> list[ScenarioResult]:
    by_name = {r.name: r for r in results}
    return [by_name[n] for n in SIZE_RESULTS if n in by_name and by_name[n].ok]


def plot(results: list[ScenarioResult], path: Path) -> str | None:
    """Draws the plot into `path`; None when drawn, or why not."""
    loads = load_points(results)
    sizes = size_points(results)
    if not loads and not sizes:
        return "no plot: no latency_*, overload_* or event_size_* result in this run"
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return NO_MATPLOTLIB
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    ticker: Any = importlib.import_module("matplotlib.ticker")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    commas = ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")

    def log_axis_with_commas(axis: Any) -> None:
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(commas)
        axis.set_minor_formatter(ticker.NullFormatter())

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    (lat_ax, rate_ax), (rss_ax, size_ax) = axes
    x = [r.details["offered_fraction_of_max"] for r in loads]
    if loads:
        for attr, label, style in (
            ("latency_p50_secs", "p50", "o-"),
            ("latency_p99_secs", "p99", "s-"),
            ("latency_p999_secs", "p99.9", "^-"),
        ):
            lat_ax.plot(x, [_ms(getattr(r, attr)) for r in loads], style, label=label)
        lat_ax.set_xscale("log")
        lat_ax.set_yscale("log")
        lat_ax.set_xticks(x)
        lat_ax.xaxis.set_major_formatter(plain)
        lat_ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        lat_ax.yaxis.set_major_formatter(plain)
        lat_ax.yaxis.set_minor_formatter(plain)
        lat_ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        lat_ax.set_xlabel("offered load (x the maximum rate measured in this run)")
        lat_ax.set_ylabel("send to visible in the file, ms")
        lat_ax.set_title("Latency against load")
        lat_ax.legend()
        lat_ax.grid(True, which="both", alpha=0.3)

        offered = [r.details["offered_events_per_sec"] for r in loads]
        rate_ax.plot(offered, offered, "k--", linewidth=1, label="offered")
        rate_ax.plot(
            offered,
            [r.details.get("achieved_send_events_per_sec") for r in loads],
            "o-",
            label="the load's sends",
        )
        rate_ax.plot(offered, [r.events_per_sec for r in loads], "s-", label="delivered")
        rate_ax.axhline(
            loads[0].details["max_rate"]["events_per_sec"],
            color="grey",
            linestyle=":",
            linewidth=1,
            label="maximum (socket_file)",
        )
        rate_ax.set_xscale("log")
        rate_ax.set_yscale("log")
        log_axis_with_commas(rate_ax.xaxis)
        log_axis_with_commas(rate_ax.yaxis)
        rate_ax.tick_params(axis="x", labelrotation=30)
        rate_ax.set_xlabel("offered events/s")
        rate_ax.set_ylabel("events/s")
        rate_ax.set_title("Achieved against offered rate (back-pressure)")
        rate_ax.legend()
        rate_ax.grid(True, which="both", alpha=0.3)

        rss_ax.plot(x, [_mb(r.peak_rss_bytes) for r in loads], "o-", label="daemon peak RSS")
        socket_file = next((r for r in results if r.name == "socket_file" and r.ok), None)
        if socket_file is not None and socket_file.peak_rss_bytes:
            rss_ax.axhline(
                _mb(socket_file.peak_rss_bytes),
                color="grey",
                linestyle=":",
                label="socket_file (unpaced)",
            )
        rss_ax.set_xscale("log")
        rss_ax.set_xticks(x)
        rss_ax.xaxis.set_major_formatter(plain)
        rss_ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        peaks = [_mb(r.peak_rss_bytes) or 0.0 for r in loads]
        if socket_file is not None and socket_file.peak_rss_bytes:
            peaks.append(_mb(socket_file.peak_rss_bytes) or 0.0)
        rss_ax.set_ylim(0, max(peaks) * 1.25 or 1)
        rss_ax.set_xlabel("offered load (x the maximum rate)")
        rss_ax.set_ylabel("MiB")
        rss_ax.set_title("Daemon memory against load")
        rss_ax.legend()
        rss_ax.grid(True, which="both", alpha=0.3)
    if sizes:
        line_bytes = [r.details["line_bytes"] for r in sizes]
        size_ax.plot(line_bytes, [r.events_per_sec for r in sizes], "o-", label="events/s")
        size_ax.set_xscale("log")
        size_ax.set_yscale("log")
        size_ax.set_xticks(line_bytes)
        size_ax.xaxis.set_major_formatter(commas)
        size_ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        log_axis_with_commas(size_ax.yaxis)
        size_ax.set_xlabel("event line size, bytes")
        size_ax.set_ylabel("events/s")
        mb_ax = size_ax.twinx()
        mb_ax.plot(
            line_bytes,
            [r.details.get("input_mb_per_sec") for r in sizes],
            "s--",
            color="tab:orange",
            label="MB/s",
        )
        mb_ax.set_ylabel("MB/s of input")
        size_ax.set_title("Throughput against event size")
        handles = size_ax.get_legend_handles_labels()
        more = mb_ax.get_legend_handles_labels()
        size_ax.legend(handles[0] + more[0], handles[1] + more[1], loc="center left")
        size_ax.grid(True, which="both", alpha=0.3)
    for ax in (lat_ax, rate_ax, rss_ax, size_ax):
        if not ax.has_data():
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _cell(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value * scale, spec)


def _latency(r: ScenarioResult) -> str:
    return r.latency_text(separator=" / ", unmeasured="")


def summary_markdown(
    results: list[ScenarioResult],
    report: dict[str, Any],
    json_name: str,
    png_name: str | None,
    plot_note: str | None,
) -> str:
    machine = report.get("machine", {})
    lines = [
        "# Benchmark summary",
        "",
        f"Written by `python -m benchmarks` (benchmarks/figures.py); the run's JSON is "
        f"[`{json_name}`]({json_name}).",
        "",
        f"- started {report.get('started_at')}, {report.get('duration_secs')} s, "
        f"{'**quick** (counts only, not speed), ' if report.get('quick') else ''}"
        f"{report.get('events'):,} events a scenario unless capped",
        f"- command: `{' '.join(['python', *report.get('command', [])[1:]])}`",
        f"- machine: {machine.get('cpu_model')}, {machine.get('cpus_usable')} usable CPUs, "
        f"Python {machine.get('python')}, commit {str(machine.get('git_commit'))[:12]}",
        f"- result: {'every scenario OK' if report.get('ok') else '**some scenarios FAILED**'}",
        "",
    ]
    if png_name is not None:
        lines += [f"![Throughput and latency against load]({png_name})", ""]
    elif plot_note:
        lines += [f"({plot_note})", ""]
    lines += [
        "## Every result",
        "",
        "| scenario | events | events/s | x jupyter_events | x python_minimal | x socket_file "
        "| CPU s daemon | peak RSS MiB | p50 / p99 / p99.9 ms | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.events:,} | {_cell(r.events_per_sec, ',.0f')} "
            f"| {_cell(r.ratio_to_jupyter_events, '.1f')} "
            f"| {_cell(r.ratio_to_python_minimal, '.2f')} "
            f"| {_cell(r.ratio_to_socket_file, '.2f')} | {_cell(r.cpu_secs_server, '.2f')} "
            f"| {_cell(_mb(r.peak_rss_bytes), '.0f')} | {_latency(r)} | {r.status} |"
        )
    loads = load_points(results)
    if loads:
        lines += [
            "",
            "## Latency and overload",
            "",
            "A paced load (10 ms ticks, open loop) at fractions and multiples of the maximum "
            "rate measured in this run; latency from the load's send to the line's appearance "
            "in the file sink's file (benchmarks/latency_load.py; resolution about one read "
            "of the file, ~1 ms).",
            "",
            "| result | offered events/s | x max | load's sends/s | delivered events/s "
            "| p50 / p99 / p99.9 ms | max lag s | daemon peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in loads:
            d = r.details
            lines.append(
                f"| {r.name} | {d['offered_events_per_sec']:,.0f} "
                f"| {d['offered_fraction_of_max']:g} "
                f"| {_cell(d.get('achieved_send_events_per_sec'), ',.0f')} "
                f"| {_cell(r.events_per_sec, ',.0f')} | {_latency(r)} "
                f"| {_cell(d.get('max_lag_secs'), '.3f')} | {_cell(_mb(r.peak_rss_bytes), '.0f')} |"
            )
    sizes = size_points(results)
    if sizes:
        lines += [
            "",
            "## Event size",
            "",
            "| result | line bytes | events | events/s | MB/s | x socket_file |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in sizes:
            lines.append(
                f"| {r.name} | {r.details['line_bytes']:,} | {r.events:,} "
                f"| {_cell(r.events_per_sec, ',.0f')} "
                f"| {_cell(r.details.get('input_mb_per_sec'), ',.1f')} "
                f"| {_cell(r.ratio_to_socket_file, '.2f')} |"
            )
    notes = [f"- {r.name}: {note}" for r in results for note in r.notes]
    notes += [f"- {r.name}: FAILED: {p.splitlines()[0]}" for r in results for p in r.problems]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def write_figures(
    results: list[ScenarioResult],
    report: dict[str, Any],
    output: Path,
    stamp: str,
    *,
    summary: bool,
) -> list[str]:
    """Writes the plot (and, if `summary`, SUMMARY.md and summary.png); lines to print."""
    out: list[str] = []
    png = output / f"bench-{stamp}.png"
    try:
        note = plot(results, png)
    except Exception as e:  # a figure never fails a run that measured
        note = f"no plot: {type(e).__name__}: {e}"
    out.append(f"plot: {png}" if note is None else note)
    if summary:
        png_name = png.name if note is None else None
        text = summary_markdown(results, report, f"bench-{stamp}.json", png_name, note)
        path = output / "SUMMARY.md"
        path.write_text(text, encoding="utf-8")
        out.append(f"summary: {path}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.figures",
        description="Draw a saved report's plot (and SUMMARY.md) again, beside the report.",
    )
    parser.add_argument("report", type=Path, help="a bench-<stamp>.json of benchmarks/results")
    parser.add_argument("--summary", action="store_true", help="rewrite SUMMARY.md as well")
    args = parser.parse_args(argv)
    path: Path = args.report
    report = json.loads(path.read_text(encoding="utf-8"))
    results = [ScenarioResult(**s) for s in report["scenarios"]]
    stamp = path.stem.removeprefix("bench-")
    for line in write_figures(results, report, path.parent, stamp, summary=args.summary):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
