"""A sink's disk buffer on disk: an append-only, segmented, checksummed log of records.

    <dir>/00000001.seg, 00000002.seg, ...   frames, appended in order
    <dir>/cursor                            {"segment": n, "offset": b}: the first frame not
                                            yet delivered (replaced atomically on each commit)
    <dir>/lock                              flock'ed by the daemon that owns the buffer

A frame is MAGIC (2 bytes), the body's length and CRC-32 (4 bytes each, little-endian), then
the body: the schema id's length (2 bytes) and bytes, the version's length (1 byte) and bytes,
and the record payload. A reader that meets a frame whose header or checksum is wrong (a torn
write at the end of a crash, a flipped bit) skips forward to the next frame that checks, and
counts the bytes it skipped: damage costs the damaged records, never a crash loop, never the
records after it. Segments are deleted once the cursor has moved past them.

A full disk (or a failing one) is never fatal here: an append that fails is cut back to the last
whole frame and raised for the queue to retry; a cursor that cannot be saved stays in memory and
is saved by a later commit (a crash meanwhile delivers again from the last saved one: at least
once); and a log whose every record is delivered can start a new segment to free the old one.
Starting on a full disk needs no space: recovery only reads, and cuts a torn tail.

This module does blocking file I/O and no async: the queue (telemetryd.delivery.disk_queue) decides
when to call it and what runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from telemetryd.delivery.disk_errors import describe
from telemetryd.logs import Throttle

log = logging.getLogger("telemetryd.disk_buffer")

MAGIC = b"\xd7\x1e"
_HEADER = struct.Struct("<2sII")  # magic, body length, crc32 of the body
HEADER_BYTES = _HEADER.size
#: No body is longer: a length over this in a header is damage, not a record.
MAX_BODY_BYTES = 64 << 20
SEGMENT_SUFFIX = ".seg"


class BufferLocked(OSError):
    """Another process owns this buffer directory."""


class Frame(NamedTuple):
    schema_id: str
    version: str
    payload: bytes
    size: int  # bytes on disk, header included
    end: int  # where the frame ends in the data it was parsed from


def encode_frame(schema_id: str, version: str, payload: bytes) -> bytes:
    sid = schema_id.encode()
    ver = version.encode()
    body = b"".join(
        (len(sid).to_bytes(2, "little"), sid, len(ver).to_bytes(1, "little"), ver, payload)
    )
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


#: Schema ids and versions as read, by their bytes: decoded once, not once per record.
_names: dict[bytes, str] = {}


def _name(raw: bytes) -> str:
    name = _names.get(raw)
    if name is None:
        name = raw.decode()  # UnicodeDecodeError: damage, for the caller
        if len(_names) < 10_000:
            _names[raw] = name
    return name


def _decode_body(body: bytes) -> tuple[str, str, bytes] | None:
    if len(body) < 3:
        return None
    sid_end = 2 + int.from_bytes(body[:2], "little")
    if sid_end + 1 > len(body):
        return None
    ver_end = sid_end + 1 + body[sid_end]
    if ver_end > len(body):
        return None
    try:
        return _name(body[2:sid_end]), _name(body[sid_end + 1 : ver_end]), body[ver_end:]
    except UnicodeDecodeError:
        return None


def parse_frames(
    data: bytes, *, final: bool, max_frames: int = 1 << 30
) -> tuple[list[Frame], int, int]:
    """The whole frames at the start of `data`, at most `max_frames`: (frames, bytes
    consumed, bytes skipped as damaged). With `final`, the data is all there is (the end of a
    segment): an incomplete frame at its end is damage; otherwise it is left for more data."""
    frames: list[Frame] = []
    pos = skipped = 0
    end = len(data)
    unpack = _HEADER.unpack_from
    while pos < end and len(frames) < max_frames:
        if end - pos < HEADER_BYTES:
            break
        magic, length, crc = unpack(data, pos)
        if magic == MAGIC and length <= MAX_BODY_BYTES:
            stop = pos + HEADER_BYTES + length
            if stop > end:
                if not final:
                    break  # the rest of this frame is in the next read
            else:
                body = data[pos + HEADER_BYTES : stop]
                if zlib.crc32(body) == crc:
                    decoded = _decode_body(body)
                    if decoded is not None:
                        frames.append(Frame(*decoded, stop - pos, stop))
                        pos = stop
                        continue
        # Damage: resynchronise at the next MAGIC (the checksum then decides).
        following = data.find(MAGIC, pos + 1)
        if following < 0:
            if not final:
                # Keep a last byte that may start a MAGIC split across reads.
                keep = 1 if data.endswith(MAGIC[:1]) else 0
                skipped += end - keep - pos
                pos = end - keep
            break
        skipped += following - pos
        pos = following
    if final and pos < end and len(frames) < max_frames:
        skipped += end - pos
        pos = end
    return frames, pos, skipped


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


class DiskLog:
    """The files of one buffer directory. Not thread-safe: one caller at a time."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise BufferLocked(
                f"the disk buffer {directory} is in use by another telemetryd"
            ) from None
        self._read_fds: dict[int, int] = {}
        try:
            self._open_files()
        except BaseException:
            # A disk with no room for the first segment: the queue opens the log again later,
            # and this process's own lock must not be what refuses it then.
            os.close(self._lock_fd)
            raise

    def _open_files(self) -> None:
        self.cursor = self._read_cursor()
        segments = self.segments()
        for number in segments:
            if number < self.cursor.segment:
                self._remove(number)  # delivered before the last stop or crash
        segments = [n for n in segments if n >= self.cursor.segment]
        self._write_segment = segments[-1] if segments else max(self.cursor.segment, 1)
        #: The lowest segment number that may still exist.
        self._oldest = segments[0] if segments else self._write_segment
        self._write_fd = self._open_segment(self._write_segment)
        self._write_size = os.fstat(self._write_fd).st_size
        if self.cursor.segment == self._write_segment and self.cursor.offset > self._write_size:
            # A cursor past the end: its segment was deleted (and made anew) after delivery,
            # before the cursor could be saved. New frames start at the end: read them.
            self.cursor = Position(self._write_segment, self._write_size)
        self._last_read_start = self.cursor
        #: Why the cursor could not be saved (None: it is saved); a later commit tries again.
        self.cursor_error: str | None = None
        self._cursor_log = Throttle()

    # -- files -------------------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:08d}{SEGMENT_SUFFIX}"

    def _open_segment(self, segment: int) -> int:
        return os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    @property
    def write_path(self) -> Path:
        """The segment appended to."""
        return self._path(self._write_segment)

    def segments(self) -> list[int]:
        numbers = []
        for path in self.directory.glob(f"*{SEGMENT_SUFFIX}"):
            try:
                numbers.append(int(path.stem))
            except ValueError:
                continue
        return sorted(numbers)

    def _remove(self, segment: int) -> None:
        fd = self._read_fds.pop(segment, None)
        if fd is not None:
            os.close(fd)
        self._path(segment).unlink(missing_ok=True)

    def _read_cursor(self) -> Position:
        try:
            raw = json.loads((self.directory / "cursor").read_text())
            return Position(int(raw["segment"]), int(raw["offset"]))
        except FileNotFoundError:
            first = self.segments()
            return Position(first[0] if first else 1, 0)
        except (ValueError, KeyError, TypeError):
            # A cursor that cannot be read: start at the oldest segment kept (the events
            # after the real cursor are delivered again: at least once, never lost).
            first = self.segments()
            log.error(
                "disk buffer cursor unreadable; delivering from the oldest segment again",
                extra={"fields": {"buffer": str(self.directory)}},
            )
            return Position(first[0] if first else 1, 0)

    # -- writing -----------------------------------------------------------------------------

    def append(self, data: bytes) -> None:
        """Appends encoded frames, starting a new segment first when the current one is full.

        On an OSError (a full disk) nothing of `data` stays: what was written is cut off, so
        the retried append follows whole frames."""
        if self._write_size >= self.segment_bytes:
            self._start_segment()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._write_fd, view)
                view = view[written:]
        except OSError:
            if len(view) < len(data):
                self._cut_back()
            raise
        self._write_size += len(data)

    def _start_segment(self) -> None:
        fd = self._open_segment(self._write_segment + 1)  # may fail: then nothing changed
        os.close(self._write_fd)
        self._write_segment += 1
        self._write_fd = fd
        self._write_size = 0

    def _cut_back(self) -> None:
        """Removes a partly written append; if even that fails, the reader skips the torn
        frame as damage, and the size follows the file so that positions stay true."""
        try:
            os.ftruncate(self._write_fd, self._write_size)
        except OSError:
            self._write_size = os.fstat(self._write_fd).st_size

    def reclaim(self) -> bool:
        """With every record delivered, starts a new segment so the delivered one can go: the
        space a full disk needs back when the buffer filled it. True if a segment was freed."""
        if self.cursor != self.end or self._write_size == 0:
            return False
        try:
            self._start_segment()
        except OSError:
            return False
        self.commit(self.end)
        return True

    def fsync(self) -> None:
        os.fsync(self._write_fd)

    @property
    def end(self) -> Position:
        return Position(self._write_segment, self._write_size)

    # -- reading -----------------------------------------------------------------------------

    def read(
        self, start: Position, max_bytes: int, max_frames: int = 1 << 30
    ) -> tuple[list[Frame], Position, int]:
        """Frames from `start`, about `max_bytes` of them (at least one whole frame if there
        is one), all from one segment: (frames, the position after them, bytes skipped as
        damaged). `frame_end(frame)` then says where one of them ends."""
        frames: list[Frame] = []
        skipped = 0
        position = start
        self._last_read_start = start
        while position < self.end and not frames:
            if position.segment < self._write_segment and position.offset >= self._size(
                position.segment
            ):
                position = Position(position.segment + 1, 0)
                continue
            fd = self._read_fd(position.segment)
            if fd is None:  # a segment removed by hand: go on with the next one
                position = Position(position.segment + 1, 0)
                continue
            size = self._size(position.segment)
            want = max(max_bytes, HEADER_BYTES)
            data = os.pread(fd, want, position.offset)
            final = position.offset + len(data) >= size and position.segment < self._write_segment
            got, consumed, damaged = parse_frames(data, final=final, max_frames=max_frames)
            if not got and not consumed and not final:
                # One frame longer than max_bytes: read exactly it.
                if len(data) >= HEADER_BYTES:
                    _, length, _ = _HEADER.unpack_from(data)
                    data = os.pread(fd, HEADER_BYTES + min(length, MAX_BODY_BYTES), position.offset)
                    final = position.offset + len(data) >= size
                    got, consumed, damaged = parse_frames(data, final=final)
                if not consumed:
                    break  # the writer's frame is not complete (never in one process)
            frames.extend(got)
            skipped += damaged
            self._last_read_start = position
            position = Position(position.segment, position.offset + consumed)
        return frames, position, skipped

    def frame_end(self, frame: Frame) -> Position:
        """Where `frame`, returned by the last read(), ends: to resume after it."""
        start = self._last_read_start
        return Position(start.segment, start.offset + frame.end)

    def _size(self, segment: int) -> int:
        if segment == self._write_segment:
            return self._write_size
        fd = self._read_fd(segment)
        return 0 if fd is None else os.fstat(fd).st_size

    def _read_fd(self, segment: int) -> int | None:
        fd = self._read_fds.get(segment)
        if fd is None:
            try:
                fd = os.open(self._path(segment), os.O_RDONLY)
            except FileNotFoundError:
                return None
            self._read_fds[segment] = fd
        return fd

    def scan(self, start: Position) -> Iterator[tuple[list[Frame], int]]:
        """Every frame from `start` to the end, in chunks: (frames, bytes skipped)."""
        position = start
        while position < self.end:
            frames, after, skipped = self.read(position, 1 << 20)
            if after == position:
                break
            position = after
            yield frames, skipped

    def truncate_torn_tail(self) -> int:
        """At start: cuts the last segment after its last whole frame (a write torn by a
        crash), so new frames follow good ones. Returns the bytes cut."""
        segment = self._write_segment
        fd = self._read_fd(segment)
        if fd is None or self._write_size == 0:
            return 0
        start = self.cursor.offset if self.cursor.segment == segment else 0
        good = offset = start
        while offset < self._write_size:
            data = os.pread(fd, 1 << 20, offset)
            if not data:
                break
            frames, consumed, _ = parse_frames(data, final=offset + len(data) >= self._write_size)
            if frames:
                good = offset + frames[-1].end
            if consumed == 0:
                break
            offset += consumed
        cut = self._write_size - good
        if cut > 0:
            os.ftruncate(self._write_fd, good)
            self._write_size = good
        return cut

    # -- delivered ---------------------------------------------------------------------------

    def commit(self, position: Position) -> None:
        """Everything before `position` is delivered: drop old segments, persist the cursor.

        The segments go first: on a full disk, their space is what the cursor's write needs
        (a crash in between delivers again from the start of the first segment left)."""
        self.cursor = position
        while self._oldest < position.segment:  # segments the cursor has left
            try:
                self._remove(self._oldest)
            except OSError:
                break  # a failing disk: the next commit tries again (a restart would, too)
            self._oldest += 1
        self._save_cursor()

    def _save_cursor(self) -> None:
        tmp = self.directory / "cursor.tmp"
        position = self.cursor
        try:
            tmp.write_text(json.dumps({"segment": position.segment, "offset": position.offset}))
            os.replace(tmp, self.directory / "cursor")
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # a partial one would only hold space
            self.cursor_error = describe(exc, tmp)
            held = self._cursor_log.due()
            if held is not None:
                log.warning(
                    "disk buffer cursor not saved; saved by a later commit (a crash before "
                    "then delivers again from the last saved cursor)",
                    extra={
                        "fields": {
                            "buffer": str(self.directory),
                            "error": self.cursor_error,
                            "failures_not_logged": held,
                        }
                    },
                )
            return
        if self.cursor_error is not None:
            self.cursor_error = None
            if self._cursor_log.ended():
                log.info(
                    "disk buffer cursor saved again",
                    extra={"fields": {"buffer": str(self.directory)}},
                )

    def close(self) -> None:
        if self.cursor_error is not None:
            self._save_cursor()  # a last try: less to deliver again at the next start
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        os.close(self._write_fd)
        os.close(self._lock_fd)
