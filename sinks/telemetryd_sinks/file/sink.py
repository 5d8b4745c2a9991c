"""The file sink: records appended as JSON Lines to one file, rotated by size.

Each batch becomes one `write` on a raw O_APPEND descriptor, so when `write_batch` returns the
bytes are in the kernel (and on disk too, as far as the `fsync` policy says). The blocking part
(writes, fsyncs, renames) runs in a worker thread, one thread call per batch, so a slow disk
never stalls the event loop.

Rotated files are named `<stem>.<UTC time>[_NNNN]<suffix>`, e.g.
`events.20261122T013021.131970Z.jsonl`; the names sort in rotation order, so
`cat events.*.jsonl events.jsonl` reads every record in order. With `compress = "gzip"` each
is then gzipped to `<name>.gz` in a thread of its own (telemetryd_sinks.file.compressor), and
`zcat -f events.*.jsonl* events.jsonl` reads them (`-f`: the newest may not be compressed yet).

`rotate_secs` rotates on wall-clock boundaries: a file holds the records written in one period
of `rotate_secs` counted from the Unix epoch (rotate_secs = 3600: hour by hour, UTC). Like
the size, it is checked when a batch is written: the file of a quiet period is rotated by the
next batch, so no empty file is ever rotated.

With `fsync = "interval"` the check happens when a batch is written (and on close): data of
the last batch before a quiet spell reaches the disk at the next batch, or at close.

A full disk is an outage like any other: a write that fails leaves no torn record, the worker
retries the batch with backoff, and health says why ("disk full: No space left on device writing
<path>"). A full (or failing) disk at start does not stop the daemon: the file is opened by the
first write that finds space.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import anyio.to_thread
from pydantic import Field

from telemetryd.core.record import Record
from telemetryd.delivery.disk_errors import describe
from telemetryd.settings_types import FileMode, GroupError, GroupName, gid_of
from telemetryd.sink import Sink, SinkHealth, SinkSettings
from telemetryd_sinks.file.compressor import GZ, PARTIAL, Compressor

log = logging.getLogger("telemetryd.sink")

MiB = 1024 * 1024
#: Errors of the disk, not of the configuration: the sink starts anyway and retries.
_DISK_TROUBLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})

FsyncPolicy = Literal["never", "batch", "interval"]
Compression = Literal["none", "gzip"]


class FileSettings(SinkSettings):
    path: Path = Field(description="The JSON Lines file records are appended to.")
    rotate_bytes: int = Field(
        default=100 * MiB,
        ge=0,
        description="Rotate before a batch would take the file past this size; 0 never rotates.",
    )
    rotate_secs: float = Field(
        default=0,
        ge=0,
        description="Rotate a file holding records of an earlier period of this many seconds "
        "(periods aligned to the Unix epoch: 3600 rotates on the hour); 0 never rotates by age.",
    )
    rotate_keep_files: int = Field(
        default=0,
        ge=0,
        description="How many rotated files to keep (compressed or not), deleting the oldest; "
        "0 keeps them all.",
    )
    compress: Compression = Field(
        default="none",
        description="gzip: rotated files are compressed to <name>.gz in a background thread; "
        "none: they stay as they are.",
    )
    fsync: FsyncPolicy = Field(
        default="interval",
        description="When written records are forced to disk: never, after every batch, or "
        "at most every fsync_interval_secs (checked when writing) and on close.",
    )
    fsync_interval_secs: float = Field(
        default=1.0, ge=0, description="Least time between two fsyncs when fsync is 'interval'."
    )
    file_mode: FileMode = Field(
        default=0o640,
        description="File mode of the files the sink creates (TOML 0o640 or '0640').",
    )
    group: GroupName | None = Field(
        default=None,
        description="Group of the files the sink creates, by name or number: with file_mode "
        "0o640, who may read the records. The daemon's user must be a member. Unset: the "
        "daemon's own group.",
    )
    create_dirs: bool = Field(default=True, description="Create the file's missing parent folders.")


@dataclass
class FileSinkStats:
    """Counters since start, for tests and metrics."""

    bytes_written: int = 0  # JSONL bytes appended, over every file
    files_rotated: int = 0


def jsonl(batch: Sequence[Record]) -> bytes:
    """The batch as JSON Lines: every payload followed by a newline."""
    payloads = [record.payload for record in batch]
    payloads.append(b"")  # the last record's newline
    return b"\n".join(payloads)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _wall_secs() -> float:
    return time.time()


def period_end(moment: float, period_secs: float) -> float:
    """The end of the `period_secs` period (counted from the Unix epoch) holding `moment`."""
    return (math.floor(moment / period_secs) + 1) * period_secs


def _sync_data(fd: int) -> None:
    # fdatasync skips flushing metadata such as mtime, which readers of a log do not need.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def _sync_folder(folder: Path) -> None:
    """Make a file's creation or rename in `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot sync a folder; that is theirs to guarantee, not an error.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


