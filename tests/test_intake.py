"""Intake, in process: every event a source hands it is counted once, as sent, rejected or
dropped, and a token's allowed_schemas refuse exactly the lines of the other schemas."""

from __future__ import annotations

import json

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemetryd.auth import Identity
from telemetryd.core.ingest import Ingestor
from telemetryd.core.reasons import DropReason, Reason
from telemetryd.core.record import Record
from telemetryd.core.rejections import REJECTED_EVENT_SCHEMA
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus, Route
from telemetryd.delivery.intake import Intake, Patience, Refusal
from telemetryd.delivery.routing import RouteFilter
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.sink import WhenFull

CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
KERNELS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
ORIGIN = b'{"transport":"unix","user":"alice","uid":1000}'
REGISTRY = SchemaRegistry.load()

LINES = {
    "contents": json.dumps(
        {"schema_id": CONTENTS, "version": "1", "data": {"action": "save", "path": "a"}}
    ).encode(),
    "kernels": json.dumps(
        {"schema_id": KERNELS, "version": "1", "data": {"action": "start", "msg": "k"}}
    ).encode(),
    "invalid_json": b"{not json",
    "invalid_data": json.dumps(
        {"schema_id": CONTENTS, "version": "1", "data": {"action": "explode", "path": "a"}}
    ).encode(),
}
KINDS = st.lists(st.sampled_from(sorted(LINES)), max_size=40)


def queue(name: str, max_events: int = 10_000, when_full: WhenFull = "block") -> SinkQueue:
    return SinkQueue(max_events, 1 << 30, when_full, ComponentStats("sink", name))


def intake(
    *sinks: SinkQueue, dead_letter: SinkQueue | None = None, patience: Patience | None = None
) -> Intake:
    return Intake(
        Ingestor(REGISTRY),
        Bus([Route(q.stats.name, q, RouteFilter()) for q in sinks]),
        dead_letter if dead_letter is not None else queue("rejected"),
        ComponentStats("source", "test"),
        patience=patience,
    )


def accounted(stats: ComponentStats) -> int:
    return stats.sent + sum(stats.rejected.values()) + sum(stats.dropped.values())


async def handle(intake: Intake, lines: list[bytes], identity: Identity | None = None) -> None:
    """What a source does with a chunk."""
    arrival = intake.arrive(ORIGIN, len(lines))
    records, rejected = intake.validate(list(lines), arrival, 1, identity)
    await intake.publish(records)
    if rejected:
        await intake.dead_letter(rejected, arrival)


@given(kinds=KINDS, allowed=st.sets(st.sampled_from([CONTENTS, KERNELS])))
def test_each_event_is_counted_once_and_a_token_refuses_only_other_schemas(
    kinds: list[str], allowed: set[str]
) -> None:
    sink, dead_letter = queue("archive"), queue("rejected")
    source = intake(sink, dead_letter=dead_letter)
    identity = Identity("bot", permits=allowed.__contains__)
    anyio.run(handle, source, [LINES[kind] for kind in kinds], identity)

    stats = source.stats
    assert stats.received == len(kinds) == accounted(stats)
    wanted = {"contents": CONTENTS, "kernels": KERNELS}
    sent = [i for i, kind in enumerate(kinds) if wanted.get(kind) in allowed]
    assert stats.sent == len(sent) == len(sink)
    not_allowed = [i for i, kind in enumerate(kinds) if kind in wanted and i not in sent]
    assert stats.rejected[Reason.SCHEMA_NOT_ALLOWED] == len(not_allowed)
    dead = [json.loads(record.payload) for record in taken(dead_letter)]
    assert all(record["__schema__"] == REJECTED_EVENT_SCHEMA for record in dead)
    # Every rejection, each with its own line's number and reason, in line order.
    refused = [i for i in range(len(kinds)) if i not in sent]
    assert [record["line"] - 1 for record in dead] == refused
    reasons = [record["reason"] for record in dead]
    assert reasons == [
        Reason.SCHEMA_NOT_ALLOWED if kinds[i] in wanted else kinds[i] for i in refused
    ]


