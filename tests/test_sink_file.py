"""The file sink as its users see it: the lines in the files, their names, their count."""

from __future__ import annotations

import errno
import gzip
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from telemetryd.core.record import Record
from telemetryd.plugins import load_sink_class
from telemetryd_sinks.file import compressor as file_gzip
from telemetryd_sinks.file import sink as file_module
from telemetryd_sinks.file.sink import FileSettings, FileSink
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess
from tests.support.file_sink_io import (
    file_settings,
    gz_lines,
    gzipped,
    lines,
    record,
    rotated,
    started,
)
from tests.support.records import read_records
from tests.support.socket_client import event_line
from tests.support.waiting import wait_for


def records(start: int, count: int, padding: int = 0) -> list[Record]:
    return [record(i, padding) for i in range(start, start + count)]


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.anyio
async def test_records_land_one_per_line_in_order_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path))
    for start in range(0, 30, 10):
        await sink.write_batch(records(start, 10))
    await sink.write_batch([])
    await sink.close()

    assert lines(path) == [r.payload for r in records(0, 30)]
    assert sink.stats.bytes_written == path.stat().st_size
    assert sink.health().healthy


@pytest.mark.anyio
async def test_bytes_are_in_the_file_when_write_batch_returns(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, fsync="never"))
    await sink.write_batch(records(0, 3))
    assert lines(path) == [r.payload for r in records(0, 3)]
    await sink.close()


@pytest.mark.anyio
async def test_start_creates_folders_and_the_file_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "var" / "events" / "events.jsonl"
    sink = await started(file_settings(path, file_mode="0600"))
    await sink.close()
    assert path.read_bytes() == b""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.anyio
async def test_appending_to_an_existing_file_keeps_its_content(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"old":1}\n')
    sink = await started(file_settings(path))
    await sink.write_batch(records(0, 2))
    await sink.close()
    assert lines(path) == [b'{"old":1}', record(0).payload, record(1).payload]


@pytest.mark.anyio
async def test_size_rotation_names_files_and_never_splits_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    # Two-digit ids: every batch has the same size, so two fit in a file and a third rotates.
    batch_bytes = len(b"".join(r.payload + b"\n" for r in records(10, 5)))
    sink = await started(file_settings(path, rotate_bytes=batch_bytes * 2, fsync="batch"))
    for start in range(10, 60, 5):
        await sink.write_batch(records(start, 5))
    await sink.close()

    old = rotated(tmp_path)
    assert len(old) == 4 == sink.stats.files_rotated
    files = [*old, path]
    assert names(tmp_path) == {p.name for p in files}
    assert [line for p in files for line in lines(p)] == [r.payload for r in records(10, 50)]
    assert all(p.stat().st_size == batch_bytes * 2 for p in old)


@pytest.mark.anyio
async def test_rotated_name_is_the_utc_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    when = datetime(2026, 11, 22, 1, 30, 21, 131970, tzinfo=UTC)
    monkeypatch.setattr(file_module, "_utcnow", lambda: when)
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=1))
    for i in range(4):
        await sink.write_batch([record(i)])
    await sink.close()

    # Same instant: a counter keeps the names apart, and sorting by name stays in order.
    assert [p.name for p in rotated(tmp_path)] == [
        "events.20261122T013021.131970Z.jsonl",
        "events.20261122T013021.131970Z_0001.jsonl",
        "events.20261122T013021.131970Z_0002.jsonl",
    ]
    assert [lines(p) for p in [*rotated(tmp_path), path]] == [[record(i).payload] for i in range(4)]


@pytest.mark.anyio
async def test_clock_stepping_back_keeps_rotation_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = iter([datetime(2026, 11, 22, 2, tzinfo=UTC), datetime(2026, 11, 22, 1, tzinfo=UTC)])
    monkeypatch.setattr(file_module, "_utcnow", lambda: next(times))
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=1, rotate_keep_files=1))
    for i in range(3):
        await sink.write_batch([record(i)])
    await sink.close()

    # The newest rotated file survives pruning although the clock said it was older.
    [kept] = rotated(tmp_path)
    assert lines(kept) == [record(1).payload]


@pytest.mark.anyio
async def test_existing_size_counts_toward_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"old":1}\n')
    sink = await started(file_settings(path, rotate_bytes=20))
    await sink.write_batch([record(0)])
    await sink.close()

    [old] = rotated(tmp_path)
    assert lines(old) == [b'{"old":1}']
    assert lines(path) == [record(0).payload]


