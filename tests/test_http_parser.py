"""The sans-IO HTTP request reader (telemetryd.sources.http.parser), without sockets: the events
do not depend on how the bytes are split, every limit holds at exactly the limit and fails one
byte over, and no input makes it raise."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.sources.http.parser import (
    CHUNK_LINE_MAX_BYTES,
    CHUNK_MIN_AVERAGE_BYTES,
    CHUNKS_FREE,
    END,
    Body,
    EndOfMessage,
    Event,
    ProtocolError,
    RequestHead,
    RequestReader,
)

HEAD_MAX = 1024
BODY_MAX = 4096


def normal(events: list[Event]) -> list[Event]:
    """Adjacent body chunks as one: how a body is cut into chunks depends on the feeds."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + event.data)
        elif isinstance(event, Body) and not event.data:
            continue
        else:
            out.append(event)
    return out


def read(
    pieces: list[bytes], *, eof: bool = False, head: int = HEAD_MAX, body: int = BODY_MAX
) -> list[Event]:
    reader = RequestReader(head, body)
    events: list[Event] = []
    for piece in pieces:
        events += reader.feed(piece)
    if eof:
        events += reader.feed_eof()
    return normal(events)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def check_invariant(data: bytes, cuts: list[int], *, eof: bool = True) -> list[Event]:
    whole = read([data], eof=eof)
    assert read(bytewise(data), eof=eof) == whole
    assert read(split_at(data, cuts), eof=eof) == whole
    return whole


def head_of(events: list[Event]) -> RequestHead:
    head = events[0]
    assert isinstance(head, RequestHead), events
    return head


