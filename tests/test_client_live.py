"""The client library against the real daemon: delivery, rejections, outages and restarts,
counted event by event."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from telemetryd.client import AsyncClient, Client
from tests.support.config_text import daemon_config
from tests.support.daemon_process import DaemonProcess
from tests.support.records import (
    assert_record_shape,
    parse_record_time,
    read_records,
    records_so_far,
)
from tests.support.socket_client import CONTENTS, KERNELS
from tests.support.waiting import wait_for


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path, daemon_config(tmp_path)) as daemon:
        yield daemon


def save(path: str) -> dict[str, Any]:
    return {"action": "save", "path": path}


def paths_of(daemon: DaemonProcess, prefix: str = "") -> list[str]:
    return [r["path"] for r in read_records(daemon.output_path) if r["path"].startswith(prefix)]


def arrived(daemon: DaemonProcess, count: int, prefix: str = "") -> list[str]:
    """The paths of the records with `prefix`, once `count` are in the file sink (an event is
    acknowledged when it is queued for the sink, a moment before the sink writes it)."""

    def written() -> list[str] | None:
        found = [r["path"] for r in records_so_far(daemon.output_path)]
        found = [p for p in found if p.startswith(prefix)]
        return found if len(found) >= count else None

    return wait_for(written, 30, f"{count} records")


def test_emitted_events_arrive_with_their_metadata(daemon: DaemonProcess) -> None:
    before = datetime.now(UTC)
    with Client(daemon.socket_path) as client:
        client.emit(CONTENTS, "1", save("now"))
        client.emit(CONTENTS, 1, save("int-version"))
        client.emit(CONTENTS, "1", save("given"), "2026-11-22T01:30:21.131970+00:00Z")
        client.emit(CONTENTS, "1", save("aware"), datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
        assert client.flush(timeout=10)
        stats = client.stats()
    after = datetime.now(UTC)
    assert (stats.emitted, stats.acknowledged, stats.buffered) == (4, 4, 0)
    assert stats.rejected == {}
    assert stats.dropped == {}
    assert client.server is not None
    assert client.server.startswith("telemetryd/")
    arrived(daemon, 4)
    records = {r["path"]: r for r in read_records(daemon.output_path)}
    assert set(records) == {"now", "int-version", "given", "aware"}
    for path, record in records.items():
        assert assert_record_shape(record, CONTENTS, os.getpid()) == save(path)
    assert before <= parse_record_time(records["now"]["__timestamp__"]) <= after
    assert records["given"]["__timestamp__"] == "2026-11-22T01:30:21.131970Z"
    assert records["aware"]["__timestamp__"] == "2026-01-02T03:04:05.000006Z"


def test_rejections_are_logged_once_per_schema_and_counted(
    daemon: DaemonProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="telemetryd.client")
    with Client(daemon.socket_path) as client:
        for i in range(3):
            client.emit(CONTENTS, "1", {"action": "explode", "path": f"bad{i}"})
            client.emit(CONTENTS, "1", save(f"good{i}"))
            client.emit(KERNELS, "1", {"action": "nonsense", "msg": "x", "status": "error"})
        client.emit("https://example.org/unknown/v1", "1", {})
        assert client.flush(timeout=10)
        stats = client.stats()
    assert stats.rejected == {"invalid_data": 6, "unknown_schema": 1}
    assert stats.acknowledged == 10
    warnings = [r.getMessage() for r in caplog.records if "rejected an event" in r.getMessage()]
    assert len(warnings) == 3, warnings  # one per schema, not one per event
    assert sum(CONTENTS in w and "invalid_data" in w for w in warnings) == 1
    assert sum(KERNELS in w for w in warnings) == 1
    assert arrived(daemon, 3, "good") == ["good0", "good1", "good2"]


def test_emit_never_blocks_without_a_daemon_and_keeps_the_newest(tmp_path: Path) -> None:
    config = daemon_config(tmp_path)
    daemon = DaemonProcess(tmp_path, config)
    client = Client(
        daemon.socket_path,
        max_buffer_events=1000,
        reconnect_initial_secs=0.01,
        reconnect_max_secs=0.2,
    )
    try:
        started = time.monotonic()
        for i in range(3000):
            client.emit(CONTENTS, "1", save(f"e{i}"))
        assert time.monotonic() - started < 5  # no waiting for a daemon that is not there
        wait_for(lambda: client.stats().connect_failures >= 2, what="retries")
        stats = client.stats()
        assert (stats.buffered, stats.dropped) == (1000, {"buffer_full": 2000})
        with daemon:
            assert client.flush(timeout=30)
            assert arrived(daemon, 1000) == [f"e{i}" for i in range(2000, 3000)]
    finally:
        client.close(timeout=1)


def test_close_without_a_daemon_drops_and_counts_what_is_left(tmp_path: Path) -> None:
    client = Client(tmp_path / "nowhere.sock")
    for i in range(10):
        client.emit(CONTENTS, "1", save(f"e{i}"))
    assert client.flush(timeout=0.2) is False
    assert client.close(timeout=0.2) is False
    client.emit(CONTENTS, "1", save("after-close"))
    stats = client.stats()
    assert stats.dropped == {"closed": 11}
    assert stats.buffered == 0
    assert client.last_error is not None
    assert "No such file" in client.last_error


def test_data_that_is_not_json_is_dropped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with Client(tmp_path / "nowhere.sock") as client:
        client.emit(CONTENTS, "1", looped)
        client.emit(CONTENTS, "1", looped)
        assert client.stats().dropped == {"unencodable": 2}
        client.close(timeout=0)
    logged = [r for r in caplog.records if "not JSON" in r.getMessage()]
    assert len(logged) == 1


def test_a_daemon_restart_during_100k_emits_loses_nothing(tmp_path: Path) -> None:
    """Every event that fit in the buffer arrives; an event arrives twice only if it was in the
    last batch written before the restart and not acknowledged."""
    total = 100_000
    with DaemonProcess(tmp_path, daemon_config(tmp_path)) as daemon:
        client = Client(daemon.socket_path, max_buffer_events=total, reconnect_max_secs=0.2)

        def emit_all() -> None:
            for i in range(total):
                client.emit(CONTENTS, "1", save(f"e{i}"))
                if i % 500 == 0:
                    time.sleep(0.002)  # a steady flow, so the restart falls in the middle

        emitter = threading.Thread(target=emit_all)
        emitter.start()
        wait_for(lambda: client.stats().acknowledged >= 20_000, 30, "20k acknowledged")
        daemon.stop()
        assert daemon.returncode == 0
        acknowledged_before = client.stats().acknowledged
        daemon.start()
        emitter.join()
        assert client.flush(timeout=60)
        stats = client.stats()
        client.close()
        daemon.stop()
    assert acknowledged_before < total  # the restart did happen mid-stream
    assert stats.dropped == {}
    assert stats.acknowledged == total
    assert stats.connects == 2
    paths = paths_of(daemon)
    counts = collections.Counter(paths)
    assert set(counts) == {f"e{i}" for i in range(total)}
    twice = sorted(int(p[1:]) for p, n in counts.items() if n > 1)
    assert all(n <= 2 for n in counts.values())
    assert len(twice) <= stats.resent
    if twice:  # one run: the batch in flight at the restart
        assert twice == list(range(twice[0], twice[0] + len(twice)))
        assert twice[0] >= acknowledged_before - len(twice)


def test_the_buffer_is_flushed_when_the_program_exits(daemon: DaemonProcess) -> None:
    script = textwrap.dedent(
        f"""
        from telemetryd.client import Client
        client = Client({str(daemon.socket_path)!r})
        for i in range(500):
            client.emit({CONTENTS!r}, "1", {{"action": "save", "path": f"exit{{i}}"}})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sorted(arrived(daemon, 500, "exit")) == sorted(f"exit{i}" for i in range(500))


