"""The file sink run in-process: the records a test writes, its settings, and the files it
leaves (the live file, the rotated ones, the gzipped ones)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

from telemetryd.core.record import Record
from telemetryd_sinks.file.sink import FileSettings, FileSink

ROTATED = re.compile(r"events\.[0-9]{8}T[0-9]{6}\.[0-9]{6}Z(_[0-9]{4})?\.jsonl")
GZIPPED = re.compile(r"events\.[0-9]{8}T[0-9]{6}\.[0-9]{6}Z(_[0-9]{4})?\.jsonl\.gz")


def record(i: int, padding: int = 0) -> Record:
    payload = b'{"i":%d,"p":"%s"}' % (i, b"x" * padding)
    return Record(schema_id="urn:test", version="1", payload=payload, received=0.0)


def file_settings(path: Path, **overrides: Any) -> FileSettings:
    # model_validate, as the config loader does: the keys arrive as a TOML table.
    return FileSettings.model_validate(
        {"name": "archive", "type": "file", "path": path, **overrides}
    )


async def started(settings: FileSettings) -> FileSink:
    sink = FileSink(settings)
    await sink.start()
    return sink


def lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a record is split or unterminated"
    return data.splitlines()


def rotated(folder: Path) -> list[Path]:
    """Rotated files in the order the sink promises: by name."""
    return sorted(p for p in folder.iterdir() if ROTATED.fullmatch(p.name))


def gzipped(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if GZIPPED.fullmatch(p.name))


def gz_lines(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes())
    assert data.endswith(b"\n"), "a record is split or unterminated"
    return data.splitlines()
