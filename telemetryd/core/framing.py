"""Sans-IO framing of newline-delimited JSON: bytes in, lines out.

The framer never touches a socket, so it is tested one byte at a time. It splits each chunk
once (a single C-level `split`), keeps at most `max_line_bytes` of an unfinished line, and turns
a line over the limit into a `LineTooLong` event in its place, discarding the rest of that line
as it arrives: a client can never make the daemon buffer more than one limit's worth of bytes.
A line that arrives over many reads (a client writing it in small pieces) is appended to, never
re-concatenated, so it costs time linear in its size.
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

    __slots__ = (
        "_discarded",
        "_discarding",
        "_growing",
        "_head",
        "_tail",
        "copied_bytes",
        "max_line_bytes",
    )

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        # An unfinished line is the tail of one read (the common case: a line cut by a read's
        # end), or, once it spans more reads, a bytearray that grows in amortized linear time.
        self._tail = b""
        self._growing: bytearray | None = None
        self._discarding = False
        self._discarded = 0
        self._head = b""
        #: Bytes copied to assemble lines that span reads: linear in their size, never quadratic.
        self.copied_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an unfinished line; never more than max_line_bytes."""
        growing = self._growing
        return len(self._tail) if growing is None else len(growing)

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
        lines: list[Frame] = data.split(b"\n")  # type: ignore[assignment]  # list is invariant
        tail: bytes = lines.pop()  # type: ignore[assignment]  # split gives bytes only
        limit = self.max_line_bytes
        if self._tail or self._growing is not None:
            if not lines:
                self._grow(tail)  # still no newline: the line goes on
                return out
            out.append(self._finish(lines[0]))  # type: ignore[arg-type]
            del lines[0]
        # Data no longer than the limit holds no line over it: skip measuring each line.
        if len(data) > limit and lines and max(map(len, lines)) > limit:  # type: ignore[arg-type]
            lines = [_checked(line, limit) for line in lines]  # type: ignore[arg-type]
        if out:
            out.extend(lines)
        else:
            out = lines
        if len(tail) > limit:
            self._discard(tail[:KEPT_HEAD_BYTES], len(tail))
        else:
            self._tail = tail
        return out

    def _grow(self, data: bytes) -> None:
        """Appends to the unfinished line, or starts discarding it once it passes the limit."""
        if not data:
            return
        growing = self._growing
        held = self._tail if growing is None else growing
        size = len(held) + len(data)
        if size > self.max_line_bytes:
            self._tail = b""
            self._growing = None
            self._discard(_head_of(held, data), size)
            return
        if growing is None:
            growing = self._growing = bytearray(held)
            self._tail = b""
            self.copied_bytes += len(held)
        growing += data
        self.copied_bytes += len(data)

    def _finish(self, end: bytes) -> Frame:
        """The unfinished line, completed by `end` (what its newline's read brought of it)."""
        growing = self._growing
        if growing is None:
            line = self._tail + end
            self._tail = b""
        else:
            self._growing = None
            growing += end
            line = bytes(growing)
        self.copied_bytes += len(line)
        return _checked(line, self.max_line_bytes)

    def _discard(self, head: bytes, size: int) -> None:
        """The unfinished line passed the limit: keep its head and count the rest as it comes."""
        self._discarding = True
        self._discarded = size
        self._head = head

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
        if self._tail or self._growing is not None:
            return self._finish(b"")
        return None


def _head_of(held: bytes | bytearray, data: bytes) -> bytes:
    """The first KEPT_HEAD_BYTES of `held` followed by `data`, copying no more than that."""
    head = bytes(held[:KEPT_HEAD_BYTES])
    return head + data[: KEPT_HEAD_BYTES - len(head)]


def _checked(line: bytes, limit: int) -> Frame:
    if len(line) <= limit:
        return line
    return LineTooLong(len(line), line[:KEPT_HEAD_BYTES], limit)
