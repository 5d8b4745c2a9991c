"""The benchmark's event: a Jupyter Server contents_service "save", as NDJSON bytes.

Event n (0-based, unique over a run) saves `notebooks/analysis-<n>.ipynb`, so the verifier can
tell every delivered record apart and spot both losses and duplicates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_ID = "https://events.jupyter.org/jupyter_server/contents_service/v1"
SCHEMA_VERSION = "1"
#: The schema as the repository ships it (the same file jupyter_server has).
SCHEMA_PATH = REPO_ROOT / "schemas" / "jupyter_server" / "contents_service" / "v1.yaml"

PATH_PREFIX = "notebooks/analysis-"
PATH_SUFFIX = ".ipynb"

_LINE_HEAD = (
    '{"schema_id":"' + SCHEMA_ID + '","version":"' + SCHEMA_VERSION + '",'
    '"data":{"action":"save","path":"' + PATH_PREFIX
).encode()
_BODY_TAIL = (PATH_SUFFIX + '"}}').encode()
_LINE_TAIL = _BODY_TAIL + b"\n"


def event_path(n: int) -> str:
    return f"{PATH_PREFIX}{n}{PATH_SUFFIX}"


def event_data(n: int) -> dict[str, Any]:
    """The `data` of event n, as handed to jupyter_events' `emit`."""
    return {"action": "save", "path": event_path(n)}


def event_index(path: str) -> int | None:
    """n from a path made by `event_path`, or None for anything else."""
    if not (path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX)):
        return None
    digits = path[len(PATH_PREFIX) : -len(PATH_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def encode_events(start: int, count: int) -> bytes:
    """Events start .. start+count-1 as NDJSON (one line each, newline-terminated)."""
    head, tail = _LINE_HEAD, _LINE_TAIL
    return b"".join([head + str(n).encode() + tail for n in range(start, start + count)])


def event_body(n: int) -> bytes:
    """Event n as one JSON document (its line without the newline): a POST /api/events body."""
    return _LINE_HEAD + str(n).encode() + _BODY_TAIL


def line_bytes(n: int) -> int:
    """Length of event n's line, newline included."""
    return len(_LINE_HEAD) + len(str(n)) + len(_LINE_TAIL)
