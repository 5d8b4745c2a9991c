from __future__ import annotations

import pytest

from telemetryd.core.latency import LatencyHistogram
from telemetryd.core.record import Record


def records(received: list[float]) -> list[Record]:
    return [Record("s", "1", b"{}", r) for r in received]


def test_quantiles_interpolate_within_buckets_and_count_every_record() -> None:
    histogram = LatencyHistogram(buckets=(0.001, 0.01, 0.1, float("inf")))
    # 90 records 0.5 ms old, 9 records 5 ms old, 1 record 50 ms old, in runs as chunks arrive
    histogram.observe_batch(records([10.0] * 45 + [9.995] * 9 + [10.0] * 45 + [9.95]), 10.0005)
    assert histogram.count == 100
    assert histogram.counts == [90, 9, 1, 0]
    assert histogram.quantile(0.5) == pytest.approx(0.001 * 50 / 90)
    assert 0.001 < histogram.quantile(0.95) <= 0.01
    assert 0.01 < histogram.quantile(0.999) <= 0.1
    assert histogram.sum == pytest.approx(90 * 0.0005 + 9 * 0.0055 + 0.0505)


def test_empty_histogram_and_the_open_bucket() -> None:
    histogram = LatencyHistogram(buckets=(0.001, float("inf")))
    assert histogram.quantile(0.5) == 0.0
    histogram.observe_batch(records([0.0]), 100.0)
    assert histogram.quantile(0.99) == 0.001  # the open bucket reports its lower bound
