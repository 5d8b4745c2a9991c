"""Sans-IO framing of newline-delimited JSON: bytes in, lines out.

The framer never touches a socket, so it is tested one byte at a time. It splits each chunk
once (a single C-level `split`), keeps at most `max_line_bytes` of an unfinished line, and turns
a line over the limit into a `LineTooLong` event in its place, discarding the rest of that line
as it arrives: a client can never make the daemon buffer more than one limit's worth of bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How much of an oversized line is kept, for the dead-letter record.
KEPT_HEAD_BYTES = 1024


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Stands in the output where a line over the limit was."""

    size: int  # bytes seen of the line (the whole line, once its newline arrived)
    head: bytes  # its first KEPT_HEAD_BYTES bytes
    limit: int


Frame = bytes | LineTooLong


class LineFramer:
    """Splits a byte stream into lines of at most `max_line_bytes` (the newline not counted)."""

    __slots__ = ("_buffer", "_discarded", "_discarding", "_head", "max_line_bytes")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._buffer = b""
        self._discarding = False
        self._discarded = 0
        self._head = b""

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an unfinished line; never more than max_line_bytes."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Returns the lines completed by `data`, in order, without their newlines."""
        out: list[Frame] = []
        if self._discarding:
            newline = data.find(b"\n")
            seen = data if newline < 0 else data[:newline]
            if len(self._head) < KEPT_HEAD_BYTES:
                self._head += seen[: KEPT_HEAD_BYTES - len(self._head)]
            self._discarded += len(seen)
            if newline < 0:
                return out
            out.append(LineTooLong(self._discarded, self._head, self.max_line_bytes))
            self._discarding = False
            self._head = b""
            data = data[newline + 1 :]
        buffered = self._buffer + data if self._buffer else data
        lines: list[Frame] = buffered.split(b"\n")  # type: ignore[assignment]  # list is invariant
        tail: bytes = lines.pop()  # type: ignore[assignment]  # split gives bytes only
        limit = self.max_line_bytes
        # A buffer no longer than the limit holds no line over it: skip measuring each line.
        if len(buffered) > limit and lines and max(map(len, lines)) > limit:  # type: ignore[arg-type]
            lines = [_checked(line, limit) for line in lines]  # type: ignore[arg-type]
        if out:
            out.extend(lines)
        else:
            out = lines
        if len(tail) > limit:
            self._discarding = True
            self._discarded = len(tail)
            self._head = tail[:KEPT_HEAD_BYTES]
            self._buffer = b""
        else:
            self._buffer = tail
        return out

    def close(self) -> Frame | None:
        """End of stream: an unfinished last line is returned as a line of its own.

        `printf '{...}' | socat` sends no final newline; such a line is an event like any other.
        A line cut by a disconnect fails to decode and is rejected as invalid JSON, so nothing
        is silently lost either way.
        """
        if self._discarding:
            self._discarding = False
            frame: Frame = LineTooLong(self._discarded, self._head, self.max_line_bytes)
            self._head = b""
            return frame
        if self._buffer:
            line, self._buffer = self._buffer, b""
            return line
        return None


def _checked(line: bytes, limit: int) -> Frame:
    if len(line) <= limit:
        return line
    return LineTooLong(len(line), line[:KEPT_HEAD_BYTES], limit)
