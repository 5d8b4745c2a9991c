"""Prometheus metrics, read from the daemon's plain counters at scrape time.

Nothing on the hot path goes through prometheus_client: sources and sink workers bump plain
integers (`telemetryd.core.stats.ComponentStats`, `SinkWorker.batches`, `SinkWorker.retries`, the
`LatencyHistogram`), and `DaemonCollector` turns them into metric families when `/metrics` is
scraped. `make_registry` builds the registry the HTTP API serves; `render` encodes it.

Sources, by `source` (the source's name, e.g. ``unix``):

=================================================  =========  ===================================
metric                                             type       meaning
=================================================  =========  ===================================
``telemetryd_source_received_events_total``        counter    events read from clients
``telemetryd_source_accepted_events_total``        counter    events validated and put on the bus
``telemetryd_source_rejected_events_total``        counter    bad input, by ``reason``
``telemetryd_source_dropped_events_total``         counter    good events lost, by ``reason``
``telemetryd_source_errors_total``                 counter    errors, by ``kind``
=================================================  =========  ===================================

Sinks, by `sink` (the sink's configured name; the dead-letter sink is one of them):

=================================================  =========  ===================================
``telemetryd_sink_received_events_total``          counter    events routed to the sink's queue
``telemetryd_sink_sent_events_total``              counter    events the sink took (delivered)
``telemetryd_sink_dropped_events_total``           counter    events lost, by ``reason``
                                                              (``queue_full``, ``evicted_oldest``,
                                                              ``shutdown_timeout``, ...)
``telemetryd_sink_errors_total``                   counter    failed writes, by ``kind`` (the
                                                              exception's class name)
``telemetryd_sink_retries_total``                  counter    batch writes retried
``telemetryd_sink_batches_total``                  counter    batches delivered
``telemetryd_sink_queue_events``                   gauge      events waiting in the queue
``telemetryd_sink_queue_bytes``                    gauge      bytes waiting in the queue
``telemetryd_sink_inflight_events``                gauge      events of the batch being delivered
                                                              (they still count against the
                                                              queue's limits)
``telemetryd_sink_queue_max_events``               gauge      the queue's limit, in events
``telemetryd_sink_queue_max_bytes``                gauge      the queue's limit, in bytes
``telemetryd_sink_healthy``                        gauge      1 if the sink is healthy, else 0
``telemetryd_sink_latency_seconds``                histogram  accept to delivered, per event
``telemetryd_sink_batch_size_events``              histogram  events per delivered batch
=================================================  =========  ===================================

Live subscribers (GET /api/events/subscribe), all together:

=================================================  =========  ===================================
``telemetryd_subscribers``                         gauge      subscriptions open now
``telemetryd_subscriber_received_events_total``    counter    records offered to subscribers
``telemetryd_subscriber_sent_events_total``        counter    records written to subscribers
``telemetryd_subscriber_dropped_events_total``     counter    records a subscriber missed, by
                                                              ``reason`` (too slow:
                                                              ``subscriber_queue_full``; gone
                                                              or stopped: ``subscriber_closed``)
=================================================  =========  ===================================

And ``telemetryd_build_info{version}``, a gauge of 1. `make_registry` adds prometheus_client's
process (``process_*``, on Linux), platform (``python_info``) and garbage collector
(``python_gc_*``) collectors.

`collect` reads mutable counters without locks: call `render` on the event loop's thread, as
the HTTP API does, not from a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from telemetryd import __version__
from telemetryd.core.latency import Histogram
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.sink_worker import SinkWorker
from telemetryd.delivery.subscribers import SubscriberHub

__all__ = ["DaemonCollector", "make_registry", "render"]

PREFIX = "telemetryd_"


def _le(bound: float) -> str:
    """A bucket bound as the `le` label, spelled as Prometheus spells it."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def histogram_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, ending with +Inf = the number of observations."""
    buckets = [
        (_le(bound), float(total))
        for bound, total in zip(histogram.buckets, accumulate(histogram.counts), strict=True)
        if bound != math.inf
    ]
    buckets.append(("+Inf", float(histogram.count)))
    return buckets


