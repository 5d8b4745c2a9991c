"""What the daemon wrote: the records of its file sinks, and checks of their metadata."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_for

RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
METADATA_KEYS = [
    "__timestamp__",
    "__schema__",
    "__schema_version__",
    "__metadata_version__",
    "__origin__",
]


def expected_origin(pid: int) -> dict[str, Any]:
    """`__origin__` of a record sent over the Unix socket by process `pid` of this user."""
    return {
        "transport": "unix",
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": pid,
    }


def parse_record_time(stamp: str) -> datetime:
    """A record's `__timestamp__`, checked to be RFC 3339 in UTC as docs/events.md says."""
    assert RFC3339_UTC.fullmatch(stamp), f"not an RFC 3339 UTC time: {stamp!r}"
    moment = datetime.fromisoformat(stamp)
    assert moment.utcoffset() == timedelta(0), stamp
    return moment


def assert_record_shape(
    record: dict[str, Any], schema_id: str, pid: int, version: str = "1"
) -> dict[str, Any]:
    """Checks the §4 metadata of a record; returns its data (the keys that are not metadata)."""
    assert list(record)[: len(METADATA_KEYS)] == METADATA_KEYS, record
    parse_record_time(record["__timestamp__"])
    assert record["__schema__"] == schema_id
    assert record["__schema_version__"] == version
    assert record["__metadata_version__"] == 1
    assert type(record["__metadata_version__"]) is int
    assert record["__origin__"] == expected_origin(pid)
    return {k: v for k, v in record.items() if k not in METADATA_KEYS}


def records_so_far(path: Path) -> list[dict[str, Any]]:
    """The complete records of a file a running daemon is appending to (no partial last line)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def wait_for_records(
    path: Path, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Polls a sink's file until `count` records match `predicate`; returns the matches."""

    def matches() -> list[dict[str, Any]] | None:
        found = [r for r in records_so_far(path) if predicate(r)]
        assert len(found) <= count, f"more than {count} records match: {found}"
        return found if len(found) == count else None

    return wait_for(matches, timeout, f"{count} matching record(s) in {path}")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a file sink, across rotated files (gzipped or not), in order."""
    rotated = {p.name: p for p in path.parent.glob(f"{path.stem}.*{path.suffix}")}
    for gz in path.parent.glob(f"{path.stem}.*{path.suffix}.gz"):
        # While a gzip is completed both are there, each with every record: read one.
        rotated.setdefault(gz.name.removesuffix(".gz"), gz)
    files = [*(rotated[name] for name in sorted(rotated)), path]
    records: list[dict[str, Any]] = []
    for file in files:
        if file.exists():
            data = file.read_bytes()
            if file.suffix == ".gz":
                data = gzip.decompress(data)
            records.extend(json.loads(line) for line in data.splitlines())
    return records


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0
