"""The HTTP transport knows the API only as the App it is given (as an ASGI server does)."""

from __future__ import annotations

import subprocess
import sys

TRANSPORT = (
    "telemetryd.sources.http.server",
    "telemetryd.sources.http.connection",
    "telemetryd.sources.http.content_encoding",
)


def test_the_transport_imports_neither_the_api_nor_the_unix_source() -> None:
    # In a fresh interpreter: what the transport's modules load, directly or not.
    code = f"import sys\nfor name in {TRANSPORT!r}: __import__(name)\nprint(*sys.modules)"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert set(TRANSPORT) <= loaded
    assert "telemetryd.sources.http.messages" in loaded
    assert "telemetryd.sources.http.app" not in loaded
    assert "telemetryd.sources.unix" not in loaded