def test_an_identity_without_allowed_schemas_refuses_nothing() -> None:
    source = intake(queue("archive"))
    arrival = source.arrive(ORIGIN, 2)
    records, rejected = source.validate(
        [LINES["contents"], LINES["kernels"]], arrival, 1, Identity("alice")
    )
    assert (len(records), rejected) == (2, [])


def test_a_patient_publish_is_refused_when_the_queues_are_closed() -> None:
    sink = queue("archive")
    sink.close()
    source = intake(sink, patience=Patience(1.0, 10))
    records = records_of(source, 3)
    assert anyio.run(source.publish, records) is Refusal.STOPPING
    assert dict(source.stats.dropped) == {DropReason.SHUTDOWN_TIMEOUT: 3}


def test_an_impatient_publish_to_closed_queues_counts_them_lost() -> None:
    sink = queue("archive")
    sink.close()
    source = intake(sink)
    assert anyio.run(source.publish, records_of(source, 2)) is Refusal.STOPPING
    assert dict(source.stats.dropped) == {DropReason.SHUTDOWN_TIMEOUT: 2}


@pytest.mark.parametrize("disk_problem", [None, "No space left on device"])
def test_a_patient_publish_waits_for_full_queues_at_most_its_timeout(
    disk_problem: str | None,
) -> None:
    sink = queue("archive", max_events=1)
    sink.problem = disk_problem
    source = intake(sink, patience=Patience(0.05, 10))

    async def publish() -> Refusal | None:
        return await source.publish(records_of(source, 2))

    refusal = anyio.run(publish)
    if disk_problem is None:
        assert refusal is Refusal.QUEUES_FULL
        assert dict(source.stats.dropped) == {DropReason.ENQUEUE_TIMEOUT: 2}
    else:
        assert refusal is Refusal.DISK_FULL
        assert dict(source.stats.dropped) == {DropReason.DISK_FULL: 2}
    assert (source.stats.sent, source.waiting) == (0, 0)


def test_a_crowded_patient_intake_sheds_a_publish_at_once() -> None:
    source = intake(queue("archive"), patience=Patience(1.0, 1))
    with source.waiting_for_room():
        assert source.crowded
        assert anyio.run(source.publish, records_of(source, 4)) is Refusal.TOO_MANY_WAITING
    assert (source.waiting, source.crowded) == (0, False)
    assert dict(source.stats.dropped) == {DropReason.TOO_MANY_WAITING: 4}


def test_an_impatient_publish_cancelled_by_the_stop_counts_its_records() -> None:
    sink = queue("archive", max_events=1)
    source = intake(sink)

    async def stopped_while_waiting() -> None:
        with anyio.move_on_after(0.05):
            await source.publish(records_of(source, 2))

    anyio.run(stopped_while_waiting)
    assert dict(source.stats.dropped) == {DropReason.SHUTDOWN_TIMEOUT: 2}
    assert source.stats.sent == 0


def test_a_patient_dead_letter_gives_up_after_its_timeout() -> None:
    dead_letter = queue("rejected", max_events=1)
    source = intake(dead_letter=dead_letter, patience=Patience(0.05, 10))
    bad = [LINES["invalid_json"]] * 2
    arrival = source.arrive(ORIGIN, len(bad))
    _, rejected = source.validate(bad, arrival)
    anyio.run(source.dead_letter, rejected, arrival)
    assert source.stats.errors["dead_letter_timeout"] == 1
    assert dict(source.stats.rejected) == {Reason.INVALID_JSON: 2}


def records_of(source: Intake, count: int) -> list[Record]:
    arrival = source.arrive(ORIGIN, count)
    records, _ = source.validate([LINES["contents"]] * count, arrival)
    return records


def taken(sink: SinkQueue) -> list[Record]:
    """Every record the queue holds."""
    sink.close()
    return anyio.run(sink.take, 1 << 20, 1 << 30, 0.0)
