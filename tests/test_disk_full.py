"""A full disk never takes the daemon down: on a real 5 MiB tmpfs that fills, the daemon keeps
running (and starts again), clients are held back, never disconnected, the sink says why on
/readyz, every count names the disk, and once space returns every acknowledged event arrives.

Mounting a tmpfs needs root (CI runs as root); elsewhere these tests are skipped, saying so.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from telemetryd.client import Client
from telemetryd.core.record import Record
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.disk_log import BufferLocked, DiskLog, encode_frame
from telemetryd.delivery.disk_queue import DiskQueue
from telemetryd.sink import WhenFull
from tests.support.config_text import blackhole_sink, file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.file_sink_io import (
    file_settings,
    gz_lines,
    gzipped,
    lines,
    rotated,
    started,
)
from tests.support.file_sink_io import record as file_record
from tests.support.http_client import jupyter_event
from tests.support.records import records_so_far
from tests.support.sink_health import sink_health
from tests.support.socket_client import CONTENTS
from tests.support.waiting import wait_for

DISK_FULL = "disk full: No space left on device writing "
NO_ROOM_TO_CREATE = "disk full: No space left on device creating "


def mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {folder}: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 5 MiB file system, unmounted after the test."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=5m")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(disk)], check=False)


@pytest.fixture
def no_room_disk(tmp_path: Path) -> Iterator[tuple[Path, list[Path]]]:
    """A real tmpfs with neither a free byte nor a free inode (nothing can be created on it),
    and the files that fill it: deleting them gives everything back."""
    disk = tmp_path / "full"
    mount_tmpfs(disk, "size=5m,nr_inodes=16")
    try:
        yield disk, [fill(disk), *use_every_inode(disk)]
    finally:
        if subprocess.run(["umount", str(disk)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Fills `disk` to the last byte with a file of its own; deleting it gives the space back."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("ab", buffering=0) as out:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(chunk[:size])
    assert os.statvfs(disk).f_bavail == 0
    return filler


def use_every_inode(disk: Path) -> list[Path]:
    """Creates empty files on `disk` (a tmpfs mounted with nr_inodes) until it has no free
    inode: nothing more can be created there; deleting them gives the inodes back."""
    fillers: list[Path] = []
    with contextlib.suppress(OSError):
        while True:
            fillers.append(disk / f"filler{len(fillers)}")
            fillers[-1].touch()
    return fillers[:-1]


def grow(disk: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def emit(client: Client, first: int, count: int) -> None:
    for i in range(first, first + count):
        client.emit(CONTENTS, "1", {"action": "save", "path": f"e{i}"})


def delivered(path: Path) -> collections.Counter[str]:
    return collections.Counter(r["path"] for r in records_so_far(path))


def stats_of(stats: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in stats[kind] if s["name"] == name)
    return found


def messages(daemon: DaemonProcess, text: str) -> list[dict[str, Any]]:
    return [line for line in daemon.log_lines() if line.get("msg", "").startswith(text)]


# --- the daemon, on a disk that fills -----------------------------------------------------------


@pytest.mark.integration
def test_a_buffer_on_a_full_disk_keeps_the_daemon_up_and_the_client_connected(
    tmp_path: Path, small_disk: Path
) -> None:
    """The buffer's disk is full, the sink's output is not: appends are refused and commits
    may find no room for the cursor, yet nothing stops: the buffer writes what fits and, once
    its sink has taken everything, frees its delivered segment for more."""
    archive = tmp_path / "out/events.jsonl"
    buffer = small_disk / "archive"
    sinks = file_sink(
        "archive",
        archive,
        f'buffer = "disk"\nbuffer_path = "{buffer}"\nbuffer_segment_bytes = 1048576\n',
    )
    events = 20_000
    with DaemonProcess(tmp_path, http_config(tmp_path, sinks=sinks)) as daemon:
        with Client(daemon.socket_path) as client:
            emit(client, 0, 1_000)
            assert client.flush(60)
            wait_for(lambda: len(delivered(archive)) == 1_000, 60, "the first events delivered")
            filler = fill(small_disk)
            emit(client, 1_000, events - 1_000)
            assert client.flush(120), client.stats()
            wait_for(lambda: len(delivered(archive)) == events, 60, "every event in the file")
            assert filler.exists()  # the buffer wrote only into the space it freed itself
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            stats = client.stats()
            assert stats.connects == 1, "the daemon closed the client's connection"
            assert (stats.acknowledged, stats.resent, stats.dropped) == (events, 0, {})
            assert sink_health(daemon, "archive")["healthy"]
        assert daemon.stop() == 0
        final = daemon.final_stats()
        assert not messages(daemon, "connection failed")
        assert not messages(daemon, "refusing to start")

    assert set(delivered(archive)) == {f"e{i}" for i in range(events)}
    sink = stats_of(final, "sinks", "archive")
    assert (sink["received"], sink["sent"], sink["dropped"]) == (events, events, {})
    assert stats_of(final, "sources", "unix")["dropped"] == {}


@pytest.mark.integration
def test_a_full_disk_holds_events_back_and_everything_acknowledged_arrives_when_space_returns(
    tmp_path: Path, small_disk: Path
) -> None:
    """The buffer and the file sink share the disk, which fills: the sink is unhealthy with the
    reason, the client is held back (not disconnected), the daemon restarts on the full disk,
    and once the disk grows every event is delivered."""
    archive = small_disk / "out/events.jsonl"
    sinks = file_sink(
        "archive",
        archive,
        f'buffer = "disk"\nbuffer_path = "{small_disk}/buffer"\n'
        "buffer_segment_bytes = 262144\nretry_initial_secs = 0.05\nretry_max_secs = 0.5\n",
    )
    events = 40_000  # some 9 MB of JSON Lines: far more than the disk holds
    config = http_config(tmp_path, sinks=sinks, shutdown_timeout_secs=5)
    began = time.monotonic()
    with (
        DaemonProcess(tmp_path, config) as daemon,
        Client(daemon.socket_path, reconnect_max_secs=0.5) as client,
    ):
        emit(client, 0, events)

        def buffer_refuses() -> dict[str, Any] | None:
            sink = sink_health(daemon, "archive")
            return sink if f"{DISK_FULL}{small_disk}/buffer/" in sink["detail"] else None

        sink = wait_for(buffer_refuses, 60, "the disk buffer to report the full disk")
        assert (sink["ready"], sink["healthy"]) == (False, False)
        held = client.stats()
        assert held.connects == 1, "the daemon closed the client's connection"
        assert held.acknowledged < events
        assert held.dropped == {}

        # A restart on the full disk: the daemon starts and recovers what it holds.
        daemon.signal(signal.SIGKILL)
        assert daemon.proc is not None
        daemon.proc.wait(10)
        daemon.start()
        wait_for(buffer_refuses, 60, "the restarted daemon to report the full disk")
        assert daemon.proc.poll() is None

        grow(small_disk, "64m")
        assert client.flush(180), client.stats()
        wait_for(lambda: len(delivered(archive)) == events, 120, "every event in the file")
        assert client.stats().dropped == {}
        wait_for(lambda: sink_health(daemon, "archive")["healthy"], 30, "a healthy sink")
        assert daemon.stop() == 0
        elapsed = time.monotonic() - began
        final = daemon.final_stats()

    # At least once: whatever was acknowledged, or resent after the kill, is there.
    assert set(delivered(archive)) == {f"e{i}" for i in range(events)}
    sink = stats_of(final, "sinks", "archive")
    assert sink["received"] == sink["sent"]
    assert sink["dropped"] == {}
    assert stats_of(final, "sources", "unix")["dropped"] == {}
    assert not messages(daemon, "connection failed")
    assert not messages(daemon, "refusing to start")
    # Said once per interval, not once per attempt, event or connection: each of the two runs
    # says it at once, then at most once per 10 s.
    refused = messages(daemon, "disk buffer cannot write")
    failed = messages(daemon, "sink write failed; retrying")
    assert refused
    assert failed
    assert len(refused) <= elapsed / 10 + 2
    assert len(failed) <= elapsed / 10 + 2


@pytest.mark.integration
def test_events_a_full_disk_held_back_at_a_stop_are_counted_as_disk_full(
    tmp_path: Path, small_disk: Path
) -> None:
    """Nothing acknowledged is lost; what the full disk never took is counted as `disk_full`,
    for the source, the disk-buffered sink and the sink after it, never as a shutdown loss."""
    sinks = file_sink(
        "archive",
        tmp_path / "out/events.jsonl",
        f'buffer = "disk"\nbuffer_path = "{small_disk}/archive"\n',
    ) + blackhole_sink("after")
    config = http_config(tmp_path, sinks=sinks, shutdown_timeout_secs=2)
    with DaemonProcess(tmp_path, config) as daemon:
        fill(small_disk)
        client = Client(daemon.socket_path)
        try:
            emit(client, 0, 500)
            wait_for(
                lambda: sink_health(daemon, "archive")["detail"].startswith(DISK_FULL),
                30,
                "the full disk on /readyz",
            )
            assert daemon.stop() == 0
            assert client.stats().acknowledged == 0
        finally:
            client.close(0)
        final = daemon.final_stats()
        logs = daemon.log_lines()

    unix = stats_of(final, "sources", "unix")
    read = unix["received"]
    assert read > 0
    assert (unix["sent"], unix["dropped"]) == (0, {"disk_full": read})
    for name in ("archive", "after"):
        sink = stats_of(final, "sinks", name)
        assert (sink["received"], sink["sent"], sink["dropped"]) == (read, 0, {"disk_full": read})
    assert not [line for line in logs if line.get("msg", "").startswith("shutdown timeout")]


@pytest.mark.integration
def test_a_post_that_the_full_disk_cannot_take_is_answered_503_naming_the_disk(
    tmp_path: Path, small_disk: Path
) -> None:
    archive = tmp_path / "out/events.jsonl"
    sinks = file_sink(
        "archive", archive, f'buffer = "disk"\nbuffer_path = "{small_disk}/archive"\n'
    )
    config = http_config(tmp_path, server="http_enqueue_timeout_secs = 0.5", sinks=sinks)
    with DaemonProcess(tmp_path, config) as daemon:
        filler = fill(small_disk)
        url = f"http://127.0.0.1:{http_port(daemon)}/api/events"
        refused = httpx.post(url, json=jupyter_event("refused"), timeout=30)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert body["reason"] == "disk_full"
        assert f"{DISK_FULL}{small_disk}/archive/" in body["message"]

        filler.unlink()
        accepted = httpx.post(url, json=jupyter_event("accepted"), timeout=30)
        assert accepted.status_code == 204
        wait_for(lambda: delivered(archive) == {"accepted": 1}, 30, "the accepted event")
        assert daemon.stop() == 0
        final = daemon.final_stats()

    http = stats_of(final, "sources", "http")
    assert (http["received"], http["sent"], http["dropped"]) == (2, 1, {"disk_full": 1})
    sink = stats_of(final, "sinks", "archive")
    assert (sink["received"], sink["sent"], sink["dropped"]) == (2, 1, {"disk_full": 1})


@pytest.mark.integration
def test_the_daemon_starts_when_the_file_sink_cannot_create_its_file(tmp_path: Path) -> None:
    """A disk without a free inode: the sink's file cannot be created. The daemon starts, the
    sink is unhealthy saying why, and the events it holds arrive once the disk has room."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=5m,nr_inodes=16")
    try:
        fillers = use_every_inode(disk)
        archive = disk / "events.jsonl"
        sinks = file_sink("archive", archive, "retry_initial_secs = 0.05\nretry_max_secs = 0.5")
        with DaemonProcess(tmp_path, http_config(tmp_path, sinks=sinks)) as daemon:
            assert sink_health(daemon, "archive")["detail"] == f"{DISK_FULL}{archive}"
            with Client(daemon.socket_path) as client:
                emit(client, 0, 100)
                assert client.flush(30)  # in the sink's memory queue
            fillers[0].unlink()
            wait_for(lambda: len(delivered(archive)) == 100, 30, "the events in the file")
            wait_for(lambda: sink_health(daemon, "archive")["healthy"], 30, "a healthy sink")
            assert daemon.stop() == 0
            final = daemon.final_stats()
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)
    sink = stats_of(final, "sinks", "archive")
    assert (sink["received"], sink["sent"], sink["dropped"]) == (100, 100, {})