@pytest.mark.anyio
async def test_oversized_batch_goes_whole_into_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=100))
    await sink.write_batch([record(0)])
    await sink.write_batch(records(1, 20))
    await sink.write_batch([record(21)])
    await sink.close()

    first, oversized = rotated(tmp_path)
    assert lines(first) == [record(0).payload]
    assert lines(oversized) == [r.payload for r in records(1, 20)]
    assert lines(path) == [record(21).payload]


@pytest.mark.anyio
async def test_rotate_keep_files_deletes_only_the_oldest_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    strangers = [
        tmp_path / "other.20200101T000000.000000Z.jsonl",
        tmp_path / "events.20200101T000000.000000Z.log",
        tmp_path / "events.notes.jsonl",
    ]
    for stranger in strangers:
        stranger.write_bytes(b"keep me\n")
    sink = await started(file_settings(path, rotate_bytes=1, rotate_keep_files=2))
    for i in range(6):
        await sink.write_batch([record(i)])
    await sink.close()

    assert [lines(p) for p in rotated(tmp_path)] == [[record(3).payload], [record(4).payload]]
    assert all(s.read_bytes() == b"keep me\n" for s in strangers)


@pytest.mark.anyio
@pytest.mark.parametrize("operator", ["move", "delete"])
async def test_reopens_after_the_file_is_moved_away(tmp_path: Path, operator: str) -> None:
    path = tmp_path / "events.jsonl"
    moved = tmp_path / "events.jsonl.1"
    sink = await started(file_settings(path))
    await sink.write_batch(records(0, 2))
    if operator == "move":
        path.rename(moved)
    else:
        path.unlink()
    await sink.write_batch(records(2, 2))
    await sink.close()

    assert lines(path) == [r.payload for r in records(2, 2)]
    if operator == "move":
        assert lines(moved) == [r.payload for r in records(0, 2)]


