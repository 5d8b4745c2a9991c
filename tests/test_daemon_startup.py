"""Starting, reloading and stopping the real daemon (docs/schemas.md, docs/operations.md,
docs/configuration.md): bad configuration and bad schemas refuse to start with a clear message, user
schemas, the allow-list, SIGHUP, the socket file, and the repository's own telemetryd.toml."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_text import daemon_config
from tests.support.daemon_process import DaemonProcess
from tests.support.records import assert_record_shape, read_records
from tests.support.socket_client import CONTENTS, acked_connection, event_line
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
REPO_CONFIG = REPO / "telemetryd.toml"
CUSTOM = "https://example.org/events/custom"
TELEMETRYD = [sys.executable, "-m", "telemetryd"]


def custom_schema(version: str, extra_property: str = "") -> str:
    return f"""
"$id": {CUSTOM}
version: "{version}"
title: A custom event
description: An operator's own event.
type: object
required: [n]
properties:
  n:
    type: integer
    categories: [unrestricted]
{extra_property}
"""


def custom_event(version: str, n: int) -> bytes:
    return json.dumps({"schema_id": CUSTOM, "version": version, "data": {"n": n}}).encode()


def verdicts(daemon: DaemonProcess, lines: list[bytes]) -> dict[int, str]:
    """Sends lines acknowledged; returns {line number: rejection reason} once all are settled."""
    sock, reader, _ = acked_connection(daemon)
    with sock:
        sock.sendall(b"".join(line + b"\n" for line in lines))
        replies = reader.until_ack(len(lines))
    return {r["rejected"]: r["reason"] for r in replies if "rejected" in r}


# --- refusing to start: configuration and schemas, checked by several processes at once ---------

BAD_CONFIGS = {
    "server_unknown_key": ("[server]\nbogus = 1\n", ["server.bogus", "unknown key"]),
    "sink_unknown_type": (
        '[[sinks]]\nname = "archive"\ntype = "kafka"\n',
        ["sinks[0].type", "kafka", "file"],
    ),
    "sink_missing_path": (
        '[[sinks]]\nname = "archive"\ntype = "file"\n',
        ["sinks[0].path", "required"],
    ),
    "invalid_toml": ('[server\nunix_socket = "x.sock"\n', ["not valid TOML", "line 1"]),
}

BAD_SCHEMAS = {
    "reserved_property": (
        custom_schema("1", "  __secret:\n    type: string\n"),
        ["/properties/__secret", "reserved"],
    ),
    "id_not_a_uri": (
        custom_schema("1").replace(CUSTOM, "custom event"),
        ["/$id", "not an absolute URI"],
    ),
}


@dataclass(frozen=True)
class Run:
    path: Path  # the file the command is about
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Every command that must refuse, run concurrently: each start costs seconds of imports."""
    base = tmp_path_factory.mktemp("refusals")
    jobs: dict[str, tuple[list[str], Path, Path]] = {}  # name -> (argv, cwd, file)
    for name, (text, _) in BAD_CONFIGS.items():
        file = base / f"{name}.toml"
        file.write_text(text)
        jobs[f"run:{name}"] = ([*TELEMETRYD, "run", "--config", str(file)], base, file)
        jobs[f"check:{name}"] = ([*TELEMETRYD, "check-config", str(file)], base, file)
    for name, (text, _) in BAD_SCHEMAS.items():
        workdir = base / name
        (workdir / "schemas").mkdir(parents=True)
        file = workdir / "schemas" / "custom.yaml"
        file.write_text(text)
        config = workdir / "telemetryd.toml"
        config.write_text(daemon_config(workdir, schemas=f'paths = ["{workdir / "schemas"}"]'))
        jobs[f"schema:{name}"] = ([*TELEMETRYD, "run", "--config", str(config)], workdir, file)
    occupied = base / "occupied"
    (occupied / "run").mkdir(parents=True)
    (occupied / "run" / "telemetryd.sock").write_text("not a socket: keep me\n")
    (occupied / "telemetryd.toml").write_text(daemon_config(occupied))
    jobs["not_a_socket"] = (
        [*TELEMETRYD, "run", "--config", str(occupied / "telemetryd.toml")],
        occupied,
        occupied / "run" / "telemetryd.sock",
    )
    jobs["check:repo"] = ([*TELEMETRYD, "check-config", str(REPO_CONFIG)], REPO, REPO_CONFIG)

    procs = {
        name: subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, (argv, cwd, _) in jobs.items()
    }
    try:
        runs = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            runs[name] = Run(jobs[name][2], proc.returncode, out.decode(), err.decode())
        yield runs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_configuration_exits_2_naming_the_file_and_the_key(
    refusals: dict[str, Run], command: str, name: str
) -> None:
    run = refusals[f"{command}:{name}"]
    assert run.code == 2, run
    assert str(run.path) in run.stderr
    for part in BAD_CONFIGS[name][1]:
        assert part.lower() in run.stderr.lower(), (part, run.stderr)
    assert "Traceback" not in run.stderr
    if command == "run":
        assert not (run.path.parent / "run").exists(), "a bad configuration must not listen"