@pytest.mark.integration
def test_a_new_buffer_the_full_disk_has_no_room_for_is_created_when_space_returns(
    tmp_path: Path, no_room_disk: tuple[Path, list[Path]]
) -> None:
    """A disk buffer whose directory does not exist yet, on a disk with no room to create it:
    the daemon starts, the sink is unhealthy naming the directory, the client's events are held
    back (no ack) and HTTP is refused; once there is room the buffer creates itself and every
    event held back arrives."""
    disk, fillers = no_room_disk
    buffer = disk / "archive"
    archive = tmp_path / "out/events.jsonl"
    sinks = file_sink("archive", archive, f'buffer = "disk"\nbuffer_path = "{buffer}"\n')
    config = http_config(tmp_path, server="http_enqueue_timeout_secs = 0.5", sinks=sinks)
    events = 1_000
    with DaemonProcess(tmp_path, config) as daemon:
        port = http_port(daemon)
        sink = sink_health(daemon, "archive")
        assert (sink["healthy"], sink["detail"]) == (False, f"{NO_ROOM_TO_CREATE}{buffer}")
        assert not buffer.exists()
        url = f"http://127.0.0.1:{port}/api/events"
        refused = httpx.post(url, json=jupyter_event("refused"), timeout=30)
        assert refused.status_code == 503
        assert refused.json()["reason"] == "disk_full"
        assert f"{NO_ROOM_TO_CREATE}{buffer}" in refused.json()["message"]
        with Client(daemon.socket_path) as client:
            emit(client, 0, events)
            assert not client.flush(1)  # held back: acknowledged once on disk, not before
            held = client.stats()
            assert (held.acknowledged, held.connects, held.dropped) == (0, 1, {})
            assert daemon.proc is not None
            assert daemon.proc.poll() is None

            for filler in fillers:
                filler.unlink()
            assert client.flush(60), client.stats()
            wait_for(lambda: len(delivered(archive)) == events, 60, "every event in the file")
            wait_for(lambda: sink_health(daemon, "archive")["healthy"], 30, "a healthy sink")
            assert client.stats().acknowledged == events
        assert daemon.stop() == 0
        final = daemon.final_stats()
        assert messages(daemon, "disk buffer writable again")

    assert set(delivered(archive)) == {f"e{i}" for i in range(events)}
    sink = stats_of(final, "sinks", "archive")
    assert (sink["received"], sink["sent"], sink["dropped"]) == (
        events + 1,
        events,
        {"disk_full": 1},
    )
    assert stats_of(final, "sources", "http")["dropped"] == {"disk_full": 1}
    assert stats_of(final, "sources", "unix")["dropped"] == {}