class _SourceFamilies:
    def __init__(self) -> None:
        self.received = CounterMetricFamily(
            PREFIX + "source_received_events",
            "Events read from clients by the source.",
            labels=["source"],
        )
        self.accepted = CounterMetricFamily(
            PREFIX + "source_accepted_events",
            "Events the source validated and put on the bus.",
            labels=["source"],
        )
        self.rejected = CounterMetricFamily(
            PREFIX + "source_rejected_events",
            "Bad input the source refused, by reason.",
            labels=["source", "reason"],
        )
        self.dropped = CounterMetricFamily(
            PREFIX + "source_dropped_events",
            "Good events the source lost, by reason.",
            labels=["source", "reason"],
        )
        self.errors = CounterMetricFamily(
            PREFIX + "source_errors",
            "Errors in the source, by kind.",
            labels=["source", "kind"],
        )

    def add(self, stats: ComponentStats) -> None:
        name = stats.name
        self.received.add_metric([name], stats.received)
        self.accepted.add_metric([name], stats.sent)
        for reason, count in stats.rejected.items():
            self.rejected.add_metric([name, reason], count)
        for reason, count in stats.dropped.items():
            self.dropped.add_metric([name, reason], count)
        for kind, count in stats.errors.items():
            self.errors.add_metric([name, kind], count)

    def families(self) -> Iterator[Metric]:
        yield from (self.received, self.accepted, self.rejected, self.dropped, self.errors)


class _SinkFamilies:
    def __init__(self) -> None:
        sink = ["sink"]
        self.received = CounterMetricFamily(
            PREFIX + "sink_received_events", "Events routed to the sink's queue.", labels=sink
        )
        self.sent = CounterMetricFamily(
            PREFIX + "sink_sent_events", "Events the sink took (delivered).", labels=sink
        )
        self.dropped = CounterMetricFamily(
            PREFIX + "sink_dropped_events",
            "Events meant for the sink that were lost, by reason.",
            labels=["sink", "reason"],
        )
        self.errors = CounterMetricFamily(
            PREFIX + "sink_errors",
            "Failed batch writes, by kind (the exception's class name).",
            labels=["sink", "kind"],
        )
        self.retries = CounterMetricFamily(
            PREFIX + "sink_retries", "Batch writes retried after a failure.", labels=sink
        )
        self.batches = CounterMetricFamily(
            PREFIX + "sink_batches", "Batches delivered to the sink.", labels=sink
        )
        self.queue_events = GaugeMetricFamily(
            PREFIX + "sink_queue_events", "Events waiting in the sink's queue.", labels=sink
        )
        self.queue_bytes = GaugeMetricFamily(
            PREFIX + "sink_queue_bytes",
            "Bytes waiting in the sink's queue.",
            labels=sink,
            unit="bytes",
        )
        self.inflight_events = GaugeMetricFamily(
            PREFIX + "sink_inflight_events",
            "Events of the batch being delivered; they still count against the queue's limits.",
            labels=sink,
        )
        self.queue_max_events = GaugeMetricFamily(
            PREFIX + "sink_queue_max_events", "The sink queue's limit, in events.", labels=sink
        )
        self.queue_max_bytes = GaugeMetricFamily(
            PREFIX + "sink_queue_max_bytes",
            "The sink queue's limit, in bytes.",
            labels=sink,
            unit="bytes",
        )
        self.healthy = GaugeMetricFamily(
            PREFIX + "sink_healthy", "1 if the sink is healthy, 0 if not.", labels=sink
        )
        self.latency = HistogramMetricFamily(
            PREFIX + "sink_latency_seconds",
            "Time from the daemon accepting an event to the sink taking it.",
            labels=sink,
            unit="seconds",
        )
        self.batch_size = HistogramMetricFamily(
            PREFIX + "sink_batch_size_events", "Events per batch delivered.", labels=sink
        )

    def add(self, worker: SinkWorker) -> None:
        stats = worker.stats
        name = [worker.name]
        self.received.add_metric(name, stats.received)
        self.sent.add_metric(name, stats.sent)
        for reason, count in stats.dropped.items():
            self.dropped.add_metric([worker.name, reason], count)
        for kind, count in stats.errors.items():
            self.errors.add_metric([worker.name, kind], count)
        self.retries.add_metric(name, worker.retries)
        self.batches.add_metric(name, worker.batches)
        queue = worker.queue.statistics()
        self.queue_events.add_metric(name, queue.queued_events)
        self.queue_bytes.add_metric(name, queue.queued_bytes)
        self.inflight_events.add_metric(name, queue.inflight_events)
        self.queue_max_events.add_metric(name, queue.max_events)
        self.queue_max_bytes.add_metric(name, queue.max_bytes)
        self.healthy.add_metric(name, 1 if _healthy(worker) else 0)
        latency = worker.latency
        self.latency.add_metric(name, histogram_buckets(latency), latency.sum)
        sizes = worker.batch_sizes
        self.batch_size.add_metric(name, histogram_buckets(sizes), sizes.sum)

    def families(self) -> Iterator[Metric]:
        yield from (
            self.received,
            self.sent,
            self.dropped,
            self.errors,
            self.retries,
            self.batches,
            self.queue_events,
            self.queue_bytes,
            self.inflight_events,
            self.queue_max_events,
            self.queue_max_bytes,
            self.healthy,
            self.latency,
            self.batch_size,
        )