RotationKey = tuple[str, int]  # (UTC time stamp, collision counter): sorts in rotation order


class RotatedNames:
    """Names of the rotated files of one live file: `<stem>.<UTC time>[_NNNN]<suffix>`."""

    STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
    COUNTER_DIGITS = 4  # zero-padded so that names keep sorting as their keys do

    def __init__(self, live: Path) -> None:
        self.folder = live.parent
        self.stem = live.stem
        self.suffix = live.suffix
        self._pattern = re.compile(
            re.escape(self.stem)
            + r"\.([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)(?:_([0-9]+))?"
            + re.escape(self.suffix)
            + r"(\.gz)?",
            re.ASCII,
        )

    def key(self, name: str) -> RotationKey | None:
        """The rotation key of `name` (gzipped or not), or None if it is not a rotated file of
        this live file."""
        match = self._pattern.fullmatch(name)
        if match is None:
            return None
        return match[1], int(match[2] or 0)

    def path(self, key: RotationKey) -> Path:
        stamp, counter = key
        tail = f"_{counter:0{self.COUNTER_DIGITS}d}" if counter else ""
        return self.folder / f"{self.stem}.{stamp}{tail}{self.suffix}"

    def groups(self) -> list[tuple[RotationKey, list[Path]]]:
        """The rotated files present by key, oldest first: one file each, or two while (or if
        a crash stopped) a gzip is being completed."""
        found: dict[RotationKey, list[Path]] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                key = self.key(entry.name)
                if key is not None and entry.is_file(follow_symlinks=False):
                    found.setdefault(key, []).append(Path(entry.path))
        return [(key, sorted(found[key])) for key in sorted(found)]

    def existing(self) -> list[Path]:
        """The rotated files present, oldest first (a gzipped one after its original)."""
        return [path for _, paths in self.groups() for path in paths]

    def uncompressed(self) -> list[Path]:
        return [path for path in self.existing() if not path.name.endswith(GZ)]

    def next_free(self) -> Path:
        """A new name that sorts after every rotated file present, even if the clock stepped
        back, so that pruning the oldest by name never deletes the newest."""
        key: RotationKey = (_utcnow().strftime(self.STAMP_FORMAT), 0)
        groups = self.groups()
        newest = groups[-1][0] if groups else None
        if newest is not None and newest >= key:
            key = (newest[0], newest[1] + 1)
        # A rename would silently replace a file that appeared since the listing.
        while (candidate := self.path(key)).exists() or _gzipped(candidate).exists():
            key = (key[0], key[1] + 1)
        return candidate


def _gzipped(path: Path) -> Path:
    return path.with_name(path.name + GZ)