@pytest.mark.anyio
async def test_a_gzip_the_full_disk_refused_is_retried_when_space_returns(
    small_disk: Path,
) -> None:
    path = small_disk / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=1, compress="gzip"))
    await sink.write_batch([file_record(0)])
    filler = fill(small_disk)
    with pytest.raises(OSError, match=f"{DISK_FULL}{path}"):
        await sink.write_batch([file_record(1)])  # rotates; neither it nor the gzip has room
    compressor = sink._file.compressor  # the sink's health shows the write's error first
    assert compressor is not None
    error = await anyio.to_thread.run_sync(lambda: wait_for(lambda: compressor.error))
    assert error.startswith(f"compressing rotated files: {DISK_FULL}")
    filler.unlink()
    await sink.write_batch([file_record(1)])  # the worker's retry: into the new, empty file
    # No rotation follows, which used to be the only retry of a gzip: it retries by itself.
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: gzipped(small_disk), timeout=30))
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: sink.health().healthy))
    await sink.close()
    assert [gz_lines(p) for p in gzipped(small_disk)] == [[file_record(0).payload]]
    assert rotated(small_disk) == []
    assert lines(path) == [file_record(1).payload]


# --- the buffer itself, on a full disk ----------------------------------------------------------


def record(i: int) -> Record:
    return Record(CONTENTS, "1", json.dumps({"path": f"e{i}", "pad": "x" * 200}).encode(), 0.0)


