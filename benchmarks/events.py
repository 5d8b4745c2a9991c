"""The benchmark's event: a Jupyter Server contents_service "save", as NDJSON bytes.

Event n (0-based, unique over a run) saves `notebooks/analysis-<n>.ipynb`, so the verifier can
tell every delivered record apart and spot both losses and duplicates.

An EventShape picks what a load sends: these events (153-159 bytes a line), the same events with
`path` padded to a fixed line size (`notebooks/analysis-<n>-xxx...x.ipynb`, for throughput
against event size), or the large schema's events (benchmarks.events_large).
"""

from __future__ import annotations

from dataclasses import dataclass
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
#: The tiny schema's events (benchmarks/schemas/tiny): 86 B lines at most, padded to 100 B.
TINY_SCHEMA_ID = "urn:t"
TINY_SCHEMA_DIR = REPO_ROOT / "benchmarks" / "schemas" / "tiny"
_TINY_LINE_HEAD = (
    '{"schema_id":"' + TINY_SCHEMA_ID + '","version":"1","data":{"path":"' + PATH_PREFIX
).encode()
_BODY_TAIL = (PATH_SUFFIX + '"}}').encode()
_LINE_TAIL = _BODY_TAIL + b"\n"


def event_path(n: int, pad: int = 0) -> str:
    """Event n's path; `pad` > 0 adds `-` and that many `x` after n."""
    return (
        f"{PATH_PREFIX}{n}-{'x' * pad}{PATH_SUFFIX}"
        if pad > 0
        else f"{PATH_PREFIX}{n}{PATH_SUFFIX}"
    )


def event_data(n: int) -> dict[str, Any]:
    """The `data` of event n, as handed to jupyter_events' `emit`."""
    return {"action": "save", "path": event_path(n)}


def event_index(path: str) -> int | None:
    """n from a path made by `event_path`, or None for anything else."""
    if not (path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX)):
        return None
    digits, dash, pad = path[len(PATH_PREFIX) : -len(PATH_SUFFIX)].partition("-")
    if dash and (not pad or pad.strip("x")):
        return None  # a padded path is padded with x only
    return int(digits) if digits.isdigit() else None


def encode_events(start: int, count: int) -> bytes:
    """Events start .. start+count-1 as NDJSON (one line each, newline-terminated)."""
    head, tail = _LINE_HEAD, _LINE_TAIL
    return b"".join([head + str(n).encode() + tail for n in range(start, start + count)])


def event_body(n: int) -> bytes:
    """Event n as one JSON document (its line without the newline): a POST /api/events body."""
    return _LINE_HEAD + str(n).encode() + _BODY_TAIL


def line_bytes(n: int, head: bytes = _LINE_HEAD) -> int:
    """Length of event n's line, newline included."""
    return len(head) + len(str(n)) + len(_LINE_TAIL)


def padding_for(n: int, line_bytes_wanted: int, head: bytes = _LINE_HEAD) -> int:
    """How many `x` make event n's line `line_bytes_wanted` long (newline included); 0 when
    the unpadded line is already that long or longer."""
    pad = line_bytes_wanted - line_bytes(n, head) - 1  # the "-" before the padding
    return max(0, pad)


def encode_padded_events(
    start: int, count: int, line_bytes_wanted: int, head: bytes = _LINE_HEAD
) -> bytes:
    """Events start .. start+count-1 with `path` padded so that each line is
    `line_bytes_wanted` bytes long (or its natural length, if longer)."""
    tail = _LINE_TAIL
    out = []
    for n in range(start, start + count):
        pad = padding_for(n, line_bytes_wanted, head)
        digits = str(n).encode()
        out.append(head + digits + (b"-" + b"x" * pad if pad else b"") + tail)
    return b"".join(out)


@dataclass(frozen=True)
class EventShape:
    """What a load sends (picklable, so a load process gets it as an argument).

    schema: "small" (contents_service), "tiny" (benchmarks/schemas/tiny: the envelope of the
    smallest lines) or "large" (benchmarks/schemas/large, see benchmarks.events_large);
    line_bytes: pad the small or tiny events' `path` to lines of this size (0: unpadded).
    """

    schema: str = "small"
    line_bytes: int = 0

    def encode(self, start: int, count: int) -> bytes:
        if self.schema == "large":
            from benchmarks.events_large import encode_large_events

            return encode_large_events(start, count)
        if self.schema == "tiny":
            return encode_padded_events(start, count, self.line_bytes, _TINY_LINE_HEAD)
        if self.line_bytes:
            return encode_padded_events(start, count, self.line_bytes)
        return encode_events(start, count)

    def describe(self) -> str:
        if self.schema == "large":
            return "large-schema events (benchmarks/schemas/large/v1.yaml)"
        if self.schema == "tiny":
            return f"tiny-schema events (urn:t) padded to {self.line_bytes:,}-byte lines"
        if self.line_bytes:
            return f"events padded to {self.line_bytes:,}-byte lines"
        return "contents_service events"


SMALL = EventShape()
