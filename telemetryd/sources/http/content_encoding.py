"""Request bodies sent with `Content-Encoding: gzip` (an agent's http sink, curl --compressed).

gzip is decoded with the same limit as a plain body: `http_max_body_bytes` bounds what the
body becomes, so a small compressed body cannot expand into unbounded memory (a zip bomb is a
413). Any other coding is refused with 415 before the body is read.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from telemetryd.sources.http.messages import Response, error_response

SUPPORTED = ("gzip", "x-gzip")


def content_coding(headers: Sequence[tuple[bytes, bytes]]) -> str | Response | None:
    """The body's coding (None: as it is), or the 415 that answers a coding we do not read."""
    codings = [
        c.strip().lower()
        for name, value in headers
        if name == b"content-encoding"
        for c in value.decode("latin-1").split(",")
        if c.strip() and c.strip().lower() != "identity"
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in SUPPORTED:
        return "gzip"
    return error_response(
        415,
        "unsupported_media_type",
        f"Content-Encoding {', '.join(codings)} is not accepted; send gzip or no encoding",
    )


class BadBody(Exception):
    """A gzip body that does not decode, or decodes past the limit: `response` answers it."""

    def __init__(self, reason: str, response: Response) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


def gunzip(body: bytes, limit: int) -> bytes:
    """The decoded body; raises BadBody (400 not gzip, 413 over `limit` decoded)."""
    decoder = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadBody(
            "invalid_gzip", error_response(400, "invalid_gzip", f"the body is not valid gzip: {e}")
        ) from None
    if len(data) > limit or decoder.unconsumed_tail:
        raise BadBody(
            "body_too_large",
            error_response(
                413,
                "body_too_large",
                f"the gzip body decodes to more than the limit of {limit} bytes "
                "(http_max_body_bytes)",
            ),
        )
    if not decoder.eof or decoder.unused_data:
        raise BadBody(
            "invalid_gzip",
            error_response(400, "invalid_gzip", "the gzip body is truncated or has trailing data"),
        )
    return data