def test_an_append_the_disk_refuses_leaves_only_whole_frames(small_disk: Path) -> None:
    log = DiskLog(small_disk / "buffer", 1 << 30)
    log.append(encode_frame(CONTENTS, "1", b"first"))
    filler = fill(small_disk)
    os.truncate(filler, filler.stat().st_size - 8192)  # room for part of the next append only
    with pytest.raises(OSError, match="No space left on device") as refused:
        log.append(b"".join(encode_frame(CONTENTS, "1", b"x" * 100) for _ in range(200)))
    assert refused.value.errno == errno.ENOSPC
    fill(small_disk)
    log.commit(log.end)  # the cursor cannot be saved on the full disk: not an error
    assert str(log.cursor_error).startswith(DISK_FULL)
    filler.unlink()
    log.append(encode_frame(CONTENTS, "1", b"second"))
    log.close()  # saves the cursor, now that there is room

    again = DiskLog(small_disk / "buffer", 1 << 30)
    frames, _, skipped = again.read(again.cursor, 1 << 20)
    assert ([f.payload for f in frames], skipped) == ([b"second"], 0)
    again.close()


def disk_queue(folder: Path, when_full: WhenFull) -> DiskQueue:
    return DiskQueue(
        folder,
        max_bytes=1 << 30,
        segment_bytes=1 << 30,
        fsync="batch",
        when_full=when_full,
        stats=ComponentStats("sink", "archive"),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("when_full", ["drop_newest", "drop_oldest"])
async def test_a_dropping_queue_drops_what_the_full_disk_refuses_as_disk_full(
    small_disk: Path, when_full: WhenFull
) -> None:
    queue = disk_queue(small_disk / "buffer", when_full)
    filler = fill(small_disk)
    await queue.put_many([record(i) for i in range(3)])
    assert str(queue.problem).startswith(DISK_FULL)
    assert (queue.stats.received, dict(queue.stats.dropped)) == (3, {"disk_full": 3})
    filler.unlink()
    await queue.put_many([record(3)])
    assert queue.problem is None
    assert [r.payload for r in await queue.take(10, 1 << 20, 0)] == [record(3).payload]
    queue.shutdown()


@pytest.mark.anyio
async def test_a_blocking_queue_waits_for_space_and_counts_an_abandoned_wait_as_disk_full(
    small_disk: Path,
) -> None:
    queue = disk_queue(small_disk / "buffer", "block")
    filler = fill(small_disk)
    with anyio.move_on_after(0.5) as waited:
        await queue.put_many([record(0), record(1)])
    assert waited.cancelled_caught  # held back, not refused with an error
    assert str(queue.problem).startswith(DISK_FULL)
    assert dict(queue.stats.dropped) == {"disk_full": 2}

    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.put_many, [record(2)])
        await anyio.wait_all_tasks_blocked()
        assert queue.statistics().waiting_putters == 1  # the put waits for the disk
        filler.unlink()
    assert queue.problem is None
    assert [r.payload for r in await queue.take(10, 1 << 20, 0)] == [record(2).payload]
    queue.shutdown()