def test_a_forked_child_sends_its_own_events_and_not_its_parents(daemon: DaemonProcess) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from telemetryd.client import Client
        client = Client({str(daemon.socket_path)!r})
        for i in range(100):
            client.emit({CONTENTS!r}, "1", {{"action": "save", "path": f"parent{{i}}"}})
        pid = os.fork()
        who = "child" if pid == 0 else "parent-after"
        for i in range(100):
            client.emit({CONTENTS!r}, "1", {{"action": "save", "path": f"{{who}}{{i}}"}})
        assert client.flush(30)
        if pid:
            os.waitpid(pid, 0)
        """
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", script], check=True, timeout=60)
    counts = collections.Counter(p.rstrip("0123456789") for p in arrived(daemon, 300))
    assert counts == {"parent": 100, "child": 100, "parent-after": 100}


def test_importing_the_client_imports_none_of_the_daemons_dependencies() -> None:
    script = (
        "import sys, telemetryd.client, telemetryd.client.handler\n"
        "heavy = {'anyio', 'pydantic', 'fastjsonschema', 'httptools', 'yaml', 'asyncio'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


# --- AsyncClient ----------------------------------------------------------------------------


def test_the_async_client_delivers_and_resends_across_a_restart(tmp_path: Path) -> None:
    total = 20_000
    with DaemonProcess(tmp_path, daemon_config(tmp_path)) as daemon:

        async def main() -> tuple[Any, Any]:
            async with AsyncClient(daemon.socket_path, reconnect_max_secs=0.2) as client:
                for i in range(total // 2):
                    client.emit(CONTENTS, "1", save(f"a{i}"))
                client.emit(CONTENTS, "1", {"action": "explode", "path": "bad"})
                assert await client.flush(timeout=30)
                first = client.stats()
                await asyncio.to_thread(daemon.stop)
                for i in range(total // 2, total):
                    client.emit(CONTENTS, "1", save(f"a{i}"))
                await asyncio.to_thread(daemon.start)
                assert await client.flush(timeout=30)
                return first, client.stats()

        first, stats = asyncio.run(main())
        daemon.stop()
    assert first.rejected == {"invalid_data": 1}
    assert (stats.acknowledged, stats.dropped, stats.connects) == (total + 1, {}, 2)
    assert sorted(paths_of(daemon, "a")) == sorted(f"a{i}" for i in range(total))


def test_the_async_client_starts_at_the_first_emit_in_a_running_loop(
    daemon: DaemonProcess,
) -> None:
    async def main() -> bool:
        client = AsyncClient(daemon.socket_path)
        client.emit(CONTENTS, "1", save("lazy"))
        flushed = await client.flush(timeout=10)
        await client.aclose()
        return flushed

    assert asyncio.run(main())
    assert arrived(daemon, 1) == ["lazy"]


# --- the client without the daemon's dependencies -------------------------------------------

#: Runs the CLI in a process where the `server` extra's modules cannot be imported, as after a
#: plain `pip install telemetryd`.
WITHOUT_SERVER_EXTRA = """
import sys
from telemetryd.cli import SERVER_MODULES, main

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in SERVER_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
raise SystemExit(main(sys.argv[1:]))
"""


def test_the_client_and_send_work_without_the_daemons_dependencies(
    daemon: DaemonProcess,
) -> None:
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", WITHOUT_SERVER_EXTRA, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    sent = cli(
        "send",
        "--socket",
        str(daemon.socket_path),
        CONTENTS,
        "1",
        '{"action": "save", "path": "light"}',
    )
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "1: accepted\n", "")
    assert arrived(daemon, 1, "light") == ["light"]
    run = cli("run", "--config", str(daemon.config_path))
    assert run.returncode == 2
    assert "pip install 'telemetryd[server]'" in run.stderr
    assert "Traceback" not in run.stderr
