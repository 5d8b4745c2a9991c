"""The benchmark's large event: benchmarks/schemas/large/v1.yaml, a notebook cell's execution
with nested objects, arrays of objects, patterns, enums and formats (about 1.1-1.4 KB a line).

Event n is unique like the small one: its `path` is `event_path(n)` (so benchmarks.verify counts
it the same way), its `event_id` and `execution.count` are made from n, and everything else
varies with n (outputs 0-3, an error every seventh event, tags, labels) so validation takes
every branch. `check_large_records` compares records, decoded whole, with `event_data_large`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from benchmarks.events import event_index, event_path

SCHEMA_ID = "https://events.telemetryd.org/benchmarks/cell_execution/v1"
SCHEMA_VERSION = "1"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "large"
SCHEMA_PATH = SCHEMA_DIR / "v1.yaml"

_ACTIONS = ("execute", "execute_and_advance", "run_all", "restart_and_run_all")
_KERNELS = (("python3", "python"), ("ir", "R"), ("julia-1.10", "julia"), ("xpython", "python"))
_FRONTENDS = ("jupyterlab", "notebook", "vscode", "voila")
_OUTPUT_TYPES = ("stream", "display_data", "execute_result")
_MIME = (["text/plain"], ["text/plain", "text/html"], ["image/png", "text/plain"])
_EXTENSIONS = [
    {"name": "jupyterlab", "version": "4.2.5", "enabled": True},
    {"name": "jupyter_server_terminals", "version": "0.5.3", "enabled": True},
    {"name": "nbclassic", "version": "1.1.0", "enabled": False},
    {"name": "telemetryd.jupyter", "version": "0.1.0", "enabled": True},
]
_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def _uuid(n: int, salt: int) -> str:
    h = (n * 0x9E3779B97F4A7C15 + salt) & ((1 << 128) - 1)
    x = f"{h:032x}"
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:32]}"


def _timestamp(n: int) -> str:
    ms = n % 86_400_000
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"2026-12-03T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def event_data_large(n: int) -> dict[str, Any]:
    """The `data` of large event n (as jupyter_events' `emit` is handed it)."""
    kernel, language = _KERNELS[n % 4]
    outputs = [
        {
            "output_type": _OUTPUT_TYPES[(n + i) % 3],
            **({"name": "stdout"} if (n + i) % 3 == 0 else {}),
            "mime_types": _MIME[(n + i) % 3],
            "bytes": (n * 31 + i * 977) % 200_000,
        }
        for i in range(n % 4)
    ]
    failed = n % 7 == 0
    if failed:
        outputs.append({"output_type": "error", "mime_types": [], "bytes": 412})
    return {
        "event_id": _uuid(n, 1),
        "action": _ACTIONS[n % 4],
        "path": event_path(n),
        "started_at": _timestamp(n),
        "duration_ms": (n % 5000) / 10 + 0.25,
        "session": {
            "id": _uuid(n // 100, 2),
            "kernel_id": _uuid(n // 100, 3),
            "kernel_name": kernel,
            "language": language,
            "kernel_version": f"6.{n % 30}.{n % 7}",
        },
        "user": {
            "name": f"user{n % 5000}",
            "email": f"user{n % 5000}@example.org",
            "groups": ["students", f"course-{n % 40}"] if n % 3 else ["staff"],
        },
        "client": {
            "ip": f"10.{n % 256}.{(n >> 8) % 256}.{(n >> 16) % 256}",
            "host": f"node{n % 64}.cluster.example.org",
            "user_agent": _AGENT,
            "frontend": _FRONTENDS[n % 4],
        },
        "server": {
            "url": f"https://hub.example.org/user/user{n % 5000}/",
            "version": "2.14.2",
            "extensions": _EXTENSIONS[: 1 + n % 4],
        },
        "cell": {
            "id": f"cell-{n % 997:04d}-{_uuid(n, 4)[:8]}",
            "index": n % 120,
            "type": "code",
            "source_sha256": f"{(n * 0x2545F4914F6CDD1D) & ((1 << 256) - 1):064x}",
            "source_lines": 1 + n % 60,
            "tags": ["parameters", "hide-input"][: n % 3],
        },
        "execution": {
            "count": n + 1,
            "status": "error" if failed else "ok",
            "outputs": outputs,
            "error": {"ename": "ValueError", "evalue": f"bad value at row {n}"} if failed else None,
        },
        "resources": {
            "cpu_secs": (n % 1000) / 100,
            "peak_memory_bytes": 50_000_000 + (n % 1000) * 4096,
            "gpu": n % 10 == 0,
        },
        "labels": {"course": f"course-{n % 40}", "term": "2026-fall", "cluster": "hpc-a"},
    }


_encode = msgspec.json.encode


def encode_large_events(start: int, count: int) -> bytes:
    """Large events start .. start+count-1 as NDJSON (one line each, newline-terminated)."""
    return b"".join(
        _encode({"schema_id": SCHEMA_ID, "version": SCHEMA_VERSION, "data": event_data_large(n)})
        + b"\n"
        for n in range(start, start + count)
    )


def large_line_bytes(n: int) -> int:
    return len(encode_large_events(n, 1))


def check_large_records(path: Path, every: int = 97) -> tuple[int, list[str]]:
    """Decodes every `every`-th record of a file whole and compares its data keys with
    event_data_large(n): (records compared, samples of the ones that differ)."""
    compared = 0
    problems: list[str] = []
    with path.open("rb") as f:
        for i, line in enumerate(f):
            if i % every:
                continue
            record = msgspec.json.decode(line)
            n = event_index(record.get("path", "")) if isinstance(record, dict) else None
            if n is None:
                continue  # a foreign line: benchmarks.verify counts it
            compared += 1
            expected = event_data_large(n)
            got = {k: v for k, v in record.items() if not k.startswith("__")}
            if got != expected and len(problems) < 3:
                diff = sorted(
                    k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k)
                )
                problems.append(f"record of event {n} differs in {diff}")
    return compared, problems