@pytest.mark.anyio
async def test_a_blocking_queue_waits_for_room_to_create_its_buffer(
    no_room_disk: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, fillers = no_room_disk
    buffer = disk / "buffer"
    attempts = 0  # at creating the buffer

    def counted(directory: Path, segment_bytes: int) -> DiskLog:
        nonlocal attempts
        attempts += 1
        return DiskLog(directory, segment_bytes)

    monkeypatch.setattr("telemetryd.delivery.disk_queue.DiskLog", counted)
    queue = disk_queue(buffer, "block")  # starts without its directory
    assert str(queue.problem) == f"{NO_ROOM_TO_CREATE}{buffer}"
    with anyio.move_on_after(0.3):
        await queue.put_many([record(0)])
    assert dict(queue.stats.dropped) == {"disk_full": 1}

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.put_many, [record(1)])
            for filler in fillers[-2:]:
                filler.unlink()  # room for the directory and its lock, not the first segment
            await anyio.to_thread.run_sync(lambda: wait_for((buffer / "lock").exists))
            half_made = attempts
            # It tries again after a half-made buffer (its lock held by none).
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: attempts > half_made))
            assert str(queue.problem) == f"{NO_ROOM_TO_CREATE}{buffer}"
            assert queue.statistics().waiting_putters == 1
            for filler in fillers[:-2]:
                filler.unlink()
    assert queue.problem is None
    assert [r.payload for r in await queue.take(10, 1 << 20, 0)] == [record(1).payload]
    queue.shutdown()


