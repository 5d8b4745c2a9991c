"""The disk buffer: frames that check, damage that is skipped and counted, segments deleted
only after delivery, and a queue that comes back after a restart with what it held."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.disk_log import (
    HEADER_BYTES,
    BufferLocked,
    DiskLog,
    Position,
    encode_frame,
    parse_frames,
)
from telemetryd.delivery.disk_queue import DiskQueue
from telemetryd.sink import WhenFull

SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"

payloads = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=40)


def record(i: int, size: int = 40) -> Record:
    payload = b'{"path":"e%d","pad":"%s"}' % (i, b"x" * size)
    return Record(SCHEMA, "1", payload, 0.0)


def frames_of(items: list[bytes]) -> bytes:
    return b"".join(encode_frame(SCHEMA, "1", p) for p in items)


@settings(max_examples=200, deadline=None)
@given(payloads, st.lists(st.integers(1, 97), max_size=30))
def test_frames_parse_back_whatever_the_read_sizes(items: list[bytes], cuts: list[int]) -> None:
    data = frames_of(items)
    parsed: list[bytes] = []
    buffer = b""
    offset = 0
    for cut in [*cuts, len(data)]:  # the data arrives in pieces of arbitrary sizes
        buffer += data[offset : offset + cut]
        offset += cut
        frames, consumed, skipped = parse_frames(buffer, final=offset >= len(data))
        assert skipped == 0
        parsed.extend(f.payload for f in frames)
        buffer = buffer[consumed:]
        if offset >= len(data):
            break
    assert parsed == items
    assert all(
        f.schema_id == SCHEMA and f.version == "1" for f in parse_frames(data, final=True)[0]
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.data())
def test_damage_costs_the_damaged_frames_only(items: list[bytes], data: st.DataObject) -> None:
    """Flipped bytes or a cut tail: parsing never fails, every frame it returns is one that was
    written (in order), the frames away from the damage all come back, and the damaged
    bytes are counted."""
    raw = bytearray(frames_of(items))
    damage = data.draw(st.sampled_from(["flip", "cut", "garbage"]))
    where = data.draw(st.integers(0, len(raw) - 1))
    if damage == "flip":
        raw[where] ^= 0xFF
    elif damage == "cut":
        del raw[where:]
    else:
        raw[where:where] = data.draw(st.binary(min_size=1, max_size=50))
    frames, consumed, skipped = parse_frames(bytes(raw), final=True)
    assert consumed == len(raw)
    got = [f.payload for f in frames]
    it = iter(items)
    assert all(any(p == q for q in it) for p in got)  # a subsequence of what was written
    intact_before = []
    offset = 0
    for p in items:  # frames wholly before the damage survive
        end = offset + HEADER_BYTES + 3 + len(SCHEMA) + 1 + len(p)
        if end > where:
            break
        intact_before.append(p)
        offset = end
    assert got[: len(intact_before)] == intact_before
    if len(got) < len(items) and damage != "garbage":
        assert skipped > 0 or damage == "cut"


def test_segments_roll_over_and_go_once_delivered(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, segment_bytes=1000)
    for i in range(100):
        log.append(encode_frame(SCHEMA, "1", b"x" * 90 + str(i).encode()))
    assert len(log.segments()) > 5
    frames, _, skipped = log.read(log.cursor, 1 << 20)
    assert skipped == 0
    assert len(frames) < 100  # one segment at a time
    position = log.cursor
    seen = 0
    while position < log.end:
        frames, position, _ = log.read(position, 1 << 20)
        seen += len(frames)
        if seen == 50:
            log.commit(position)
    assert seen == 100
    first_kept = log.segments()[0]
    assert first_kept > 1  # delivered segments are deleted
    log.commit(position)
    assert log.segments() == [log.end.segment]
    log.close()


def test_a_reopened_log_resumes_at_its_cursor_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, segment_bytes=1 << 20)
    for i in range(10):
        log.append(encode_frame(SCHEMA, "1", b"event %d" % i))
    frames, position, _ = log.read(log.cursor, 1 << 20)
    second = frames[0].size * 4
    log.commit(Position(position.segment, second))  # four delivered
    log.close()
    segment = next(tmp_path.glob("*.seg"))
    with segment.open("ab") as f:
        f.write(encode_frame(SCHEMA, "1", b"torn")[:-3])  # a crash in the middle of a write
    log = DiskLog(tmp_path, segment_bytes=1 << 20)
    assert log.truncate_torn_tail() == len(encode_frame(SCHEMA, "1", b"torn")) - 3
    frames = [f for chunk, _ in log.scan(log.cursor) for f in chunk]
    assert [f.payload for f in frames] == [b"event %d" % i for i in range(4, 10)]
    log.append(encode_frame(SCHEMA, "1", b"after"))
    assert [f.payload for chunk, _ in log.scan(log.cursor) for f in chunk][-1] == b"after"
    log.close()


def test_one_daemon_per_buffer_directory(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, segment_bytes=1 << 20)
    with pytest.raises(BufferLocked, match="in use by another telemetryd"):
        DiskLog(tmp_path, segment_bytes=1 << 20)
    log.close()
    DiskLog(tmp_path, segment_bytes=1 << 20).close()


# --- the queue ------------------------------------------------------------------------------


def disk_queue(path: Path, max_bytes: int = 1 << 30, when_full: WhenFull = "block") -> DiskQueue:
    return DiskQueue(
        path,
        max_bytes=max_bytes,
        segment_bytes=4096,
        fsync="never",
        when_full=when_full,
        stats=ComponentStats("sink", "t"),
    )


async def drain(q: DiskQueue, batch: int = 7) -> list[str]:
    out: list[str] = []
    while len(q):
        records = await q.take(batch, 1 << 20, 0)
        out.extend(r.payload.split(b'"')[3].decode() for r in records)
        q.commit()
    return out


@pytest.mark.anyio
async def test_the_queue_survives_a_restart_with_what_was_not_delivered(tmp_path: Path) -> None:
    q = disk_queue(tmp_path)
    await q.put_many([record(i) for i in range(100)])
    first = await q.take(30, 1 << 20, 0)
    q.commit()
    taken_not_committed = await q.take(10, 1 << 20, 0)  # in flight at the "crash"
    assert len(first) == 30
    assert len(taken_not_committed) == 10
    q.shutdown()  # the process dies: the in-flight batch was never committed

    again = disk_queue(tmp_path)
    assert again.recovered == 70
    assert again.stats.received == 70
    assert await drain(again) == [f"e{i}" for i in range(30, 100)]
    assert again.stats.sent == 70
    again.shutdown()
    segments = sorted(os.listdir(tmp_path))
    assert [s for s in segments if s.endswith(".seg")] == [
        max(s for s in segments if s.endswith(".seg"))
    ]


@pytest.mark.anyio
async def test_block_waits_for_room_on_disk(tmp_path: Path) -> None:
    one = len(encode_frame(SCHEMA, "1", record(0).payload))
    q = disk_queue(tmp_path, max_bytes=one * 10)
    await q.put_many([record(i) for i in range(10)])
    done = anyio.Event()

    async def put_more() -> None:
        await q.put_many([record(i) for i in range(10, 15)])
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(put_more)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()  # full: the putter waits
        assert q.statistics().waiting_putters == 1
        out = await drain(q, batch=5)
        await done.wait()
        out += await drain(q, batch=5)
    assert out == [f"e{i}" for i in range(15)]
    q.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("when_full", "kept"), [("drop_newest", range(10)), ("drop_oldest", range(5, 15))]
)
async def test_drop_policies_on_disk(tmp_path: Path, when_full: WhenFull, kept: range) -> None:
    one = len(encode_frame(SCHEMA, "1", record(10).payload))  # the longest of the 15
    q = disk_queue(tmp_path, max_bytes=one * 10, when_full=when_full)
    for i in range(15):
        await q.put_many([record(i)])
    assert await drain(q) == [f"e{i}" for i in kept]
    stats = q.stats
    assert stats.received == 15
    assert stats.sent + sum(stats.dropped.values()) == 15
    q.shutdown()


@pytest.mark.anyio
async def test_damage_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    q = disk_queue(tmp_path)
    await q.put_many([record(i) for i in range(20)])
    q.shutdown()
    segment = tmp_path / min(s for s in os.listdir(tmp_path) if s.endswith(".seg"))
    data = bytearray(segment.read_bytes())
    one = len(encode_frame(SCHEMA, "1", record(0).payload))
    data[one * 3 + 20] ^= 0x55  # inside the fourth frame
    segment.write_bytes(bytes(data))
    again = disk_queue(tmp_path)
    assert again.stats.errors["disk_damaged_bytes"] > 0
    delivered = await drain(again)
    assert "e3" not in delivered
    assert sorted(delivered, key=lambda p: int(p[1:])) == delivered
    assert set(delivered) == {f"e{i}" for i in range(20)} - {"e3"}
    again.shutdown()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "take", "take_and_crash", "restart"]), st.integers(1, 30)
        ),
        max_size=25,
    )
)
def test_every_event_is_delivered_once_or_redelivered_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """Puts, takes (committed or, at a restart, not) and restarts in any order: every event put
    is delivered, in order, and only an uncommitted batch at a restart is delivered twice."""
    path = tmp_path_factory.mktemp("buffer")

    async def main() -> tuple[list[int], int, int]:
        q = disk_queue(path)
        put = 0
        delivered: list[int] = []
        redeliverable = 0
        for action, n in steps:
            if action == "put":
                await q.put_many([record(i) for i in range(put, put + n)])
                put += n
            elif action.startswith("take") and len(q):
                batch = await q.take(n, 1 << 20, 0)
                delivered += [int(r.payload.split(b'"')[3][1:]) for r in batch]
                if action == "take":
                    q.commit()
                else:  # delivered, but the daemon died before the commit
                    redeliverable += len(batch)
                    q.shutdown()
                    q = disk_queue(path)
            elif action == "restart":
                q.shutdown()
                q = disk_queue(path)
        delivered += [int(p[1:]) for p in await drain(q)]
        q.shutdown()
        return delivered, put, redeliverable

    delivered, put, redeliverable = anyio.run(main)
    assert set(delivered) == set(range(put))
    assert len(delivered) - put <= redeliverable
    os.sync()


def names(records: list[Record]) -> list[str]:
    return [r.payload.split(b'"')[3].decode() for r in records]


@settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(range(4)), crash_after=st.integers(min_value=0, max_value=4))
def test_batches_committed_in_any_order_lose_nothing_across_a_crash(
    tmp_path_factory: pytest.TempPathFactory, order: list[int], crash_after: int
) -> None:
    # batches_in_flight > 1: four batches taken at once, delivered in any order, then a crash.
    # The cursor only passes delivered batches at the front, so after the restart every event
    # of a batch not yet delivered comes again (and those behind it, at least once).
    path = tmp_path_factory.mktemp("q")

    async def main() -> None:
        q = disk_queue(path)
        await q.put_many([record(i) for i in range(40)])
        batches = [await q.take(10, 1 << 20, 0) for _ in range(4)]
        assert q.statistics().inflight_events == 40
        for i in order[:crash_after]:
            q.commit(batches[i])
        delivered = set(order[:crash_after])
        assert q.stats.sent == 10 * len(delivered)
        assert q.statistics().inflight_events == 10 * (4 - len(delivered))
        q.shutdown()
        again = disk_queue(path)
        front = next((i for i in range(4) if i not in delivered), 4)  # first undelivered
        assert again.recovered == 40 - 10 * front
        redelivered = await drain(again)
        assert redelivered == [f"e{i}" for i in range(10 * front, 40)]
        undelivered = {
            f"e{i}" for b in range(4) if b not in delivered for i in range(10 * b, 10 * b + 10)
        }
        assert undelivered <= set(redelivered)
        again.shutdown()

    anyio.run(main)


@pytest.mark.anyio
async def test_the_oldest_batch_committed_last_moves_the_cursor_past_all(tmp_path: Path) -> None:
    q = disk_queue(tmp_path)
    await q.put_many([record(i) for i in range(30)])
    a, b, c = [await q.take(10, 1 << 20, 0) for _ in range(3)]
    assert names(a)[0] == "e0"
    assert names(c)[-1] == "e29"
    q.commit(c)
    q.commit(b)
    assert len(q) == 10  # a is still owed
    q.commit(a)
    assert len(q) == 0
    assert q.stats.sent == 30
    q.shutdown()
    again = disk_queue(tmp_path)
    assert again.recovered == 0
    again.shutdown()
