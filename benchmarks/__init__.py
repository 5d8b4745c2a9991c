"""telemetryd's benchmark harness: `python -m benchmarks` (or `make bench`).

The scenarios are listed, in the order they run, in benchmarks.registry (one Scenario entry
each: its name, how it runs, its results and what they are compared with); `python -m
benchmarks --help` prints them. The runs themselves are in benchmarks.scenarios and the
modules beside it.

Besides the JSON report, a run writes a PNG plot of latency, throughput and memory against load
and event size (benchmarks.figures, with matplotlib) and, unless it is --quick without
--output, SUMMARY.md.

Every scenario counts the records that reached its output file; a run that loses (or
duplicates) events is FAILED, never fast. `--quick` is the CI smoke test: it checks counts,
never speed. The issue's targets (http_batch >= 150k events/s, http_single >= 10x
jupyter_server_post) are reported as ratios, never asserted.
"""