@pytest.mark.anyio
async def test_the_idle_worker_creates_a_buffer_once_there_is_room(
    no_room_disk: tuple[Path, list[Path]],
) -> None:
    disk, fillers = no_room_disk
    buffer = disk / "buffer"
    queue = disk_queue(buffer, "drop_newest")
    await queue.put_many([record(i) for i in range(3)])
    assert (queue.stats.received, dict(queue.stats.dropped)) == (3, {"disk_full": 3})
    taken: list[bytes] = []

    async def worker() -> None:
        taken.extend(r.payload for r in await queue.take(10, 1 << 20, 0))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            for filler in fillers:
                filler.unlink()
            # No put comes: the waiting take is what retries.
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: queue.problem is None))
            assert (buffer / "00000001.seg").exists()
            await queue.put_many([record(3)])
    assert taken == [record(3).payload]
    queue.shutdown()


def test_a_buffer_that_cannot_be_made_for_another_reason_still_refuses(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    with pytest.raises(FileExistsError):
        disk_queue(tmp_path / "file", "block")
    with pytest.raises(NotADirectoryError):
        disk_queue(tmp_path / "file" / "buffer", "block")
    held = disk_queue(tmp_path / "held", "block")
    with pytest.raises(BufferLocked, match="in use by another telemetryd"):
        disk_queue(tmp_path / "held", "block")
    held.shutdown()


@pytest.mark.anyio
async def test_a_read_the_disk_fails_is_retried_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An I/O error cannot be made on a tmpfs: this one is injected, once.
    queue = disk_queue(tmp_path / "buffer", "block")
    await queue.put_many([record(0)])
    real = queue.log.read
    failures = iter([OSError(errno.EIO, os.strerror(errno.EIO))])

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        for failure in failures:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(queue.log, "read", failing_once)
    batch = await queue.take(10, 1 << 20, 0)
    assert [r.payload for r in batch] == [record(0).payload]
    assert queue.stats.errors["disk_read_error"] == 1
    assert queue.problem is None
    queue.shutdown()


def test_a_cursor_left_past_a_deleted_segment_loses_no_new_record(tmp_path: Path) -> None:
    # Segments are deleted before the cursor is saved (on a full disk, their space is what the
    # save needs): if the last one went and the save did not happen, the segment is made anew
    # at the next start, shorter than the cursor says. What is appended to it must be read.
    log = DiskLog(tmp_path / "buffer", 1 << 30)
    log.append(encode_frame(CONTENTS, "1", b"delivered"))
    log.commit(log.end)
    log.close()
    (tmp_path / "buffer" / "00000001.seg").unlink()

    again = DiskLog(tmp_path / "buffer", 1 << 30)
    again.append(encode_frame(CONTENTS, "1", b"new"))
    frames, _, _ = again.read(again.cursor, 1 << 20)
    assert [f.payload for f in frames] == [b"new"]
    again.close()


def test_a_delivered_segment_a_failing_disk_did_not_delete_goes_at_the_next_start(
    tmp_path: Path,
) -> None:
    # A commit whose delete failed (EIO) still saves the cursor: the next start finds a
    # segment before it, and deletes it (this used to stop the start with an AttributeError).
    buffer = tmp_path / "buffer"
    buffer.mkdir()
    (buffer / "00000001.seg").write_bytes(encode_frame(CONTENTS, "1", b"delivered"))
    (buffer / "cursor").write_text(json.dumps({"segment": 2, "offset": 0}))
    log = DiskLog(buffer, 1 << 30)
    assert not (buffer / "00000001.seg").exists()
    log.append(encode_frame(CONTENTS, "1", b"new"))
    frames, _, _ = log.read(log.cursor, 1 << 20)
    assert [f.payload for f in frames] == [b"new"]
    log.close()
