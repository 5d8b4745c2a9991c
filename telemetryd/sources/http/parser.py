"""A sans-IO HTTP/1.1 request reader: bytes in, request events out (llhttp, through httptools).

`RequestReader.feed(data)` returns the events the bytes complete, in order, for as many
(pipelined) requests as they hold: a `RequestHead`, then the body as `Body` chunks, then `END`.
Whatever is wrong with the input is a `ProtocolError` (a status for the answer and a message),
after which the reader reads nothing more. The reader enforces every limit itself, so a caller
holds at most one unfinished head and the body chunks it has not taken yet:

- the request line and headers, counted from the end of the previous request to the end of the
  blank line that ends the head, are at most `max_head_bytes`; one byte more is 431, as soon as
  it has arrived, whether the head is finished or not (what llhttp finds wrong within the limit
  is a 400 first);
- a Content-Length over `max_body_bytes` is 413 right after the head, before any of the body;
  a chunked body is 413 as soon as the chunk sizes announced pass the limit; a chunk-size line
  over CHUNK_LINE_MAX_BYTES is 400 and trailers over `max_head_bytes` are 431;
- the chunks of a body: each costs a callback and a scan step whatever its size, so a body may
  have CHUNKS_FREE chunks plus one per CHUNK_MIN_AVERAGE_BYTES of it; more is 400
  (`too_many_chunks`), long before a body of one-byte chunks costs the loop any time;
- malformed input (llhttp's HttpParserError; an HTTP/1.1 request without Host, or with two;
  another version than HTTP/1.0 and 1.1) is 400.

llhttp never sees more than the request it is in: the reader finds where a head ends (the first
CRLF CRLF), where a body ends (Content-Length, or its own scan of the chunked framing) and
feeds llhttp up to there, so what follows is counted for the next request, and the events do
not depend on how the bytes were split into feeds. llhttp checks the syntax of everything it
is fed; when its idea of where a message ends differs from the reader's, that is a 400 too.

An upgrade request without a body (a WebSocket handshake, CONNECT) ends with a head whose
`upgrade` is set; the reader then holds what follows until the caller either takes it for the
new protocol (`accept_upgrade`) or answers the request normally and goes on reading HTTP
(`refuse_upgrade`). An upgrade request with a body (such as curl's h2c upgrade of a POST) is
read as a plain request. After a request that does not keep the connection alive (HTTP/1.0,
`Connection: close`), what follows is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import httptools

#: The longest chunk-size line, extensions included.
CHUNK_LINE_MAX_BYTES: Final = 4096
#: The chunks any chunked body may have, whatever their size.
CHUNKS_FREE: Final = 1024
#: Past CHUNKS_FREE, one more chunk per this many bytes of body (a client writing a line per
#: chunk, even one chunk for the line and one for its newline, stays far within it).
CHUNK_MIN_AVERAGE_BYTES: Final = 16

_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: A whole chunk-size line without extensions: the common case, read without copying it.
_SIZE_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
#: The headers the reader itself looks at.
_NOTED: Final = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"expect",
        b"content-type",
        b"authorization",
    )
)

# reader states
_HEAD: Final = 0  # between requests, or in a head
_BODY: Final = 1  # in a Content-Length body
_CHUNKED: Final = 2  # in a chunked body
_UPGRADE: Final = 3  # after an upgrade request's head: holding the bytes that follow
_UPGRADED: Final = 4  # the caller took the connection for another protocol
_CLOSED: Final = 5  # after a request that closes the connection
_FAILED: Final = 6  # after a ProtocolError

# chunked-body scan states
_SIZE: Final = 0  # in a chunk-size line
_DATA: Final = 1  # in a chunk's data
_DATA_CRLF: Final = 2  # in the CRLF after a chunk's data
_TRAILER: Final = 3  # in the trailer section, after the last chunk


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    #: Lower-case names, values without surrounding whitespace, in the order received.
    headers: list[tuple[bytes, bytes]]
    http_version: str  # "1.1" or "1.0"
    keep_alive: bool  # HTTP/1.1 without `Connection: close`
    expect_continue: bool  # HTTP/1.1 with `Expect: 100-continue`
    upgrade: bool  # the reader holds what follows: accept_upgrade() or refuse_upgrade()
    content_length: int | None
    chunked: bool
    content_type: bytes | None  # the last Content-Type
    #: The Authorization header; b"" when there were several (ambiguous: none is usable).
    authorization: bytes | None


@dataclass(slots=True)
class Body:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    pass


#: The end of a request (its body read, if it had one).
END: Final = EndOfMessage()


@dataclass(slots=True)
class ProtocolError:
    status: int  # what to answer: 400, 413 or 431
    message: str
    reason: str = "bad_request"  # the answer's and the count's reason, for a 400


Event = RequestHead | Body | EndOfMessage | ProtocolError


class RequestReader:
    def __init__(self, max_head_bytes: int, max_body_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        #: llhttp's body callbacks of the current feed: one Body for them all, not one per chunk
        self._parts: list[bytes] = []
        self._state = _HEAD
        self._held = bytearray()  # after an upgrade head
        self._eof = False
        # the head being read
        self._head_bytes = 0  # received, since the end of the previous request
        self._head = bytearray()  # those bytes, while the head is unfinished
        self._head_done = False  # llhttp has read a whole head
        self._complete = False  # llhttp has read a whole request
        self._synthetic = False  # feeding llhttp a made-up head: callbacks ignored
        self._keep_alive = True
        self._should_keep_alive = self._should_upgrade = False
        self._content_length: int | None = None
        # the body being read
        self._body_left = 0  # of a Content-Length body
        self._body_size = 0  # of a chunked body: the chunk sizes announced so far
        self._chunks = 0  # of a chunked body, so far
        self._chunk_state = _SIZE
        self._chunk_left = 0
        self._line = bytearray()  # an unfinished chunk-size or trailer line
        self._trailer_bytes = 0

    # -- the caller's side -------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether some of an unfinished request has arrived (a head begun, a body unread)."""
        state = self._state
        return state in (_BODY, _CHUNKED) or (state == _HEAD and self._head_bytes > 0)

    def feed(self, data: bytes | bytearray) -> list[Event]:
        """The events the bytes complete. Never raises for what a client sends."""
        events = self._events = []
        end = len(data)
        pos = 0
        while pos < end:
            state = self._state
            if state == _HEAD:
                pos = self._feed_head(data, pos)
            elif state == _BODY:
                pos = self._feed_body(data, pos)
            elif state == _CHUNKED:
                pos = self._feed_chunked(data, pos)
            else:
                if state == _UPGRADE:
                    self._held += data[pos:]
                break  # _UPGRADED, _CLOSED, _FAILED: nothing more is read
        self._flush_body()
        return events

    def feed_eof(self) -> list[Event]:
        """The client will send nothing more: a 400 when it left a request unfinished."""
        events = self._events = []
        state = self._state
        if state == _HEAD and self._head.lstrip(b"\r\n"):
            self._fail(400, "peer unexpectedly closed connection")
        elif state == _BODY:
            length = self._content_length or 0
            self._fail(
                400,
                "peer closed connection without sending complete message body "
                f"(received {length - self._body_left} bytes, expected {length})",
            )
        elif state == _CHUNKED:
            self._fail(
                400,
                "peer closed connection without sending complete message body: "
                "incomplete chunked read",
            )
        elif state == _UPGRADE:
            self._eof = True  # for refuse_upgrade()
        return events

    def accept_upgrade(self) -> bytes:
        """After an upgrade head: the bytes that followed it, for the new protocol."""
        if self._state != _UPGRADE:
            raise RuntimeError("no upgrade request to accept")
        self._state = _UPGRADED
        held = bytes(self._held)
        self._held = bytearray()
        return held

    def refuse_upgrade(self) -> list[Event]:
        """After an upgrade head answered without switching: the events of what followed."""
        if self._state != _UPGRADE:
            raise RuntimeError("no upgrade request to refuse")
        held = bytes(self._held)
        self._held = bytearray()
        self._next_request()
        events = self.feed(held) if held else []
        if self._eof:
            events += self.feed_eof()
        return events

    # -- the reader's side -------------------------------------------------------------------

    def _fail(self, status: int, message: str, reason: str = "bad_request") -> None:
        self._flush_body()
        self._state = _FAILED
        self._events.append(ProtocolError(status, message, reason))

    def _flush_body(self) -> None:
        parts = self._parts
        if parts:
            self._events.append(Body(parts[0] if len(parts) == 1 else b"".join(parts)))
            parts.clear()

    def _execute(self, data: bytes | bytearray) -> bool:
        """Feeds llhttp; False (and a 400) when it finds the bytes malformed."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the head of an upgrade request ended: llhttp pauses there
        except httptools.HttpParserError as e:
            if isinstance(e, httptools.HttpParserCallbackError) and e.__context__ is not None:
                raise e.__context__ from None  # a bug in a callback, not the client's fault
            self._fail(400, str(e) or type(e).__name__)
            return False
        return True

    def _next_request(self) -> None:
        self._state = _HEAD if self._keep_alive else _CLOSED
        self._head_bytes = 0
        if self._head:
            self._head = bytearray()
        self._head_done = self._complete = False

    def _feed_head(self, data: bytes | bytearray, pos: int) -> int:
        """Up to the end of the head (the first CRLF CRLF) and no further: the head's size is
        known to the byte, and llhttp has not read into the body or the next request."""
        size = len(data)
        head = self._head
        end = -1
        if head:
            tail = head[-3:]
            found = (tail + data[pos : pos + 3]).find(b"\r\n\r\n")
            if found >= 0:
                end = pos + found + 4 - len(tail)
        if end < 0:
            found = data.find(b"\r\n\r\n", pos)
            if found >= 0:
                end = found + 4
        room = self.max_head_bytes - self._head_bytes
        stop = size if end < 0 else end
        if stop - pos > room:
            # Over the limit: what llhttp finds wrong in the part within it comes first.
            if room > 0 and not self._execute(data[pos : pos + room]):
                return size
            self._fail(431, f"request line and headers over {self.max_head_bytes} bytes")
            return size
        chunk = data[pos:stop]  # the whole of `data` is not copied
        if not self._execute(chunk):
            return size
        self._head_bytes += stop - pos
        if not self._head_done:
            head += chunk  # unfinished, or only empty lines so far
            return stop
        return self._on_head(bytes(head + chunk) if head else bytes(chunk), data, stop)

    def _on_head(self, head: bytes, data: bytes | bytearray, end: int) -> int:
        """llhttp has checked the head's syntax (strictly: CRLF line ends, no folded lines, a
        token and a colon opening each header line): the reader takes its parts from the
        bytes, faster than from a callback per part."""
        size = len(data)
        lines = head.lstrip(b"\r\n").split(b"\r\n")
        request_line = lines[0].split()
        if len(request_line) != 3:
            self._fail(400, "malformed request line")
            return size
        method, target, protocol = request_line
        if protocol == b"HTTP/1.1":
            version = "1.1"
        elif protocol == b"HTTP/1.0":
            version = "1.0"
        else:
            self._fail(400, f"unsupported HTTP version {protocol.decode('latin-1')}")
            return size
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = expect = False
        hosts = 0
        content_type = authorization = None
        for line in lines[1:-2]:
            name, _, value = line.partition(b":")
            name = name.lower()
            value = value.strip(b" \t")
            headers.append((name, value))
            if name not in _NOTED:
                continue
            if name == b"host":
                hosts += 1
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = int(value)  # llhttp checked it: digits, once
            elif name == b"authorization":
                authorization = value if authorization is None else b""
            elif name == b"transfer-encoding":
                chunked = True  # llhttp refuses a request's that does not end in chunked
            elif name == b"expect":
                expect = expect or b"100-continue" in [t.strip() for t in value.lower().split(b",")]
        if hosts > 1:
            self._fail(400, "Found multiple Host: headers")
            return size
        if version == "1.1" and not hosts:
            self._fail(400, "Missing mandatory Host: header")
            return size
        self._keep_alive = keep_alive = version == "1.1" and self._should_keep_alive
        self._content_length = length
        has_body = chunked or bool(length)
        upgrade = self._should_upgrade and not has_body
        events = self._events
        events.append(
            RequestHead(
                method,
                target,
                headers,
                version,
                keep_alive,
                expect and version == "1.1",
                upgrade,
                length,
                chunked,
                content_type,
                authorization,
            )
        )
        if length is not None and length > self.max_body_bytes:
            self._fail(
                413, f"Content-Length {length} over the limit of {self.max_body_bytes} bytes"
            )
            return size
        if upgrade:
            events.append(END)
            self._state = _UPGRADE
            self._held += data[end:]
            return size
        if has_body and self._should_upgrade:
            self._rearm(length, keep_alive)  # llhttp skipped the body of an upgrade request
        if chunked:
            self._state = _CHUNKED
            self._body_size = self._chunks = 0
            self._chunk_state = _SIZE
            self._line = bytearray()
            self._trailer_bytes = 0
        elif length:
            self._state = _BODY
            self._body_left = length
        else:
            self._end_message()
        return end

    def _rearm(self, length: int | None, keep_alive: bool) -> None:
        """A fresh llhttp, brought to the start of a body by a made-up head."""
        self._parser = httptools.HttpRequestParser(self)
        framing = (
            b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length
        )
        close = b"" if keep_alive else b"connection: close\r\n"
        self._synthetic = True
        try:
            self._parser.feed_data(b"POST / HTTP/1.1\r\nhost: x\r\n%s\r\n%s\r\n" % (framing, close))
        finally:
            self._synthetic = False
        self._head_done = self._complete = False

    def _end_message(self) -> None:
        if not self._complete:
            self._fail(400, "malformed request: llhttp expects more of the message")
            return
        self._flush_body()
        self._events.append(END)
        self._next_request()

    def _feed_body(self, data: bytes | bytearray, pos: int) -> int:
        stop = min(len(data), pos + self._body_left)
        if not self._execute(data[pos:stop]):  # the whole of `data` is not copied
            return len(data)
        self._body_left -= stop - pos
        if not self._body_left:
            self._end_message()
        elif self._complete:
            self._fail(400, "malformed request: the message ended before its Content-Length")
        return stop

    def _feed_chunked(self, data: bytes | bytearray, pos: int) -> int:
        stop, verdict, ended = self._scan_chunked(data, pos)
        size = len(data)
        if stop > pos and not self._execute(data if pos == 0 and stop == size else data[pos:stop]):
            return size
        if verdict is not None:
            self._fail(verdict.status, verdict.message, verdict.reason)
            return size
        if ended:
            self._end_message()
        elif self._complete:
            self._fail(400, "malformed request: the chunked body ended before its last chunk")
        return stop

    def _scan_chunked(
        self, data: bytes | bytearray, pos: int
    ) -> tuple[int, ProtocolError | None, bool]:
        """Follows the chunked framing from `pos`: (where to stop feeding llhttp, the error to
        answer once llhttp has seen that far, whether the message ends there)."""
        size = len(data)
        at = pos
        while at < size:
            state = self._chunk_state
            if state == _DATA:
                step = min(self._chunk_left, size - at)
                at += step
                self._chunk_left -= step
                if not self._chunk_left:
                    self._chunk_state = _DATA_CRLF
                    self._chunk_left = 2
            elif state == _DATA_CRLF:
                step = min(self._chunk_left, size - at)
                at += step
                self._chunk_left -= step
                if not self._chunk_left:
                    self._chunk_state = _SIZE
            elif state == _SIZE and not self._line and (found := _SIZE_LINE.match(data, at)):
                at = found.end()
                verdict = self._chunk(int(found[1], 16))
                if verdict is not None:
                    return at, verdict, False
                end = at + self._chunk_left + 2  # the data and its CRLF (llhttp checks it)
                if self._chunk_state == _DATA and end <= size:
                    at = end
                    self._chunk_state = _SIZE
            else:  # a chunk-size line, or a trailer line
                line_max = CHUNK_LINE_MAX_BYTES if state == _SIZE else self.max_head_bytes
                used = len(self._line) if state == _SIZE else self._trailer_bytes
                newline = data.find(b"\n", at)
                stop = size if newline < 0 else newline + 1
                if used + stop - at > line_max:
                    at += line_max - used
                    if state == _SIZE:
                        error = ProtocolError(400, f"chunk size line over {line_max} bytes")
                    else:
                        error = ProtocolError(431, f"trailers over {line_max} bytes")
                    return at, error, False
                if state == _TRAILER:
                    self._trailer_bytes += stop - at
                self._line += data[at:stop]
                at = stop
                if newline < 0:
                    continue
                line = bytes(self._line)
                self._line = bytearray()
                if state == _TRAILER:
                    if line == b"\r\n":
                        return at, None, True  # the blank line that ends the message
                    continue
                field = line.rstrip(b"\r\n").split(b";", 1)[0]
                if not _HEX.fullmatch(field):
                    return at, ProtocolError(400, f"invalid chunk size {field[:32]!r}"), False
                verdict = self._chunk(int(field, 16))
                if verdict is not None:
                    return at, verdict, False
        return at, None, False

    def _chunk(self, size: int) -> ProtocolError | None:
        """A chunk-size line read: what follows it, or the error it is."""
        self._body_size += size
        if self._body_size > self.max_body_bytes:
            return ProtocolError(413, f"chunked body over {self.max_body_bytes} bytes")
        if not size:
            self._chunk_state = _TRAILER
            return None
        self._chunks += 1
        if self._chunks > CHUNKS_FREE + self._body_size // CHUNK_MIN_AVERAGE_BYTES:
            return ProtocolError(
                400,
                f"{self._chunks} chunks for {self._body_size} bytes of body: at most "
                f"{CHUNKS_FREE} plus one per {CHUNK_MIN_AVERAGE_BYTES} bytes",
                "too_many_chunks",
            )
        self._chunk_state = _DATA
        self._chunk_left = size
        return None

    # -- llhttp's callbacks ------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self._synthetic:
            return
        # now: llhttp forgets them once the message is complete (in the same feed, often)
        parser = self._parser
        self._head_done = True
        self._should_keep_alive = parser.should_keep_alive()
        self._should_upgrade = parser.should_upgrade()

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        if not self._synthetic:
            self._complete = True