# --- requests, as a client may send them --------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "expect"})
VALUE = st.text("abcdefghijklmnopqrstuvwxyz0123456789 /;=,.", max_size=40).map(str.strip)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"]))
    path = "/" + draw(st.text("abcxyz/_-.%0123456789", max_size=30))
    query = draw(st.one_of(st.just(""), st.text("abc=&%20", max_size=20).map("?{}".format)))
    headers = [("Host", "example")]
    # Other headers never repeat the ones set here: a second Host or framing header makes the
    # request invalid (400, test_malformed_requests_are_400), and these are valid requests.
    headers += draw(
        st.lists(st.tuples(TOKEN.filter(lambda n: n not in OWN_HEADERS), VALUE), max_size=5)
    )
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "none" and body:
        framing = "length"
    encoded = body
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        parts, at = [], 0
        for size in sizes:
            if at >= len(body):
                break
            chunk = body[at : at + size]
            at += len(chunk)
            extension = draw(st.sampled_from([b"", b";a=b", b';name="v"']))
            parts.append(b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk))
        if at < len(body):
            parts.append(b"%x\r\n%s\r\n" % (len(body) - at, body[at:]))
        trailers = draw(st.sampled_from([b"", b"X-Trailer: yes\r\n", b"A: 1\r\nB: 2\r\n"]))
        encoded = b"".join(parts) + b"0\r\n" + trailers + b"\r\n"
    if draw(st.booleans()):
        headers.append(("Expect", "100-continue"))
    lines = [f"{method} {path}{query} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded


STREAMS = st.lists(requests(), min_size=1, max_size=4).map(b"".join)
CUTS = st.lists(st.integers(0, 4000), max_size=12)


@settings(max_examples=300, deadline=None)
@given(stream=STREAMS, cuts=CUTS)
def test_any_split_of_pipelined_requests_gives_the_same_events(
    stream: bytes, cuts: list[int]
) -> None:
    whole = check_invariant(stream, cuts)
    heads = [event for event in whole if isinstance(event, RequestHead)]
    assert heads
    assert not [event for event in whole if isinstance(event, ProtocolError)], whole
    assert whole.count(END) == len(heads)


class _Callbacks:
    """llhttp's own view of a head, through httptools' callbacks."""

    def __init__(self) -> None:
        self.heads: list[tuple[bytes, bytes, list[tuple[bytes, bytes]]]] = []
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self._url, self._headers = b"", []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        self.heads.append((self.parser.get_method(), self._url, list(self._headers)))


@settings(max_examples=200, deadline=None)
@given(stream=STREAMS)
def test_heads_are_what_llhttp_reports(stream: bytes) -> None:
    """The reader takes a head's parts from its bytes once llhttp has checked them: the same
    method, target and headers as llhttp's callbacks give."""
    expected = _Callbacks()
    expected.parser.feed_data(stream)
    heads = [e for e in read([stream]) if isinstance(e, RequestHead)]
    assert [(h.method, h.target, h.headers) for h in heads] == expected.heads
    for head in heads:
        types = [value for name, value in head.headers if name == b"content-type"]
        assert head.content_type == (types[-1] if types else None)


@settings(max_examples=300, deadline=None)
@given(stream=STREAMS, junk=st.binary(max_size=200), cuts=CUTS)
def test_requests_then_junk_split_anyhow_give_the_same_events(
    stream: bytes, junk: bytes, cuts: list[int]
) -> None:
    check_invariant(stream + junk, cuts)


def test_a_request_read_from_one_feed() -> None:
    events = read(
        [
            b"POST /api/events?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type:  application/json \r\n"
            b"Content-Length: 2\r\nAuthorization: token abc\r\n\r\n{}"
        ]
    )
    assert events == [
        RequestHead(
            b"POST",
            b"/api/events?x=1",
            [
                (b"host", b"h"),
                (b"content-type", b"application/json"),
                (b"content-length", b"2"),
                (b"authorization", b"token abc"),
            ],
            "1.1",
            keep_alive=True,
            expect_continue=False,
            upgrade=False,
            content_length=2,
            chunked=False,
            content_type=b"application/json",
            authorization=b"token abc",
        ),
        Body(b"{}"),
        END,
    ]


def test_pipelined_requests_come_out_of_one_feed_in_order() -> None:
    one = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    two = b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
    three = b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    events = read([one + two + three])
    assert [e.target for e in events if isinstance(e, RequestHead)] == [b"/a", b"/b", b"/c"]
    assert [e for e in events if not isinstance(e, RequestHead)] == [
        Body(b"abc"),
        END,
        Body(b"de"),
        END,
        END,
    ]


# --- the head limit -----------------------------------------------------------------------------


def head_of_size(size: int) -> bytes:
    """A whole head of exactly `size` bytes, its blank line included."""
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: "
    pad = size - len(start) - 4
    assert pad >= 0
    return start + b"a" * pad + b"\r\n\r\n"


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_a_head_of_exactly_the_limit_is_read_and_one_byte_more_is_431(split: str) -> None:
    def feed(data: bytes) -> list[Event]:
        return read([data] if split == "whole" else bytewise(data))

    at_limit = feed(head_of_size(HEAD_MAX))
    assert isinstance(at_limit[0], RequestHead)
    assert at_limit[1:] == [END]
    over = feed(head_of_size(HEAD_MAX + 1))
    assert over == [ProtocolError(431, f"request line and headers over {HEAD_MAX} bytes")]


def test_an_unfinished_head_is_431_as_soon_as_it_passes_the_limit() -> None:
    reader = RequestReader(HEAD_MAX, BODY_MAX)
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: "
    assert reader.feed(start + b"a" * (HEAD_MAX - len(start))) == []  # exactly the limit
    assert reader.pending
    (error,) = reader.feed(b"a")  # one byte more, the head still unfinished
    assert isinstance(error, ProtocolError)
    assert error.status == 431
    assert reader.feed(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == []  # nothing after


def test_the_head_limit_counts_each_request_of_a_pipeline_on_its_own() -> None:
    head = head_of_size(HEAD_MAX)
    events = read([head * 3])
    assert [type(e) for e in events] == [RequestHead, type(END)] * 3


def test_empty_lines_before_a_request_line_count_for_its_head() -> None:
    head = head_of_size(HEAD_MAX - 2)
    assert isinstance(read([b"\r\n" + head])[0], RequestHead)
    assert read([b"\r\n\r\n" + head])[0] == ProtocolError(
        431, f"request line and headers over {HEAD_MAX} bytes"
    )
    assert read([b"\r\n" * 600]) == [
        ProtocolError(431, f"request line and headers over {HEAD_MAX} bytes")
    ]


def test_what_llhttp_finds_wrong_within_the_head_limit_is_400_before_431() -> None:
    bad = b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n"
    for pieces in ([bad + b"a" * HEAD_MAX], [*bytewise(bad + b"a" * 100), b"a" * HEAD_MAX]):
        (error,) = read(pieces)
        assert isinstance(error, ProtocolError)
        assert error.status == 400


# --- the body limit -----------------------------------------------------------------------------


def with_length(length: int, body: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (length, body)


def test_a_content_length_of_exactly_the_limit_is_read() -> None:
    body = b"b" * BODY_MAX
    events = check_invariant(with_length(BODY_MAX, body), [100, 2000])
    assert events[1:] == [Body(body), END]


def test_a_content_length_one_byte_over_is_413_before_any_body() -> None:
    reader = RequestReader(HEAD_MAX, BODY_MAX)
    events = reader.feed(with_length(BODY_MAX + 1))  # no body sent at all
    assert head_of(events).content_length == BODY_MAX + 1
    assert events[1:] == [
        ProtocolError(413, f"Content-Length {BODY_MAX + 1} over the limit of {BODY_MAX} bytes")
    ]
    assert reader.feed(b"x" * 100) == []


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
        + b"0\r\n"
        + trailers
        + b"\r\n"
    )


def test_a_chunked_body_of_exactly_the_limit_is_read() -> None:
    events = check_invariant(chunked(b"a" * 4000, b"b" * (BODY_MAX - 4000)), [70, 3000])
    assert events[1:] == [Body(b"a" * 4000 + b"b" * (BODY_MAX - 4000)), END]


def test_a_chunked_body_is_413_as_soon_as_its_chunks_pass_the_limit() -> None:
    stream = chunked(b"a" * 4000, b"b" * (BODY_MAX - 4000 + 1))
    whole = check_invariant(stream, [70, 3000, 4100])
    assert whole[1:] == [
        Body(b"a" * 4000),
        ProtocolError(413, f"chunked body over {BODY_MAX} bytes"),
    ]
    # the answer comes as soon as the chunk size that passes the limit has arrived
    reader = RequestReader(HEAD_MAX, BODY_MAX)
    cut = stream.index(b"\r\n", stream.index(b"a" * 4000) + 4000 + 2) + 2
    events = reader.feed(stream[:cut])
    assert isinstance(events[-1], ProtocolError)
    assert events[-1].status == 413


def test_a_body_of_tiny_chunks_is_400_too_many_chunks_at_once() -> None:
    """CHUNKS_FREE chunks of any size, then one per CHUNK_MIN_AVERAGE_BYTES of body: one-byte
    chunks are refused a few KB into the body, however long it was to be."""
    big = 1 << 20
    allowed = CHUNKS_FREE + CHUNKS_FREE // (CHUNK_MIN_AVERAGE_BYTES - 1)
    fits = chunked(*[b"x"] * allowed)
    events = RequestReader(HEAD_MAX, big).feed(fits)
    assert events[1:] == [Body(b"x" * allowed), END]  # one Body for the feed, not one per chunk
    reader = RequestReader(HEAD_MAX, big)
    events = reader.feed(chunked(*[b"x"] * (allowed + 1)) + b"1\r\nx\r\n" * 100_000)
    assert events[1:] == [
        Body(b"x" * allowed),
        ProtocolError(
            400,
            f"{allowed + 1} chunks for {allowed + 1} bytes of body: at most {CHUNKS_FREE} plus "
            f"one per {CHUNK_MIN_AVERAGE_BYTES} bytes",
            "too_many_chunks",
        ),
    ]
    # an event line (or a line and its newline apart) per chunk is far within it
    lines = [b'{"schema_id": "https://example.org/e", "data": {"n": %d}}' % i for i in range(5000)]
    apart = [part for line in lines for part in (line, b"\n")]
    events = read([chunked(*apart)], body=big)
    assert events[1:] == [Body(b"".join(apart)), END]


def test_trailers_and_chunk_size_lines_are_bounded() -> None:
    room = HEAD_MAX - len(b"\r\n")  # the blank line counts too
    fits = b"X: " + b"t" * (room - 5) + b"\r\n"
    assert check_invariant(chunked(b"abc", trailers=fits), [60, 90])[1:] == [Body(b"abc"), END]
    over = b"X: " + b"t" * (room - 4) + b"\r\n"
    assert check_invariant(chunked(b"abc", trailers=over), [60, 90])[-1] == ProtocolError(
        431, f"trailers over {HEAD_MAX} bytes"
    )
    extension = b";e=" + b"x" * CHUNK_LINE_MAX_BYTES
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = check_invariant(head + b"3" + extension + b"\r\nabc\r\n0\r\n\r\n", [60, 90])
    assert events[-1] == ProtocolError(400, f"chunk size line over {CHUNK_LINE_MAX_BYTES} bytes")


# --- malformed requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: example\r\nhost: \r\n\r\n",  # found by hypothesis in CI
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET /\r\n\r\n",  # HTTP/0.9
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(data: bytes) -> None:
    events = check_invariant(data, [5, 17, 40])
    error = events[-1]
    assert isinstance(error, ProtocolError), events
    assert error.status == 400
    assert error.message


def test_an_end_of_input_inside_a_request_is_400_and_between_requests_nothing() -> None:
    assert read([b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"], eof=True)[-1] == END
    assert read([b"\r\n"], eof=True) == []
    assert read([b"GET / HTTP/1.1\r\nHo"], eof=True) == [
        ProtocolError(400, "peer unexpectedly closed connection")
    ]
    assert read([with_length(5, b"ab")], eof=True)[-1] == ProtocolError(
        400,
        "peer closed connection without sending complete message body "
        "(received 2 bytes, expected 5)",
    )
    assert read([chunked(b"abc")[:-4]], eof=True)[-1] == ProtocolError(
        400,
        "peer closed connection without sending complete message body: incomplete chunked read",
    )


# --- fuzzing --------------------------------------------------------------------------------------

PREFIXES = [
    b"",
    b"GET / HTTP/1.1\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\n",
    b"POST /api/events/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /x HTTP/1.0\r\n\r\n",
]


@settings(max_examples=500, deadline=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    junk=st.binary(max_size=2000),
    cuts=CUTS,
    refuse=st.booleans(),
)
def test_arbitrary_bytes_give_only_documented_events(
    prefix: bytes, junk: bytes, cuts: list[int], refuse: bool
) -> None:
    reader = RequestReader(256, 512)
    events: list[Event] = []

    def take(new: list[Event]) -> None:
        events.extend(new)
        if refuse and any(isinstance(e, RequestHead) and e.upgrade for e in new):
            take(reader.refuse_upgrade())  # answered without switching: HTTP goes on

    for piece in split_at(prefix + junk, cuts):
        take(reader.feed(piece))
    take(reader.feed_eof())
    for event in events:
        assert isinstance(event, RequestHead | Body | EndOfMessage | ProtocolError)
    errors = [e for e in events if isinstance(e, ProtocolError)]
    if errors:
        assert errors == events[-1:]  # an error is the last event
        assert errors[0].status in (400, 413, 431)


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=600), cuts=CUTS)
def test_arbitrary_bytes_split_anyhow_give_the_same_events(junk: bytes, cuts: list[int]) -> None:
    for prefix in PREFIXES[:5]:
        check_invariant(prefix + junk, cuts)


# --- keep-alive, 100-continue, upgrades -----------------------------------------------------------


def test_keep_alive_and_expect_continue() -> None:
    assert head_of(read([b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"])).keep_alive
    assert not head_of(read([b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"])).keep_alive
    assert not head_of(read([b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"])).keep_alive
    expects = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
    assert head_of(read([expects])).expect_continue
    assert not head_of(read([expects.replace(b"1.1", b"1.0")])).expect_continue


def test_nothing_is_read_after_a_request_that_closes_the_connection() -> None:
    close = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    events = read([close + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + b"junk"])
    assert len(events) == 2
    assert events[1] == END


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def test_an_accepted_upgrade_hands_over_the_bytes_after_its_head() -> None:
    for pieces in ([UPGRADE + b"\x81\x00frames"], [*bytewise(UPGRADE + b"\x81\x00"), b"frames"]):
        reader = RequestReader(HEAD_MAX, BODY_MAX)
        events: list[Event] = []
        for piece in pieces:
            events += reader.feed(piece)
        assert head_of(events).upgrade
        assert events[1:] == [END]
        assert reader.accept_upgrade() == b"\x81\x00frames"
        assert reader.feed(b"more") == []


def test_a_refused_upgrade_goes_on_reading_http() -> None:
    reader = RequestReader(HEAD_MAX, BODY_MAX)
    assert head_of(reader.feed(UPGRADE + NEXT[:10])).upgrade
    assert reader.feed(NEXT[10:]) == []  # held until the caller decides
    events = reader.refuse_upgrade()
    assert head_of(events).target == b"/next"
    assert events[1:] == [END]
    connect = RequestReader(HEAD_MAX, BODY_MAX)
    assert head_of(connect.feed(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n")).upgrade
    assert connect.feed_eof() == []
    assert connect.refuse_upgrade() == []


def test_an_upgrade_request_with_a_body_is_read_as_a_plain_request() -> None:
    h2c = b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    for framing, body in (
        (b"Content-Length: 3\r\n\r\n", b"abc"),
        (b"Transfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
    ):
        events = check_invariant(h2c + framing + body + NEXT, [30, 90, 100])
        assert not head_of(events).upgrade
        assert events[1:3] == [Body(b"abc"), END]
        assert head_of(events[3:]).target == b"/next"
