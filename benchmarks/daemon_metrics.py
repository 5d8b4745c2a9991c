"""The daemon's latency histogram from GET /metrics, for its p99.9.

telemetryd's "stopped" log line gives each sink's accept-to-sink latency at p50 and p99
(telemetryd.daemon.snapshot); /metrics exposes the whole histogram
(`telemetryd_sink_latency_seconds`, fixed buckets from 50 us to 60 s, about three a decade:
telemetryd.core.latency.BUCKETS). The harness reads it once every record is written and computes
p50, p99 and p99.9 the way telemetryd does (Prometheus' histogram_quantile: linear inside the
bucket), so these agree with the "stopped" line and share its resolution: the bucket's width.
"""

from __future__ import annotations

import http.client
import re
import time
from dataclasses import dataclass

LATENCY_METRIC = "telemetryd_sink_latency_seconds_bucket"
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class HistogramQuantiles:
    count: int
    p50_secs: float
    p99_secs: float
    p999_secs: float


def scrape(port: int, timeout_secs: float = 10.0) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_secs)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode("utf-8", errors="replace")
        if response.status != 200:
            raise RuntimeError(f"GET /metrics answered {response.status}: {body[:200]}")
        return body
    finally:
        conn.close()


def latency_buckets(text: str, sink: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one sink's latency histogram, ascending."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or m["name"] != LATENCY_METRIC:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        if labels.get("sink") != sink:
            continue
        out.append((float(labels["le"]), float(m["value"])))
    return sorted(out)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of cumulative buckets, as telemetryd.core.latency.Histogram.quantile."""
    if not buckets or not buckets[-1][1]:
        return 0.0
    rank = q * buckets[-1][1]
    lower, seen = 0.0, 0.0
    for upper, cumulative in buckets:
        n = cumulative - seen
        if n and cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - seen) / n
        seen, lower = cumulative, upper
    return lower


def sink_latency(
    port: int, sink: str, expected: int, timeout_secs: float = 2.0
) -> HistogramQuantiles | None:
    """The sink's histogram once it counts `expected` events (a batch is counted just after
    its write returns, so the last one may lag the file by a moment); None if it never does,
    or if /metrics cannot be read."""
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            buckets = latency_buckets(scrape(port), sink)
        except (OSError, RuntimeError):
            return None
        count = int(buckets[-1][1]) if buckets else 0
        if count >= expected or time.monotonic() > deadline:
            if not count:
                return None
            return HistogramQuantiles(
                count,
                bucket_quantile(buckets, 0.5),
                bucket_quantile(buckets, 0.99),
                bucket_quantile(buckets, 0.999),
            )
        time.sleep(0.02)
