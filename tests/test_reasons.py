"""One vocabulary of reasons (telemetryd.core.reasons), and every component's counts whole.

A stop that times out with stuck sinks is where counts used to go wrong: a rejection waiting for
the dead-letter queue when it closed was counted twice by the dead-letter sink, under `shutdown`
(a reason of its own) and `shutdown_timeout`. Here a socket client and HTTP clients leave
events and rejections waiting in front of a stuck sink and a stuck dead letter, the daemon is
stopped, and every source and sink of the final stats must add up:
received = sent + dropped (+ rejected for sources, + queued for sinks), each count under a
reason of the vocabulary.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from telemetryd.config import parse_config
from telemetryd.core.reasons import DropReason, Reason
from telemetryd.core.record import Record
from telemetryd.core.rejections import Rejection
from telemetryd.core.stats import ComponentStats
from telemetryd.daemon import Daemon, load_registry
from telemetryd.delivery.intake import Arrival, Intake
from telemetryd.delivery.subscribers import SubscriberHub
from tests.support.config_text import blackhole_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import jupyter_event
from tests.support.socket_client import event_line
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

STUCK = "fail_batches = 1000000\nretry_initial_secs = 0.05\nretry_max_secs = 0.2\n"
QUEUE = 20  # the stuck sink's queue
DEAD_LETTER_QUEUE = 5
HTTP_CLIENTS = 4


def config(workdir: Path) -> str:
    sinks = blackhole_sink("stuck", f'{STUCK}queue_max_events = {QUEUE}\nwhen_full = "block"')
    text = http_config(
        workdir,
        server="http_enqueue_timeout_secs = 120\n",  # still waiting when the stop comes
        sinks=sinks,
        shutdown_timeout_secs=1,
    ).replace("stats_interval_secs = 0", "stats_interval_secs = 0.1")
    dead_letter = text.index("[dead_letter]")
    return text[:dead_letter] + (
        '[dead_letter]\nname = "dead-letter"\ntype = "blackhole"\n'
        f'{STUCK}queue_max_events = {DEAD_LETTER_QUEUE}\nwhen_full = "block"\n'
    )


def post_request(body: bytes) -> bytes:
    return (
        b"POST /api/events/batch HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


def sink(stats: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [s for s in stats["sinks"] if s["name"] == name]
    found: dict[str, Any] = entry
    return found


@pytest.fixture(scope="module")
def final_stats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("reasons")
    with DaemonProcess(workdir, config(workdir)) as daemon, ExitStack() as clients:
        port = http_port(daemon)
        sock = clients.enter_context(daemon.connect())
        lines = [event_line(f"valid/{i}") + b"\n" + b"not json %d\n" % i for i in range(60)]
        sock.sendall(b"".join(lines))
        for i in range(HTTP_CLIENTS):
            invalid = [jupyter_event(f"http/{i}/{n}", action="explode") for n in range(3)]
            valid = [jupyter_event(f"http/{i}/ok")]
            http = clients.enter_context(socket.create_connection(("127.0.0.1", port)))
            http.sendall(post_request(json.dumps(invalid + valid).encode()))

        def stuck_everywhere() -> bool:
            for line in daemon.log_lines():
                if line.get("msg") != "stats":
                    continue
                if (
                    sink(line, "stuck")["queued"] == QUEUE
                    and sink(line, "dead-letter")["queued"] == DEAD_LETTER_QUEUE
                    and line["sources"][1]["received"] == 4 * HTTP_CLIENTS
                ):
                    return True
            return False

        wait_for(stuck_everywhere, 30, "both queues full and every HTTP request read")
        assert daemon.stop() == 0
        yield daemon.final_stats()


def test_every_source_counts_each_event_once(final_stats: dict[str, Any]) -> None:
    for source in final_stats["sources"]:
        counted = source["sent"] + sum(source["dropped"].values())
        assert source["received"] == counted + sum(source["rejected"].values()), source


def test_every_sink_counts_each_event_once(final_stats: dict[str, Any]) -> None:
    for entry in final_stats["sinks"]:
        counted = entry["sent"] + sum(entry["dropped"].values()) + entry["queued"]
        assert entry["received"] == counted, entry
    assert sum(sink(final_stats, "dead-letter")["dropped"].values()) > 0  # what it was about


def test_every_count_is_under_a_reason_of_the_vocabulary(final_stats: dict[str, Any]) -> None:
    for component in [*final_stats["sources"], *final_stats["sinks"]]:
        assert set(component["dropped"]) <= set(DropReason), component
        assert set(component["rejected"]) <= set(Reason), component


def test_a_drop_says_whether_the_configuration_chose_it() -> None:
    assert DropReason.QUEUE_FULL.intended
    assert DropReason.EVICTED_OLDEST.intended
    assert not DropReason.SHUTDOWN_TIMEOUT.intended
    assert not DropReason.DISK_DAMAGED.intended
    assert json.dumps({DropReason.SHUTDOWN_TIMEOUT: 1}) == '{"shutdown_timeout": 1}'


def test_a_rejection_that_meets_a_closed_dead_letter_is_counted_once(tmp_path: Path) -> None:
    settings = parse_config(config(tmp_path))
    daemon = Daemon(settings, load_registry(settings))
    daemon.dead_letter.queue.close()  # the stop: the sources may still be finishing
    rejection = Rejection(Reason.INVALID_JSON, "not JSON", b"x", 1)
    intake = Intake(
        daemon.ingestor, daemon.bus, daemon.dead_letter.queue, ComponentStats("source", "unix")
    )
    arrival = Arrival(b"{}", "2026-11-22T01:30:21.131970Z", 0.0)
    anyio.run(intake.dead_letter, [rejection], arrival)
    stats = daemon.dead_letter.stats
    assert (stats.received, dict(stats.dropped)) == (1, {DropReason.SHUTDOWN_TIMEOUT: 1})


def test_a_subscriber_s_records_are_each_counted_once() -> None:
    """Offered records are sent, dropped as the subscriber fell behind, or dropped because it
    was still holding them when it closed (the stop): never uncounted, never twice."""
    hub = SubscriberHub(2, 3, 1 << 20)
    subscription = hub.subscribe([])
    records = [Record("https://example.org/a/v1", "1", b"%d" % n, 0.0) for n in range(9)]

    async def scenario() -> None:
        hub.offer(records[:5])  # 3 kept, 2 dropped: the queue holds 3
        batch = await subscription.next_batch(0)
        assert batch is not None
        subscription.delivered(len(batch.records))
        hub.offer(records[5:7])
        taken = await subscription.next_batch(0)  # handed out, then the stop
        assert taken is not None
        assert len(taken.records) == 2
        hub.offer(records[7:])  # still held when it closes
        hub.close()
        assert await subscription.next_batch(0) is None
        subscription.close()  # the transport is done: it never wrote what it had taken
        subscription.close()

    anyio.run(scenario)
    stats = hub.stats
    assert stats.received == len(records)
    assert stats.sent == 3
    assert dict(stats.dropped) == {
        DropReason.SUBSCRIBER_QUEUE_FULL: 2,
        DropReason.SUBSCRIBER_CLOSED: 4,
    }
