"""The sans-IO framer, fed as a socket would feed it: in arbitrary chunks, down to single bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telemetryd.core.framing import KEPT_HEAD_BYTES, Frame, LineFramer, LineTooLong


def frame_all(framer: LineFramer, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    last = framer.close()
    if last is not None:
        out.append(last)
    return out


def expected(stream: bytes, limit: int) -> list[Frame]:
    """The reference: split on newlines, a final unterminated line counts, long lines flagged."""
    lines = stream.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [
        line if len(line) <= limit else LineTooLong(len(line), line[:KEPT_HEAD_BYTES], limit)
        for line in lines
    ]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


def test_one_byte_at_a_time() -> None:
    stream = b'{"a":1}\n{"b":2}\n\n{"c":3}'
    framer = LineFramer(100)
    assert frame_all(framer, [bytes([b]) for b in stream]) == [
        b'{"a":1}',
        b'{"b":2}',
        b"",
        b'{"c":3}',
    ]


def test_line_exactly_at_the_limit_passes_and_one_over_is_flagged() -> None:
    framer = LineFramer(5)
    assert framer.feed(b"12345\n123456\nok\n") == [b"12345", LineTooLong(6, b"123456", 5), b"ok"]


def test_oversized_line_is_discarded_as_it_arrives_and_the_buffer_stays_bounded() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 8) == []
    assert framer.feed(b"x" * 8) == []  # now over the limit: discarding
    assert framer.buffered_bytes == 0
    for _ in range(1000):
        assert framer.feed(b"y" * 1000) == []
        assert framer.buffered_bytes == 0
    head = (b"x" * 16 + b"y" * 1_000_000 + b"zz")[:KEPT_HEAD_BYTES]
    assert framer.feed(b"zz\nnext\n") == [LineTooLong(16 + 1_000_000 + 2, head, 10), b"next"]


def test_close_reports_an_unfinished_oversized_line() -> None:
    framer = LineFramer(3)
    framer.feed(b"abcdef")
    assert framer.close() == LineTooLong(6, b"abcdef", 3)
    assert framer.close() is None


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    terminated=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    limit=st.integers(min_value=1, max_value=50),
)
def test_any_chunking_gives_the_reference_framing(
    lines: list[bytes], terminated: bool, cuts: list[int], limit: int
) -> None:
    stream = b"\n".join(lines) + (b"\n" if terminated and lines else b"")
    framer = LineFramer(limit)
    assert frame_all(framer, split_at(stream, cuts)) == expected(stream, limit)


@given(
    data=st.binary(max_size=500),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=20),
    limit=st.integers(min_value=1, max_value=64),
)
def test_buffer_never_exceeds_the_limit(data: bytes, cuts: list[int], limit: int) -> None:
    framer = LineFramer(limit)
    for chunk in split_at(data, cuts):
        framer.feed(chunk)
        assert framer.buffered_bytes <= limit


@given(
    lines=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")) | st.just(b"x" * 120),
        max_size=20,
    ),
    terminated=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=60),
    limit=st.integers(min_value=1, max_value=100),
)
def test_any_split_gives_the_frames_of_the_whole(
    lines: list[bytes], terminated: bool, cuts: list[int], limit: int
) -> None:
    """However the stream is cut (lines spanning many reads, long lines among them), the frames
    are those of the stream fed at once."""
    stream = b"\n".join(lines) + (b"\n" if terminated and lines else b"")
    whole = frame_all(LineFramer(limit), [stream])
    assert frame_all(LineFramer(limit), split_at(stream, cuts)) == whole


def test_a_long_line_in_small_pieces_costs_linear_copying() -> None:
    """A 1 MB line written 100 bytes at a time: the framer copies each byte a bounded number of
    times (re-concatenating per read would copy some 5 GB)."""
    size, piece = 1_000_000, 100
    line = b'{"data":"' + b"x" * (size - 11) + b'"}'
    framer = LineFramer(2 * size)
    frames: list[Frame] = []
    for start in range(0, size, piece):
        frames.extend(framer.feed(line[start : start + piece]))
    frames.extend(framer.feed(b"\nnext\n"))
    assert frames == [line, b"next"]
    assert framer.copied_bytes <= 3 * size
    assert framer.buffered_bytes == 0


def test_a_line_cut_by_reads_is_kept_until_its_newline_and_bounded_by_the_limit() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"ok\nabc") == [b"ok"]
    assert framer.feed(b"def") == []
    assert framer.buffered_bytes == 6
    assert framer.feed(b"gh") == []
    assert framer.feed(b"ij\nz") == [b"abcdefghij"]
    assert framer.feed(b"12345") == []
    assert framer.feed(b"67") == []
    assert framer.feed(b"890") == []  # 11 bytes now: over the limit, discarded from here on
    assert framer.buffered_bytes == 0
    assert framer.feed(b"1\n") == [LineTooLong(12, b"z12345678901", 10)]