@pytest.mark.anyio
async def test_truncated_by_copytruncate_is_not_rotated_early(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=100))
    await sink.write_batch(records(0, 3, padding=10))
    os.truncate(path, 0)
    await sink.write_batch(records(3, 3, padding=10))
    await sink.close()
    assert rotated(tmp_path) == []
    assert lines(path) == [r.payload for r in records(3, 3, padding=10)]


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts fsync/fdatasync calls on regular files (folder syncs are not data syncs)."""
    calls: list[int] = []

    def counting(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                calls.append(fd)
            real(fd)

        return sync

    monkeypatch.setattr(os, "fsync", counting(os.fsync))
    if hasattr(os, "fdatasync"):
        monkeypatch.setattr(os, "fdatasync", counting(os.fdatasync))
    return calls


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "interval_secs", "expected_syncs"),
    [("batch", 1.0, 5), ("never", 1.0, 0), ("interval", 3600.0, 1), ("interval", 0.0, 5)],
)
async def test_fsync_policies(
    tmp_path: Path, syncs: list[int], policy: str, interval_secs: float, expected_syncs: int
) -> None:
    path = tmp_path / "events.jsonl"
    settings = file_settings(path, fsync=policy, fsync_interval_secs=interval_secs)
    sink = await started(settings)
    for start in range(0, 5):
        await sink.write_batch([record(start)])
    await sink.close()  # "interval" syncs what is left on close; "batch" has nothing left

    assert len(syncs) == expected_syncs
    assert lines(path) == [r.payload for r in records(0, 5)]


def only_for(path: Path, write: Callable[[int, Any], int]) -> Callable[[int, Any], int]:
    """`write` for writes to the file at `path`, the real os.write for any other descriptor."""
    real = os.write

    def dispatch(fd: int, data: Any) -> int:
        held, there = os.fstat(fd), os.stat(path)
        return write(fd, data) if os.path.samestat(held, there) else real(fd, data)

    return dispatch


@pytest.mark.anyio
async def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path))
    real = os.write
    monkeypatch.setattr(os, "write", only_for(path, lambda fd, data: real(fd, data[:7])))
    await sink.write_batch(records(0, 10))
    monkeypatch.undo()
    await sink.close()
    assert lines(path) == [r.payload for r in records(0, 10)]


@pytest.mark.anyio
async def test_failed_write_is_unhealthy_leaves_no_torn_record_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path))
    await sink.write_batch([record(0)])
    real = os.write

    def disk_full_after_part(fd: int, data: Any) -> int:
        if len(data) > 10:
            return real(fd, data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", only_for(path, disk_full_after_part))
    with pytest.raises(OSError, match="No space left"):
        await sink.write_batch(records(1, 3))
    health = sink.health()
    assert not health.healthy
    assert "No space left" in health.detail
    assert str(path) in health.detail

    monkeypatch.undo()
    await sink.write_batch(records(1, 3))  # the worker's retry of the same batch
    assert sink.health().healthy
    await sink.close()
    assert lines(path) == [r.payload for r in records(0, 4)]


@pytest.mark.anyio
@pytest.mark.parametrize("create_dirs", [True, False])
async def test_unwritable_path_fails_start_naming_the_path(
    tmp_path: Path, create_dirs: bool
) -> None:
    not_a_folder = tmp_path / "plain-file"
    not_a_folder.write_bytes(b"")
    path = not_a_folder / "events.jsonl"
    sink = FileSink(file_settings(path, create_dirs=create_dirs))
    with pytest.raises(OSError, match=re.escape(str(path))):
        await sink.start()


@pytest.mark.anyio
async def test_missing_folder_without_create_dirs_fails_start(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "events.jsonl"
    sink = FileSink(file_settings(path, create_dirs=False))
    with pytest.raises(FileNotFoundError, match="'archive' cannot open"):
        await sink.start()
    assert not path.parent.exists()


def test_settings_defaults_and_octal_mode() -> None:
    settings = file_settings(Path("events.jsonl"))
    assert settings.rotate_bytes == 100 * 1024 * 1024
    assert settings.rotate_keep_files == 0
    assert settings.fsync == "interval"
    assert settings.fsync_interval_secs == 1.0
    assert settings.file_mode == 0o640
    assert settings.create_dirs is True
    assert file_settings(Path("e"), file_mode="0600").file_mode == 0o600
    assert file_settings(Path("e"), file_mode=0o644).file_mode == 0o644


@pytest.mark.parametrize(
    "bad",
    [
        {"rotate_byte": 10},
        {"file_mode": "rw-r-----"},
        {"file_mode": 0o1777},
        {"fsync": "always"},
        {"rotate_bytes": -1},
    ],
)
def test_settings_reject_bad_keys_and_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        file_settings(Path("events.jsonl"), **bad)


def test_settings_require_a_path() -> None:
    with pytest.raises(ValidationError, match="path"):
        FileSettings.model_validate({"name": "archive", "type": "file"})


def test_entry_point_loads_the_file_sink() -> None:
    assert load_sink_class("file") is FileSink
    assert FileSink.settings_model is FileSettings


def write_all(folder: Path, batches: list[list[Record]], rotate_bytes: int) -> None:
    async def main() -> None:
        sink = await started(
            file_settings(folder / "events.jsonl", rotate_bytes=rotate_bytes, fsync="never")
        )
        for batch in batches:
            await sink.write_batch(batch)
        await sink.close()

    anyio.run(main)


@settings(max_examples=60, deadline=None)
@given(
    batch_sizes=st.lists(st.lists(st.integers(0, 40), max_size=6), max_size=15),
    rotate_bytes=st.integers(0, 300),
)
def test_rotation_keeps_every_record_once_in_order(
    batch_sizes: list[list[int]], rotate_bytes: int
) -> None:
    counter = iter(range(10_000))
    batches = [[record(next(counter), pad) for pad in sizes] for sizes in batch_sizes]
    blobs = [b"".join(r.payload + b"\n" for r in batch) for batch in batches]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        write_all(Path(folder), batches, rotate_bytes)
        files = [p.read_bytes() for p in [*rotated(Path(folder)), path]]

    assert b"".join(files) == b"".join(blobs)
    # Every file starts and ends on a batch boundary: no record (nor batch) is ever split.
    boundaries = {0}
    for blob in blobs:
        boundaries.add(max(boundaries) + len(blob))
    offset = 0
    for content in files:
        offset += len(content)
        assert offset in boundaries
    for content in files[:-1]:
        assert content, "an empty file was rotated"
        if rotate_bytes and len(content) > rotate_bytes:
            assert content in blobs, "an oversized file holds more than one batch"
    if rotate_bytes == 0:
        assert len(files) == 1


# --- rotation by age, and gzip of rotated files ------------------------------------------------


class Clock:
    """The file sink's wall clock (`_wall_secs`), set by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float) -> None:
        self.now = now
        monkeypatch.setattr(file_module, "_wall_secs", lambda: self.now)