@pytest.mark.parametrize("name", [name for name in BAD_CONFIGS if name != "invalid_toml"])
def test_a_bad_configuration_is_the_first_line_of_stderr_naming_file_and_key(
    refusals: dict[str, Run], name: str
) -> None:
    first = refusals[f"run:{name}"].stderr.splitlines()[0]
    key = BAD_CONFIGS[name][1][0]
    assert first.startswith(f"telemetryd: error: {refusals[f'run:{name}'].path}: {key}: "), first


def test_a_fatal_start_error_comes_first_readable_without_a_stats_line(
    refusals: dict[str, Run],
) -> None:
    run = refusals["not_a_socket"]
    config = run.path.parent.parent / "telemetryd.toml"
    first = run.stderr.splitlines()[0]
    assert first == (
        f"telemetryd: error: {config}: server.unix_socket: "
        f"{run.path} exists and is not a socket; refusing to replace it"
    )
    logs = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert not [line for line in logs if line.get("msg") == "stopped"], "nothing ran"


def test_a_sink_that_cannot_start_is_named_by_its_key_first(tmp_path: Path) -> None:
    (tmp_path / "out" / "events.jsonl").mkdir(parents=True)  # a folder where the file goes
    with DaemonProcess(tmp_path, daemon_config(tmp_path), wait_ready=False) as daemon:
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == 1
    first = daemon.stderr().splitlines()[0]
    assert first.startswith(
        f"telemetryd: error: {daemon.config_path}: sinks[0]: sink 'archive' (file) failed to "
        "start: "
    ), first
    assert "Is a directory" in first
    assert '"msg":"stopped"' not in daemon.stderr()


def test_check_config_accepts_the_repository_telemetryd_toml(refusals: dict[str, Run]) -> None:
    run = refusals["check:repo"]
    assert (run.code, run.stderr) == (0, "")
    assert run.stdout.startswith(f"{REPO_CONFIG}: OK")


@pytest.mark.parametrize("name", list(BAD_SCHEMAS))
def test_bad_schema_refuses_to_start_naming_file_pointer_and_reason(
    refusals: dict[str, Run], name: str
) -> None:
    run = refusals[f"schema:{name}"]
    assert run.code != 0
    pointer, reason = BAD_SCHEMAS[name][1]
    assert any(
        str(run.path) in line and f": {pointer}: " in line and reason in line
        for line in run.stderr.splitlines()
    ), run.stderr
    assert "Traceback" not in run.stderr
    logs = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert not [line for line in logs if line.get("msg") in ("listening", "ready")]
    assert not (run.path.parent.parent / "run" / "telemetryd.sock").exists()


def test_a_file_that_is_not_a_socket_is_never_replaced(refusals: dict[str, Run]) -> None:
    run = refusals["not_a_socket"]
    assert run.code == 1
    assert "not a socket" in run.stderr
    assert str(run.path) in run.stderr
    assert run.path.read_text() == "not a socket: keep me\n"


# --- user schemas and the allow-list ------------------------------------------------------------


def test_user_schema_folder_is_loaded_and_allowed_limits_ingest(tmp_path: Path) -> None:
    schemas = tmp_path / "my-schemas"
    schemas.mkdir()
    (schemas / "custom.yaml").write_text(custom_schema("1"))
    config = daemon_config(
        tmp_path, schemas=f'paths = ["{schemas}"]\nallowed = ["https://example.org/*"]'
    )
    with DaemonProcess(tmp_path, config) as daemon:
        assert verdicts(
            daemon, [custom_event("1", 7), event_line("not-allowed"), custom_event("1", -1)]
        ) == {2: "schema_not_allowed"}
        assert daemon.stop() == 0

    records = read_records(tmp_path / "out/events.jsonl")
    assert [assert_record_shape(r, CUSTOM, os.getpid()) for r in records] == [{"n": 7}, {"n": -1}]
    (dead,) = read_records(tmp_path / "out/rejected.jsonl")
    assert dead["reason"] == "schema_not_allowed"
    assert dead["schema_id"] == CONTENTS
    assert "allowed" in dead["message"]


# --- SIGHUP -----------------------------------------------------------------------------------


def log_count(daemon: DaemonProcess, message: str) -> int:
    return sum(line.get("msg") == message for line in daemon.log_lines())


