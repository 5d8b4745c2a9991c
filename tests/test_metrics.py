"""/metrics: what a Prometheus user sees of the daemon's counters, parsed back from the text."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from telemetryd import __version__
from telemetryd.core.latency import BUCKETS
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.delivery.sink_worker import SinkWorker
from telemetryd.metrics import make_registry, render
from telemetryd_sinks.blackhole import BlackholeSettings, BlackholeSink

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def parse(body: bytes) -> Samples:
    """Every sample of the exposition: {sample name: {labels: value}}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def scrape(sources: Sequence[ComponentStats] = (), workers: Sequence[SinkWorker] = ()) -> Samples:
    body, content_type = render(make_registry(lambda: sources, lambda: workers))
    assert content_type.startswith("text/plain; version=")
    return parse(body)


def records(count: int, received: float | None = None) -> list[Record]:
    now = time.monotonic() if received is None else received
    return [
        Record(schema_id="urn:test", version="1", payload=b'{"i":%d}' % i, received=now)
        for i in range(count)
    ]


def worker(**overrides: Any) -> SinkWorker:
    settings = BlackholeSettings.model_validate(
        {"name": "void", "type": "blackhole", "batch_max_delay_secs": 0, **overrides}
    )
    stats = ComponentStats("sink", settings.name)
    queue = SinkQueue(
        settings.queue_max_events, settings.queue_max_bytes, settings.when_full, stats
    )
    return SinkWorker(BlackholeSink(settings), queue, stats)


def test_source_counters_by_source_and_reason() -> None:
    unix = ComponentStats("source", "unix", received=10, sent=6)
    unix.rejected.update({"invalid_json": 2, "unknown_schema": 1})
    unix.dropped["shutdown_timeout"] = 1
    unix.errors["ConnectionResetError"] = 3
    http = ComponentStats("source", "http", received=4, sent=4)

    samples = scrape(sources=[unix, http])

    assert value(samples, "telemetryd_source_received_events_total", source="unix") == 10
    assert value(samples, "telemetryd_source_accepted_events_total", source="unix") == 6
    assert value(samples, "telemetryd_source_received_events_total", source="http") == 4
    rejected = "telemetryd_source_rejected_events_total"
    assert value(samples, rejected, source="unix", reason="invalid_json") == 2
    assert value(samples, rejected, source="unix", reason="unknown_schema") == 1
    dropped = "telemetryd_source_dropped_events_total"
    assert value(samples, dropped, source="unix", reason="shutdown_timeout") == 1
    errors = "telemetryd_source_errors_total"
    assert value(samples, errors, source="unix", kind="ConnectionResetError") == 3
    assert len(samples[rejected]) == 2  # nothing invented for the http source


@pytest.mark.anyio
async def test_sink_delivery_counts_and_latency_histogram() -> None:
    sink = worker(batch_max_events=2)
    await sink.queue.put_many(records(5))
    sink.queue.close()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
    assert isinstance(sink.sink, BlackholeSink)
    assert sink.sink.records == 5

    samples = scrape(workers=[sink])

    assert value(samples, "telemetryd_sink_received_events_total", sink="void") == 5
    assert value(samples, "telemetryd_sink_sent_events_total", sink="void") == 5
    assert value(samples, "telemetryd_sink_batches_total", sink="void") == 3
    assert value(samples, "telemetryd_sink_retries_total", sink="void") == 0
    assert value(samples, "telemetryd_sink_queue_events", sink="void") == 0
    assert value(samples, "telemetryd_sink_queue_bytes", sink="void") == 0
    assert value(samples, "telemetryd_sink_healthy", sink="void") == 1
    assert "telemetryd_sink_dropped_events_total" not in samples

    buckets = {
        dict(labels)["le"]: count
        for labels, count in samples["telemetryd_sink_latency_seconds_bucket"].items()
    }
    assert len(buckets) == len(BUCKETS)
    counts = [buckets[le] for le in sorted(buckets, key=float)]
    assert counts == sorted(counts)  # cumulative
    assert buckets["+Inf"] == 5
    assert value(samples, "telemetryd_sink_latency_seconds_count", sink="void") == 5
    latency_sum = value(samples, "telemetryd_sink_latency_seconds_sum", sink="void")
    assert 0 <= latency_sum < 5 * 5.0
    # batches of 2, 2 and 1 events
    size = "telemetryd_sink_batch_size_events"
    assert value(samples, size + "_bucket", sink="void", le="1.0") == 1
    assert value(samples, size + "_bucket", sink="void", le="2.0") == 3
    assert value(samples, size + "_count", sink="void") == 3
    assert value(samples, size + "_sum", sink="void") == 5


