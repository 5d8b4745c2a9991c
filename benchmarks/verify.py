"""Counting what reached an output file: while a run goes (cheaply) and after it (exactly)."""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.events import event_index

READ_BYTES = 8 * 1024 * 1024


class LineCounter:
    """Counts complete lines of a file that grows while it is counted (newlines only, no
    parsing), reading only what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self.bytes = 0
        self._fd: int | None = None

    def poll(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return 0
        while True:
            data = os.pread(self._fd, READ_BYTES, self.bytes)
            if not data:
                return self.lines
            self.bytes += len(data)
            self.lines += data.count(b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LineCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OutputWatch:
    """LineCounters of the files that must each hold every event (one, or one per fan-out
    sink): `poll` is the smallest count. For the first file it also keeps when each count
    was first seen (`marks`: the count and perf_counter() just after the read that found
    it), from which benchmarks.latency_load times every record's appearance."""

    def __init__(self, paths: list[Path]) -> None:
        self.counters = [LineCounter(p) for p in paths]
        self.mark_lines = array("q")
        self.mark_times = array("d")
        self.polls = 0
        self.first_poll = self.last_poll = 0.0

    @property
    def lines(self) -> int:
        return min(c.lines for c in self.counters)

    @property
    def poll_period_secs(self) -> float | None:
        """The mean time between two reads of the first file: the marks' resolution."""
        if self.polls < 2:
            return None
        return (self.last_poll - self.first_poll) / (self.polls - 1)

    def poll(self) -> int:
        first = self.counters[0]
        before = first.lines
        first.poll()
        now = time.perf_counter()
        if not self.polls:
            self.first_poll = now
        self.polls += 1
        self.last_poll = now
        if first.lines != before:
            self.mark_lines.append(first.lines)
            self.mark_times.append(now)
        for c in self.counters[1:]:
            c.poll()
        return self.lines

    def close(self) -> None:
        for c in self.counters:
            c.close()

    def __enter__(self) -> OutputWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordPath(msgspec.Struct):
    """A record as telemetryd and jupyter_events write it: data keys at the top level."""

    path: str


class _Data(msgspec.Struct):
    path: str


class _Input(msgspec.Struct):
    """An input line, as the socket floor copies it unchanged."""

    data: _Data


@dataclass
class Delivery:
    """What an output holds, against the events 0 .. expected-1 that were sent."""

    expected: int
    lines: int = 0
    unique: int = 0
    duplicates: int = 0
    foreign: int = 0  # lines that are not one of the expected events (or not JSON at all)
    torn_tail: bool = False  # the file does not end with a newline
    samples: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.expected - self.unique

    @property
    def complete(self) -> bool:
        return (
            self.unique == self.expected
            and self.lines == self.expected
            and not self.duplicates
            and not self.foreign
            and not self.torn_tail
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "lines": self.lines,
            "unique": self.unique,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "foreign": self.foreign,
            "torn_tail": self.torn_tail,
            "complete": self.complete,
            "problem_samples": self.samples,
        }


def verify_delivery(paths: list[Path], expected: int, *, nested: bool = False) -> Delivery:
    """Decodes every line of `paths` and checks that events 0 .. expected-1 are each there once.

    `nested`: lines are input events (`data.path`) rather than records (`path`).
    """
    result = Delivery(expected)
    seen = bytearray(expected)
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_Input if nested else RecordPath)
    for path in paths:
        tail = b""
        with path.open("rb") as f:
            while chunk := f.read(READ_BYTES):
                chunk = tail + chunk
                cut = chunk.rfind(b"\n") + 1
                tail = chunk[cut:]
                _check_lines(chunk[:cut], decoder, nested, seen, result)
        if tail:
            result.torn_tail = True
            _check_lines(tail + b"\n", decoder, nested, seen, result)
    result.unique = expected - seen.count(0)
    return result


def _check_lines(
    block: bytes,
    decoder: msgspec.json.Decoder[Any],
    nested: bool,
    seen: bytearray,
    result: Delivery,
) -> None:
    if not block:
        return
    try:
        items = decoder.decode_lines(block)
    except (msgspec.DecodeError, msgspec.ValidationError):
        for line in block.splitlines():
            _check_lines_one(line, decoder, nested, seen, result)
        return
    result.lines += len(items)
    for item in items:
        _mark(item.data.path if nested else item.path, seen, result)


def _check_lines_one(
    line: bytes, decoder: msgspec.json.Decoder[Any], nested: bool, seen: bytearray, result: Delivery
) -> None:
    result.lines += 1
    try:
        item = decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        result.foreign += 1
        if len(result.samples) < 3:
            result.samples.append(line[:200].decode(errors="replace"))
        return
    _mark(item.data.path if nested else item.path, seen, result)


def _mark(path: str, seen: bytearray, result: Delivery) -> None:
    n = event_index(path)
    if n is None or n >= len(seen):
        result.foreign += 1
        if len(result.samples) < 3:
            result.samples.append(path[:200])
    elif seen[n]:
        result.duplicates += 1
    else:
        seen[n] = 1


def record_indices(path: Path) -> array[int]:
    """The event index of each line of `path`, in file order (-1 for a line that is not one
    of the benchmark's records)."""
    out = array("q")
    decoder: msgspec.json.Decoder[RecordPath] = msgspec.json.Decoder(RecordPath)
    with path.open("rb") as f:
        for line in f:
            try:
                n = event_index(decoder.decode(line).path)
            except (msgspec.DecodeError, msgspec.ValidationError):
                n = None
            out.append(-1 if n is None else n)
    return out