def test_sighup_reloads_schemas_and_keeps_the_old_ones_when_the_new_set_is_bad(
    tmp_path: Path,
) -> None:
    schemas = tmp_path / "my-schemas"
    schemas.mkdir()
    (schemas / "v1.yaml").write_text(custom_schema("1"))
    config = daemon_config(tmp_path, schemas=f'paths = ["{schemas}"]')
    v1, v2 = custom_event("1", 1), custom_event("2", 2)
    with DaemonProcess(tmp_path, config) as daemon:
        sock, reader, _ = acked_connection(daemon)  # one connection lives through every reload
        sent = 0

        def send(lines: list[bytes]) -> dict[int, str]:
            nonlocal sent
            sock.sendall(b"".join(line + b"\n" for line in lines))
            replies = reader.until_ack(sent + len(lines))
            rejected = {r["rejected"] - sent: r["reason"] for r in replies if "rejected" in r}
            sent += len(lines)
            return rejected

        with sock:
            assert send([v1, v2]) == {2: "unknown_version"}

            (schemas / "v2.yaml").write_text(custom_schema("2"))
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: log_count(daemon, "schemas reloaded") == 1, 10, "the reload")
            assert send([v1, v2]) == {}

            bad = schemas / "v3.yaml"
            bad.write_text(custom_schema("3", "  __secret:\n    type: string\n"))
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: log_count(daemon, "reload refused; keeping the current schemas"), 10)
            assert send([v1, v2, custom_event("3", 3)]) == {3: "unknown_version"}

            daemon.config_path.write_text(config + "\n[bogus\n")  # broken TOML: refused too
            daemon.signal(signal.SIGHUP)
            wait_for(
                lambda: log_count(daemon, "reload refused; keeping the current schemas") == 2, 10
            )
            assert send([v1, v2]) == {}
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, "a bad reload must not stop the daemon"
        assert daemon.stop() == 0
        logs = daemon.log_lines()

    refused = [line for line in logs if line.get("msg", "").startswith("reload refused")]
    assert refused[0]["level"] == "error"
    assert any(str(bad) in p and "/properties/__secret" in p for p in refused[0]["problems"])
    assert any(str(daemon.config_path) in p for p in refused[1]["problems"])
    records = read_records(tmp_path / "out/events.jsonl")
    assert [(r["__schema_version__"], r["n"]) for r in records] == [
        ("1", 1),
        ("1", 1),
        ("2", 2),
        ("1", 1),
        ("2", 2),
        ("1", 1),
        ("2", 2),
    ]


# --- the socket file ----------------------------------------------------------------------------


def test_socket_gets_the_configured_mode_and_is_removed_on_exit(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, server='unix_socket_mode = "0600"')
    with DaemonProcess(tmp_path, config) as daemon:
        mode = daemon.socket_path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert daemon.stop() == 0
    assert not daemon.socket_path.exists()


def test_stale_socket_of_a_killed_daemon_is_replaced(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"  # each its own stderr.log
    first.mkdir()
    second.mkdir()
    with DaemonProcess(first, daemon_config(first)) as killed:
        assert killed.proc is not None
        killed.proc.kill()
        killed.proc.wait()
    assert killed.socket_path.is_socket(), "SIGKILL leaves the socket file behind"
    config = daemon_config(second).replace(
        str(second / "run" / "telemetryd.sock"), str(killed.socket_path)
    )
    with DaemonProcess(second, config) as daemon:
        daemon.socket_path = killed.socket_path
        assert verdicts(daemon, [event_line("after-stale")]) == {}
        assert daemon.stop() == 0
    assert not killed.socket_path.exists()
    assert [r["path"] for r in read_records(second / "out/events.jsonl")] == ["after-stale"]


# --- the repository's own configuration -----------------------------------------------------


def test_repository_telemetryd_toml_runs_as_it_is_and_sigint_stops_it(tmp_path: Path) -> None:
    event = {  # an event as docs/events.md describes it
        "schema_id": CONTENTS,
        "version": "1",
        "data": {"action": "save", "path": "a.ipynb"},
        "timestamp": "2026-11-22T01:30:21.131970Z",
    }
    socat = shutil.which("socat")
    assert socat is not None, "socat is needed (apt-get install socat)"
    with DaemonProcess(tmp_path, REPO_CONFIG.read_text()) as daemon:
        assert daemon.socket_path == tmp_path / "run" / "telemetryd.sock"
        assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o660
        client = subprocess.Popen(
            [socat, "-", f"UNIX-CONNECT:{daemon.socket_path}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = client.communicate(json.dumps(event).encode() + b"\n", timeout=15)
        assert (client.returncode, out, err) == (0, b"", b"")
        events = tmp_path / "var" / "events" / "events.jsonl"
        wait_for(lambda: events.exists() and events.read_bytes().endswith(b"\n"), 10)
        daemon.signal(signal.SIGINT)
        assert daemon.proc is not None
        assert daemon.proc.wait(30) == 0
        stats: dict[str, Any] = daemon.final_stats()
    assert not daemon.socket_path.exists()
    (record,) = read_records(events)
    assert record["__timestamp__"] == "2026-11-22T01:30:21.131970Z"
    assert assert_record_shape(record, CONTENTS, client.pid) == event["data"]
    assert stats["sources"][0]["received"] == 1
    assert (tmp_path / "var" / "events" / "rejected.jsonl").exists()