def test_histogram_buckets_hold_what_fell_at_or_below_them() -> None:
    sink = worker()
    sink.latency.observe_batch(records(3, received=0.0), now=0.003)  # 3 ms each
    sink.latency.observe_batch(records(1, received=0.0), now=100.0)  # beyond the last bound
    samples = scrape(workers=[sink])
    bucket = "telemetryd_sink_latency_seconds_bucket"
    assert value(samples, bucket, sink="void", le="0.0025") == 0
    assert value(samples, bucket, sink="void", le="0.005") == 3
    assert value(samples, bucket, sink="void", le="60.0") == 3
    assert value(samples, bucket, sink="void", le="+Inf") == 4
    assert value(samples, "telemetryd_sink_latency_seconds_count", sink="void") == 4
    assert math.isclose(value(samples, "telemetryd_sink_latency_seconds_sum", sink="void"), 100.009)


@pytest.mark.anyio
async def test_queue_depth_and_drops_by_reason() -> None:
    newest = worker(name="newest", when_full="drop_newest", queue_max_events=3)
    oldest = worker(name="oldest", when_full="drop_oldest", queue_max_events=3)
    for sink in (newest, oldest):
        await sink.queue.put_many(records(5))  # no worker running: the queue fills up

    samples = scrape(workers=[newest, oldest])

    for name in ("newest", "oldest"):
        assert value(samples, "telemetryd_sink_received_events_total", sink=name) == 5
        assert value(samples, "telemetryd_sink_sent_events_total", sink=name) == 0
        assert value(samples, "telemetryd_sink_queue_events", sink=name) == 3
        assert value(samples, "telemetryd_sink_queue_bytes", sink=name) == 3 * len(b'{"i":0}')
        assert value(samples, "telemetryd_sink_queue_max_events", sink=name) == 3
        assert value(samples, "telemetryd_sink_queue_max_bytes", sink=name) == 32 * 1024 * 1024
    dropped = "telemetryd_sink_dropped_events_total"
    assert samples[dropped] == {
        frozenset({("sink", "newest"), ("reason", "queue_full")}): 2,
        frozenset({("sink", "oldest"), ("reason", "evicted_oldest")}): 2,
    }


@pytest.mark.anyio
async def test_failing_sink_reads_unhealthy_until_it_recovers() -> None:
    # Every attempt takes 0.1 s; the first fails. While the retry is under way the sink has
    # failed and not yet recovered, so a scrape then must see it unhealthy.
    sink = worker(fail_batches=1, delay_secs=0.1, retry_initial_secs=0.001)
    await sink.queue.put_many(records(4))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.run)
            while not sink.retries:  # no event to wait on: the worker has no hook
                await anyio.lowlevel.checkpoint()
            failing = scrape(workers=[sink])
            sink.queue.close()
    recovered = scrape(workers=[sink])

    assert value(failing, "telemetryd_sink_healthy", sink="void") == 0
    errors = "telemetryd_sink_errors_total"
    assert value(failing, errors, sink="void", kind="SimulatedSinkError") == 1
    assert value(failing, "telemetryd_sink_retries_total", sink="void") == 1
    assert value(failing, "telemetryd_sink_inflight_events", sink="void") == 4
    assert value(failing, "telemetryd_sink_queue_events", sink="void") == 0
    assert value(failing, "telemetryd_sink_sent_events_total", sink="void") == 0

    assert value(recovered, "telemetryd_sink_healthy", sink="void") == 1
    assert value(recovered, "telemetryd_sink_sent_events_total", sink="void") == 4
    assert value(recovered, "telemetryd_sink_inflight_events", sink="void") == 0
    assert value(recovered, "telemetryd_sink_latency_seconds_count", sink="void") == 4
    assert value(recovered, errors, sink="void", kind="SimulatedSinkError") == 1


def test_build_info_and_the_standard_collectors() -> None:
    samples = scrape()
    assert value(samples, "telemetryd_build_info", version=__version__) == 1
    assert "python_info" in samples
    # Every family is described even with nothing to report yet.
    body, _ = render(make_registry(list, list))
    assert b"# TYPE telemetryd_sink_latency_seconds histogram" in body
    assert b"# TYPE telemetryd_source_received_events_total counter" in body


def test_registries_are_independent_of_the_global_one() -> None:
    before = {m.name for m in REGISTRY.collect()}
    first = make_registry(list, list)
    second = make_registry(list, list)  # a second daemon in one process: no clash
    assert first is not second
    assert {m.name for m in REGISTRY.collect()} == before
    assert not any(name.startswith("telemetryd_") for name in before)


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    stats = ComponentStats("source", "unix", received=2, sent=2)
    body, content_type = render(
        make_registry(lambda: [stats], list),
        "application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
    )
    assert content_type.startswith("application/openmetrics-text")
    assert b"# UNIT telemetryd_sink_latency_seconds seconds\n" in body
    assert b"# TYPE telemetryd_source_received_events counter\n" in body
    assert b'telemetryd_source_received_events_total{source="unix"} 2.0\n' in body
    assert body.endswith(b"# EOF\n")