@pytest.mark.anyio
async def test_rotate_secs_rotates_on_wall_clock_periods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, 120.5)
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=0, rotate_secs=60))
    for i, now in enumerate([120.5, 150.0, 179.99, 180.0, 239.0, 400.0, 401.0]):
        clock.now = now
        await sink.write_batch([record(i)])
    await sink.close()

    # [120, 180): 0-2; [180, 240): 3-4; nothing written in [240, 360): no empty file.
    assert [lines(p) for p in rotated(tmp_path)] == [
        [record(i).payload for i in (0, 1, 2)],
        [record(i).payload for i in (3, 4)],
    ]
    assert lines(path) == [record(5).payload, record(6).payload]
    assert sink.stats.files_rotated == 2


@pytest.mark.anyio
async def test_rotate_secs_and_rotate_bytes_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, 1000.0)
    path = tmp_path / "events.jsonl"
    size = len(record(0).payload) + 1
    sink = await started(file_settings(path, rotate_bytes=2 * size, rotate_secs=10))
    for i in range(3):  # the size rotates after two records
        await sink.write_batch([record(i)])
    clock.now = 1010.0  # the period ends with one record in the file
    await sink.write_batch([record(3)])
    await sink.close()
    assert [lines(p) for p in rotated(tmp_path)] == [
        [record(0).payload, record(1).payload],
        [record(2).payload],
    ]
    assert lines(path) == [record(3).payload]


@pytest.mark.anyio
@pytest.mark.parametrize(("last_write", "rotates"), [(3500.0, True), (3700.0, False)])
async def test_a_resumed_file_belongs_to_the_period_of_its_last_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, last_write: float, rotates: bool
) -> None:
    Clock(monkeypatch, 3900.0)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"old":1}\n')
    os.utime(path, (last_write, last_write))
    sink = await started(file_settings(path, rotate_secs=3600))
    await sink.write_batch([record(0)])
    await sink.close()
    if rotates:
        [old] = rotated(tmp_path)
        assert lines(old) == [b'{"old":1}']
        assert lines(path) == [record(0).payload]
    else:
        assert rotated(tmp_path) == []
        assert lines(path) == [b'{"old":1}', record(0).payload]


@pytest.mark.anyio
async def test_rotated_files_are_gzipped_and_hold_every_record_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=300, compress="gzip", file_mode="0600"))
    for start in range(0, 200, 10):
        await sink.write_batch(records(start, 10))
    await sink.close()

    compressed = gzipped(tmp_path)
    assert len(compressed) == sink.stats.files_rotated > 5
    assert rotated(tmp_path) == []  # no uncompressed rotated file left
    assert names(tmp_path) == {p.name for p in [*compressed, path]}  # nor a partial gzip
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in compressed)
    every = [line for p in compressed for line in gz_lines(p)] + lines(path)
    assert every == [r.payload for r in records(0, 200)]
    assert sink.health().healthy


@pytest.mark.anyio
async def test_rotate_keep_files_counts_gzipped_files(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=1, rotate_keep_files=2, compress="gzip"))
    for i in range(6):
        await sink.write_batch([record(i)])
    await sink.close()
    assert [gz_lines(p) for p in gzipped(tmp_path)] == [[record(3).payload], [record(4).payload]]
    assert rotated(tmp_path) == []
    assert lines(path) == [record(5).payload]


@pytest.mark.anyio
async def test_gzip_runs_beside_the_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started_gzip = threading.Event()
    real = file_gzip.gzip_file

    def held(path: Path, mode: int, sync: Callable[[Path], None], gid: int = -1) -> Path:
        started_gzip.set()
        assert release.wait(10)
        return real(path, mode, sync, gid)

    monkeypatch.setattr(file_gzip, "gzip_file", held)
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=1, compress="gzip"))
    await sink.write_batch([record(0)])
    await sink.write_batch([record(1)])  # rotates: the gzip starts, and waits
    assert await anyio.to_thread.run_sync(started_gzip.wait, 10)
    for i in range(2, 5):  # writes and rotations go on while the gzip waits
        with anyio.fail_after(5):
            await sink.write_batch([record(i)])
    release.set()
    await sink.close()
    assert rotated(tmp_path) == []
    every = [line for p in gzipped(tmp_path) for line in gz_lines(p)] + lines(path)
    assert every == [r.payload for r in records(0, 5)]


