"""Gzip of the file sink's rotated files, in a thread of its own so that neither the event loop
nor the writes wait for it.

Each pass compresses every uncompressed rotated file present, oldest first, so a file left
uncompressed by a crash, a kill or a failed pass is compressed by the next pass (one runs at
start). A file is written to `<name>.gz.tmp`, fsynced, renamed to `<name>.gz` (the folder
fsynced), and only then is `<name>` removed: at every instant the records are complete in at
least one of the two, and a reader that finds both reads one.

A pass that fails (a full disk) is retried with backoff (RETRY_*_SECS) as well as at the next
rotation, and the pruning after it runs anyway: old files it deletes may be the space it needs.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from telemetryd.delivery.disk_errors import describe

GZ = ".gz"
PARTIAL = ".gz.tmp"
LEVEL = 6  # zlib's default: ~4x on JSON Lines at ~50 MB/s; 9 is twice as slow for a few %
COPY_BYTES = 1024 * 1024
#: Backoff of a failed pass: each try writes until the disk is full again, so not too often.
RETRY_INITIAL_SECS = 1.0
RETRY_MAX_SECS = 60.0


def gzip_file(
    path: Path, file_mode: int, sync_folder: Callable[[Path], None], gid: int = -1
) -> Path:
    """`path` compressed to `path.gz` (mode `file_mode`, group `gid` unless -1), which is
    durable before `path` is removed."""
    target = path.with_name(path.name + GZ)
    partial = path.with_name(path.name + PARTIAL)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, file_mode)
    try:
        os.fchmod(fd, file_mode)  # the umask must not change the chosen mode
        if gid != -1:
            os.fchown(fd, -1, gid)
        with (
            path.open("rb") as source,
            open(fd, "wb", closefd=False) as raw,
            gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, compresslevel=LEVEL) as gz,
        ):
            shutil.copyfileobj(source, gz, COPY_BYTES)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    os.close(fd)
    os.rename(partial, target)
    sync_folder(path.parent)
    os.unlink(path)
    sync_folder(path.parent)
    return target


class Compressor:
    """A thread that runs passes on request: `uncompressed()` lists what to compress, oldest
    first, and `after_pass()` runs after each pass (pruning, so it never races a compression)."""

    def __init__(
        self,
        uncompressed: Callable[[], list[Path]],
        after_pass: Callable[[], None],
        file_mode: int,
        sync_folder: Callable[[Path], None],
        gid: int = -1,
    ) -> None:
        self._uncompressed = uncompressed
        self._after_pass = after_pass
        self._file_mode = file_mode
        self._gid = gid
        self._sync_folder = sync_folder
        self._wake = threading.Condition()
        self._requested = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.files_compressed = 0
        self.error: str | None = None  # the last pass's failure, until a pass succeeds

    def request(self) -> None:
        """Have a pass run soon (one pass covers every request made before it starts)."""
        with self._wake:
            if self._stopping:
                return
            self._requested = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="telemetryd-file-gzip", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        """Waits for the requested passes to finish; blocking (call it from a thread)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        retry_secs = RETRY_INITIAL_SECS
        while True:
            with self._wake:
                self._wait_for_request(retry_secs if self.error is not None else None)
                if not self._requested:
                    return
                self._requested = False
            self._pass()
            retry_secs = (
                RETRY_INITIAL_SECS if self.error is None else min(retry_secs * 2, RETRY_MAX_SECS)
            )

    def _wait_for_request(self, retry_secs: float | None) -> None:
        """Waits (holding `_wake`) for a request, the stop, or the time to retry a failed pass."""
        deadline = None if retry_secs is None else time.monotonic() + retry_secs
        while not (self._requested or self._stopping):
            if deadline is None:
                self._wake.wait()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self._requested = True
                return
            self._wake.wait(left)

    def _pass(self) -> None:
        error: str | None = None
        current: Path | None = None
        try:
            for current in self._uncompressed():
                stale = current.with_name(current.name + PARTIAL)
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()  # a pass that was cut off; this one starts it again
                try:
                    gzip_file(current, self._file_mode, self._sync_folder, self._gid)
                except FileNotFoundError:
                    continue  # pruned or moved away by an operator meanwhile
                self.files_compressed += 1
        except OSError as e:
            # The file stays uncompressed (its records intact) until a later pass.
            where = e.filename or (
                current.with_name(current.name + PARTIAL) if current is not None else "folder"
            )
            error = f"compressing rotated files: {describe(e, where)}"
        try:
            self._after_pass()
        except OSError as e:
            error = error or f"pruning rotated files: {e}"
        self.error = error
