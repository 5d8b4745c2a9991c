"""The HTTP transport's answers to a request past one of its limits, each naming its setting.

Each answer counts its reason among the source's errors, except a time-out's: the connection
counts that one, as it closes some timed-out connections without an answer.
"""

from __future__ import annotations

from telemetryd.config import ServerSettings
from telemetryd.core.stats import ComponentStats
from telemetryd.sources.http.messages import Response, error_response


def headers_too_large(settings: ServerSettings, stats: ComponentStats) -> Response:
    stats.errors["headers_too_large"] += 1
    return error_response(
        431,
        "headers_too_large",
        f"request line and headers over {settings.http_max_header_bytes} bytes "
        "(http_max_header_bytes)",
    )


def body_too_large(
    settings: ServerSettings, stats: ComponentStats, content_length: int | None
) -> Response:
    stats.errors["body_too_large"] += 1
    size = f"{content_length} bytes" if content_length is not None else "the body"
    return error_response(
        413,
        "body_too_large",
        f"{size} over the limit of {settings.http_max_body_bytes} bytes (http_max_body_bytes)",
    )


def timed_out(settings: ServerSettings, reason: str) -> Response:
    if reason == "head_timeout":
        message = (
            f"request line and headers not whole within {settings.http_head_timeout_secs} s "
            "(http_head_timeout_secs)"
        )
    elif reason == "body_too_slow":
        message = (
            f"body slower than {settings.http_min_body_rate_bytes} bytes/s after "
            f"{settings.http_head_timeout_secs} s (http_min_body_rate_bytes)"
        )
    elif reason == "evicted":
        message = (
            "request line and headers not whole when a new connection needed room "
            f"(http_max_connections = {settings.http_max_connections})"
        )
    else:
        message = (
            f"nothing received for {settings.http_idle_timeout_secs} s (http_idle_timeout_secs)"
        )
    return error_response(408, reason, message)


def too_many_connections(settings: ServerSettings, stats: ComponentStats) -> Response:
    stats.errors["too_many_connections"] += 1
    return error_response(
        503,
        "too_many_connections",
        f"at most {settings.http_max_connections} HTTP connections are served",
        (("retry-after", "1"),),
    )