def _subscriber_families(hub: SubscriberHub | None) -> Iterator[Metric]:
    open_now = GaugeMetricFamily(PREFIX + "subscribers", "Live subscriptions open now.")
    received = CounterMetricFamily(
        PREFIX + "subscriber_received_events",
        "Records offered to live subscribers (sent or dropped).",
    )
    sent = CounterMetricFamily(
        PREFIX + "subscriber_sent_events", "Records written to live subscribers."
    )
    dropped = CounterMetricFamily(
        PREFIX + "subscriber_dropped_events",
        "Records live subscribers missed (too slow, or gone), by reason.",
        labels=["reason"],
    )
    if hub is not None:
        open_now.add_metric([], len(hub.subscriptions))
        received.add_metric([], hub.stats.received)
        sent.add_metric([], hub.stats.sent)
        for reason, count in hub.stats.dropped.items():
            dropped.add_metric([reason], count)
    yield from (open_now, received, sent, dropped)


def _healthy(worker: SinkWorker) -> bool:
    """A sink plugin's health() that raises reads as unhealthy rather than failing the scrape."""
    try:
        return worker.health().healthy
    except Exception:
        return False


class DaemonCollector(Collector):
    """The daemon's metrics, read from its counters each time the registry is collected.

    `sources` and `workers` are called at every scrape, so components added later (the HTTP
    source, say) show up without registering anything again.
    """

    def __init__(
        self,
        sources: Callable[[], Sequence[ComponentStats]],
        workers: Callable[[], Sequence[SinkWorker]],
        hub: SubscriberHub | None = None,
    ) -> None:
        self._sources = sources
        self._workers = workers
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        return self._families(self._sources(), self._workers(), self._hub)

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so a registry can detect clashing names."""
        return self._families((), (), None)

    @staticmethod
    def _families(
        sources: Sequence[ComponentStats],
        workers: Sequence[SinkWorker],
        hub: SubscriberHub | None,
    ) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            PREFIX + "build_info", "telemetryd's version; always 1.", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build
        source_families = _SourceFamilies()
        for stats in sources:
            source_families.add(stats)
        yield from source_families.families()
        sink_families = _SinkFamilies()
        for worker in workers:
            sink_families.add(worker)
        yield from sink_families.families()
        yield from _subscriber_families(hub)


def make_registry(
    sources: Callable[[], Sequence[ComponentStats]],
    workers: Callable[[], Sequence[SinkWorker]],
    hub: SubscriberHub | None = None,
) -> CollectorRegistry:
    """A fresh registry (not prometheus_client's global one) with the daemon's metrics and
    prometheus_client's process, platform and GC collectors."""
    registry = CollectorRegistry()
    registry.register(DaemonCollector(sources, workers, hub))
    ProcessCollector(registry=registry)  # reads /proc; yields nothing where there is none
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The exposition of `registry` and its content type.

    `accept` is the scrape's Accept header: OpenMetrics when the scraper asks for it, else
    the Prometheus text format (what a request without an Accept header gets).
    """
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
