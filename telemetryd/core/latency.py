"""Histograms with fixed buckets (cheap to update, mergeable): accept-to-sink latency and batch
sizes, read by telemetryd.metrics at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter

from telemetryd.core.record import Record

_received = attrgetter("received")

#: Upper bounds in seconds: 50 µs to 60 s, roughly three buckets a decade.
BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"),
)  # fmt: skip


#: Upper bounds of batch sizes, in events.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, float("inf"),
)  # fmt: skip


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated inside its bucket as Prometheus' histogram_quantile does;
        0.0 with no observations."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        lower = 0.0
        for upper, n in zip(self.buckets, self.counts, strict=True):
            if n and seen + n >= rank:
                if upper == float("inf"):
                    return lower
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
            lower = upper
        return lower


class LatencyHistogram(Histogram):
    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        super().__init__(buckets)

    def observe_batch(self, batch: Sequence[Record], now: float) -> None:
        """Records read in one chunk share `received`: one bisect per run of them, and the
        run is counted in C (groupby, len) rather than record by record."""
        buckets = self.buckets
        counts = self.counts
        total = 0.0
        for received, run in groupby(batch, key=_received):
            latency = now - received
            n = len(list(run))
            counts[bisect_left(buckets, latency)] += n
            total += latency * n
        self.count += len(batch)
        self.sum += total