def rotated_name(stamp: str) -> str:
    return f"events.{stamp}.jsonl"


@pytest.mark.anyio
async def test_what_a_crash_left_uncompressed_is_gzipped_at_start(tmp_path: Path) -> None:
    # As a crash leaves them: a file never compressed; one cut off mid-gzip (a partial .gz.tmp);
    # one whose gzip was renamed into place before its original was removed.
    never = tmp_path / rotated_name("20261122T010000.000000Z")
    cut = tmp_path / rotated_name("20261122T020000.000000Z")
    both = tmp_path / rotated_name("20261122T030000.000000Z")
    never.write_bytes(b'{"n":1}\n{"n":2}\n')
    cut.write_bytes(b'{"n":3}\n')
    (tmp_path / (cut.name + ".gz.tmp")).write_bytes(gzip.compress(b'{"n":3}\n')[:9])
    both.write_bytes(b'{"n":4}\n')
    (tmp_path / (both.name + ".gz")).write_bytes(gzip.compress(b'{"n":4}\n'))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n":5}\n')

    sink = await started(file_settings(path, compress="gzip"))
    await sink.write_batch([record(6)])
    await sink.close()

    assert names(tmp_path) == {p.name + ".gz" for p in (never, cut, both)} | {path.name}
    assert [gz_lines(p) for p in gzipped(tmp_path)] == [
        [b'{"n":1}', b'{"n":2}'],
        [b'{"n":3}'],
        [b'{"n":4}'],
    ]
    assert lines(path) == [b'{"n":5}', record(6).payload]


@pytest.mark.anyio
async def test_a_failed_gzip_keeps_the_file_is_unhealthy_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = file_gzip.gzip_file
    failures = iter([OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))])

    def failing_once(path: Path, mode: int, sync: Callable[[Path], None], gid: int = -1) -> Path:
        for failure in failures:
            raise failure
        return real(path, mode, sync, gid)

    monkeypatch.setattr(file_gzip, "gzip_file", failing_once)
    path = tmp_path / "events.jsonl"
    sink = await started(file_settings(path, rotate_bytes=1, compress="gzip"))
    await sink.write_batch([record(0)])
    await sink.write_batch([record(1)])  # rotates; the gzip fails
    health = await anyio.to_thread.run_sync(
        lambda: wait_for(lambda: None if sink.health().healthy else sink.health())
    )
    assert "No space left" in health.detail
    [kept] = rotated(tmp_path)
    assert lines(kept) == [record(0).payload]
    await sink.write_batch([record(2)])  # the next rotation's pass compresses both
    await sink.close()
    assert sink.health().healthy
    assert rotated(tmp_path) == []
    every = [line for p in gzipped(tmp_path) for line in gz_lines(p)] + lines(path)
    assert every == [r.payload for r in records(0, 3)]


def test_settings_for_age_rotation_and_compression() -> None:
    settings = file_settings(Path("events.jsonl"))
    assert settings.rotate_secs == 0
    assert settings.compress == "none"
    assert file_settings(Path("e"), rotate_secs=3600, compress="gzip").compress == "gzip"
    with pytest.raises(ValidationError, match="compress"):
        file_settings(Path("e"), compress="zstd")
    with pytest.raises(ValidationError, match="rotate_secs"):
        file_settings(Path("e"), rotate_secs=-1)


@pytest.mark.integration
def test_every_event_through_the_daemon_across_gzipped_rotations(tmp_path: Path) -> None:
    out = tmp_path / "out" / "events.jsonl"
    options = 'rotate_bytes = 20000\ncompress = "gzip"\nbatch_max_events = 50'
    sink = file_sink("archive", out, options)
    with DaemonProcess(tmp_path, daemon_config(tmp_path, sinks=sink)) as daemon:
        with daemon.connect() as sock:
            sock.sendall(b"".join(event_line(f"z/{i}") + b"\n" for i in range(5_000)))
        assert daemon.stop() == 0
    assert len(gzipped(out.parent)) > 10
    assert rotated(out.parent) == []
    assert [r["path"] for r in read_records(out)] == [f"z/{i}" for i in range(5_000)]