class AppendFile:
    """The file itself. What may wait for the disk (open, fsync, rotation, close) runs in a
    worker thread; a plain append, a copy into the page cache, runs in the event loop (see
    `blocks`). The lock keeps a close from interleaving with a write."""

    def __init__(self, settings: FileSettings, stats: FileSinkStats) -> None:
        self.path = settings.path.absolute()  # immune to a later chdir
        self._settings = settings
        self._names = RotatedNames(self.path)
        self._stats = stats
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False
        self._unsynced = False
        self._last_sync = 0.0
        self._size_hint = 0  # the file's size after our last write; rotation is checked exactly
        self._rotate_at = math.inf  # wall-clock time the file's period ends (rotate_secs)
        self._gid = -1 if settings.group is None else gid_of(settings.group)
        self.compressor: Compressor | None = None
        if settings.compress == "gzip":
            self.compressor = Compressor(
                self._names.uncompressed, self._prune, settings.file_mode, _sync_folder, self._gid
            )

    def open(self) -> None:
        with self._lock:
            if self._fd is None:
                self._open()
        if self.compressor is not None:
            self.compressor.request()  # what an earlier run left uncompressed

    def blocks(self, incoming: int) -> bool:
        """Whether writing `incoming` bytes now would wait for the disk: an fsync is due, the
        file must be rotated (renames, an fsync) or (re)opened. Otherwise a write only copies
        into the page cache, which takes microseconds."""
        if self._fd is None or self._settings.fsync == "batch":
            return True
        if self._settings.fsync == "interval" and (
            time.monotonic() - self._last_sync >= self._settings.fsync_interval_secs
        ):
            return True
        limit = self._settings.rotate_bytes
        if limit > 0 and self._size_hint + incoming > limit:
            return True
        return _wall_secs() >= self._rotate_at and self._size_hint > 0

    def write(self, batch: Sequence[Record]) -> None:
        self.write_data(jsonl(batch))

    def write_data(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"file sink for {self.path} is closed")
            fd, size = self._current_file()
            if self._must_rotate(size, len(data)):
                fd = self._rotate()
                size = 0
            self._append(fd, data, size)
            self._size_hint = size + len(data)
            self._stats.bytes_written += len(data)
            self._sync_if_due(fd)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._release()
        if self.compressor is not None:
            self.compressor.close()

    def _open(self) -> int:
        settings = self._settings
        if settings.create_dirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_EXCL, settings.file_mode)
        except FileExistsError:
            fd = os.open(self.path, flags)  # resume: append to what is there, never truncate
        else:
            try:
                os.fchmod(fd, settings.file_mode)  # the umask must not change the chosen mode
                self._give_to_group(fd)
                if settings.fsync != "never":
                    _sync_folder(self.path.parent)  # also makes a rotation's rename durable
            except OSError:
                os.close(fd)
                raise
        self._fd = fd
        self._last_sync = time.monotonic()
        self._rotate_at = self._period_end(fd)
        return fd

    def _give_to_group(self, fd: int) -> None:
        if self._gid == -1:
            return
        try:
            os.fchown(fd, -1, self._gid)
        except OSError as e:
            raise GroupError("group", self.path, str(self._settings.group), e) from e

    def _period_end(self, fd: int) -> float:
        period = self._settings.rotate_secs
        if period <= 0:
            return math.inf
        held = os.fstat(fd)
        # A file resumed at start belongs to the period of its last write.
        began = held.st_mtime if held.st_size else _wall_secs()
        return period_end(began, period)

    def _current_file(self) -> tuple[int, int]:
        """The descriptor of the file at `path` and its size, reopening it if an operator
        (or logrotate) moved or deleted the one we hold."""
        fd = self._fd if self._fd is not None else self._open()
        held = os.fstat(fd)
        try:
            there: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            there = None
        if there is None or not os.path.samestat(held, there):
            self._release()
            fd = self._open()
            held = os.fstat(fd)
        # fstat rather than our own count: a copytruncate by logrotate resets the size.
        self._size_hint = held.st_size
        return fd, held.st_size

    def _must_rotate(self, size: int, incoming: int) -> bool:
        if size == 0:
            return False
        limit = self._settings.rotate_bytes
        return (limit > 0 and size + incoming > limit) or _wall_secs() >= self._rotate_at

    def _rotate(self) -> int:
        self._release()
        os.rename(self.path, self._names.next_free())
        self._stats.files_rotated += 1
        fd = self._open()
        if self.compressor is None:
            self._prune()
        else:
            self.compressor.request()  # which prunes after compressing: never mid-gzip
        return fd

    def _prune(self) -> None:
        keep = self._settings.rotate_keep_files
        if keep == 0:
            return
        for _, paths in self._names.groups()[:-keep]:
            for old in [*paths, paths[0].with_name(paths[0].name + PARTIAL)]:
                with contextlib.suppress(FileNotFoundError):  # an operator got there first
                    old.unlink()

    def _append(self, fd: int, data: bytes, size_before: int) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            if len(view) < len(data):
                self._undo_partial(fd, size_before)
            raise
        self._unsynced = True

    @staticmethod
    def _undo_partial(fd: int, size_before: int) -> None:
        # The worker retries the whole batch: cut the torn tail so no half record (and no
        # duplicate) stays in the file. If this fails too, the write's error is the one to show.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size_before)

    def _sync_if_due(self, fd: int) -> None:
        policy = self._settings.fsync
        if policy == "batch" or (
            policy == "interval"
            and time.monotonic() - self._last_sync >= self._settings.fsync_interval_secs
        ):
            self._sync(fd)

    def _sync(self, fd: int) -> None:
        _sync_data(fd)
        self._unsynced = False
        self._last_sync = time.monotonic()

    def _release(self) -> None:
        """Sync (unless the policy is never) and close the held file."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._unsynced and self._settings.fsync != "never":
                self._sync(fd)
        finally:
            self._unsynced = False
            os.close(fd)


def _naming(exc: OSError, message: str) -> OSError:
    """`exc` again, with a message that says which sink and file it is about."""
    text = f"{message}: {exc.strerror or exc}"
    return OSError(exc.errno, text) if exc.errno is not None else OSError(text)


class FileSink(Sink):
    """Appends records as JSON Lines to `path`, rotating it by size and age."""

    settings_model = FileSettings

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, FileSettings):
            raise TypeError(f"FileSink needs FileSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self.stats = FileSinkStats()
        self._file = AppendFile(settings, self.stats)
        self._error: str | None = None

    @property
    def path(self) -> Path:
        return self._file.path

    async def start(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._file.open)
        except GroupError:
            raise  # it names its setting already
        except OSError as exc:
            if exc.errno not in _DISK_TROUBLE:
                raise _naming(exc, f"file sink {self.name!r} cannot open {self.path}") from exc
            self._error = describe(exc, self.path)
            log.error(
                "file sink cannot open its file; starting anyway, the first write tries again",
                extra={"fields": {"sink": self.name, "error": self._error}},
            )

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        # Not abandoned on cancel: the thread always finishes before the file is touched
        # again, so a cancelled write cannot race the next one or close.
        data = jsonl(batch)
        try:
            if self._file.blocks(len(data)):
                await anyio.to_thread.run_sync(self._file.write_data, data)
            else:
                # Handing every batch to a thread made the sink wait for the GIL behind the
                # hot path (measured: 120k events/s instead of keeping up at 150k+).
                self._file.write_data(data)
        except OSError as exc:
            self._error = describe(exc, self.path)
            raise OSError(exc.errno, self._error) from exc
        self._error = None

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        compressor = self._file.compressor
        if compressor is not None and compressor.error is not None:
            return SinkHealth(False, compressor.error)
        return SinkHealth(True)

    async def close(self) -> None:
        # Waits for a gzip under way: what a kill interrupts is compressed at the next start.
        await anyio.to_thread.run_sync(self._file.close)
