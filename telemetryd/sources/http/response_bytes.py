"""A response as the bytes the HTTP transport writes: status line, headers, then the body."""

from __future__ import annotations

import http
from typing import Final

from telemetryd import __version__
from telemetryd.sources.http.messages import Response

SERVER = f"telemetryd/{__version__}"
#: The interim answer to `Expect: 100-continue`, as h11 wrote it.
CONTINUE: Final = b"HTTP/1.1 100 \r\n\r\n"

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in http.HTTPStatus
}
_SERVER_LINE: Final = b"server: %s\r\n" % SERVER.encode()
_NO_CONTENT: Final = _STATUS_LINES[204] + _SERVER_LINE + b"\r\n"
_CLOSE_LINE: Final = b"connection: close\r\n"
#: As h11 wrote it when the client's request ended the connection (HTTP/1.0, its own close).
_CLIENT_CLOSE_LINE: Final = b"Connection: close\r\n"
_CHUNKED_LINE: Final = b"Transfer-Encoding: chunked\r\n"


def _head(status: int, headers: tuple[tuple[str, str], ...]) -> list[bytes]:
    """A response's status line and its own headers (the transport's come after)."""
    parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
    parts += [b"%s: %s\r\n" % (name.encode(), value.encode("latin-1")) for name, value in headers]
    return parts


def response_bytes(
    response: Response, method: bytes, *, close: bool, client_close: bool = False
) -> bytes:
    """The whole response (no body for HEAD); `close`: the connection ends after it."""
    status = response.status
    if status == 204 and not close and not client_close and not response.headers:
        return _NO_CONTENT
    parts = _head(status, response.headers)
    parts.append(_SERVER_LINE)
    body = response.body
    if status != 204:
        parts.append(b"content-length: %d\r\n" % len(body))
    if client_close:
        parts.append(_CLIENT_CLOSE_LINE)
    elif close:
        parts.append(_CLOSE_LINE)
    parts.append(b"\r\n")
    if body and method != b"HEAD":
        parts.append(body)
    return b"".join(parts)


def stream_head(response: Response) -> bytes:
    """The head of a Server-Sent Events response: its chunks follow until the connection ends."""
    parts = _head(response.status, response.headers)
    parts += (_SERVER_LINE, _CLOSE_LINE, _CHUNKED_LINE, b"\r\n")
    return b"".join(parts)
