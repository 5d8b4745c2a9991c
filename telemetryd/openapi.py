"""The OpenAPI 3.1 document of the HTTP API (DESIGN.md §6), served at GET /api/openapi.json."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from telemetryd import __version__


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "telemetryd", "version": __version__},
        "paths": {},
    }


@cache
def document_bytes() -> bytes:
    return msgspec.json.encode(document())
