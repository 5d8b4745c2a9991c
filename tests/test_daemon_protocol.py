"""The Unix socket protocol against the real daemon (docs/socket-protocol.md): plain and
acknowledged mode, socat, the `telemetryd send` CLI, bad and unfinished lines, connection limits."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetryd import __version__
from tests.support.config_text import daemon_config
from tests.support.daemon_process import DaemonProcess
from tests.support.records import (
    assert_record_shape,
    expected_origin,
    read_records,
    wait_for_records,
)
from tests.support.socket_client import CONTENTS, ReplyReader, acked_connection, event_line
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REJECTED = "https://events.telemetryd.org/telemetryd/rejected_event/v1"
MAX_LINE_BYTES = 4096
KEPT_HEAD_BYTES = 1024  # telemetryd.core.framing.KEPT_HEAD_BYTES
REASONS = {
    "empty_line",
    "line_too_long",
    "invalid_utf8",
    "invalid_json",
    "invalid_envelope",
    "invalid_timestamp",
    "unknown_schema",
    "unknown_version",
    "schema_not_allowed",
    "invalid_data",
    "reserved_field",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the tests that need nothing special: each uses its own event paths."""
    workdir = tmp_path_factory.mktemp("protocol")
    config = daemon_config(workdir, server=f"max_line_bytes = {MAX_LINE_BYTES}")
    with DaemonProcess(workdir, config) as running:
        yield running
        assert running.stop() == 0, running.stderr()


Predicate = Callable[[dict[str, Any]], bool]


def with_path(prefix: str) -> Predicate:
    return lambda record: str(record.get("path", "")).startswith(prefix)


def raw_contains(text: str) -> Predicate:
    return lambda record: text in str(record.get("raw", ""))


# --- acknowledged mode ---------------------------------------------------------------------------


def test_acknowledged_mode_numbers_rejections_and_acks_cumulatively(
    daemon: DaemonProcess,
) -> None:
    total = 300
    bad: dict[int, tuple[bytes, str]] = {
        5: (event_line("ack-bad5", action="explode"), "invalid_data"),
        17: (event_line("ack-bad17", version="7"), "unknown_version"),
        33: (event_line("ack-bad33", schema_id="https://example.org/nope/v1"), "unknown_schema"),
        50: (b'{"schema_id": "' + CONTENTS.encode() + b'", "version": ', "invalid_json"),
        77: (b"", "empty_line"),
        100: (json.dumps({"schema_id": CONTENTS, "version": "1"}).encode(), "invalid_envelope"),
        150: (b"\xc3\x28 not utf-8", "invalid_utf8"),
        299: (event_line("ack-bad299", version="1.5"), "unknown_version"),
    }
    lines = [bad[n][0] if n in bad else event_line(f"ack-e{n}") for n in range(1, total + 1)]
    payload = b"".join(line + b"\n" for line in lines)

    sock, reader, hello = acked_connection(daemon)
    with sock:
        assert hello["hello"] == "telemetryd"
        assert hello["server"] == f"telemetryd/{__version__}"
        assert hello["max_line_bytes"] == MAX_LINE_BYTES
        # Sent in pieces that cut lines in the middle: numbering must not care.
        for start in range(0, len(payload), 7_001):
            sock.sendall(payload[start : start + 7_001])
        replies = reader.until_ack(total)

    acks = [r["ack"] for r in replies if "ack" in r]
    assert acks == sorted(acks)
    assert acks[-1] == total
    rejections = [r for r in replies if "rejected" in r]
    assert [(r["rejected"], r["reason"]) for r in rejections] == [
        (n, reason) for n, (_, reason) in sorted(bad.items())
    ]
    for reply in rejections:
        assert set(reply) == {"rejected", "reason", "message"}
    # A rejection always comes before the ack that settles its line.
    settled = 0
    for reply in replies:
        if "ack" in reply:
            settled = reply["ack"]
        else:
            assert reply["rejected"] > settled
    messages = {r["rejected"]: r["message"] for r in rejections}
    assert "action" in messages[5]
    assert "explode" in messages[5] or "one of" in messages[5]
    assert "registered versions: 1" in messages[17]
    assert "'7'" in messages[17]
    assert "https://example.org/nope/v1" in messages[33]
    assert "JSON" in messages[50]
    assert "empty" in messages[77]
    assert "data" in messages[100]
    assert "UTF-8" in messages[150]

    good = [n for n in range(1, total + 1) if n not in bad]
    records = wait_for_records(daemon.output_path, with_path("ack-e"), len(good))
    assert [r["path"] for r in records] == [f"ack-e{n}" for n in good]
    for record in records:
        assert_record_shape(record, CONTENTS, os.getpid())
    dead = wait_for_records(
        daemon.dead_letter_path,
        lambda r: r["__origin__"]["pid"] == os.getpid() and r.get("line") in bad,
        len(bad),
    )
    assert [(r["line"], r["reason"]) for r in dead] == [
        (n, reason) for n, (_, reason) in sorted(bad.items())
    ]


def test_hello_reply_carries_the_protocol_version(daemon: DaemonProcess) -> None:
    sock, _, hello = acked_connection(daemon)
    sock.close()
    assert hello == {
        "hello": "telemetryd",
        "protocol": 1,
        "server": f"telemetryd/{__version__}",
        "max_line_bytes": MAX_LINE_BYTES,
    }


# --- plain mode with socat --------------------------------------------------------------------


def socat(daemon: DaemonProcess, data: bytes) -> tuple[int, bytes, int]:
    """`printf DATA | socat - UNIX-CONNECT:<socket>`: (exit code, what socat printed, its pid)."""
    socat_path = shutil.which("socat")
    assert socat_path is not None, "socat is needed (apt-get install socat)"
    proc = subprocess.Popen(
        [socat_path, "-", f"UNIX-CONNECT:{daemon.socket_path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(data, timeout=15)
    assert err == b"", err
    return proc.returncode, out, proc.pid


def test_plain_mode_with_socat_delivers_the_event(daemon: DaemonProcess) -> None:
    code, out, pid = socat(daemon, event_line("socat-ok") + b"\n")
    assert (code, out) == (0, b"")
    (record,) = wait_for_records(daemon.output_path, with_path("socat-ok"))
    assert assert_record_shape(record, CONTENTS, pid) == {"action": "save", "path": "socat-ok"}


def test_plain_mode_with_socat_prints_the_rejection(daemon: DaemonProcess) -> None:
    lines = [event_line("rej-1"), event_line("rej-2", action="explode"), event_line("rej-3")]
    code, out, pid = socat(daemon, b"".join(line + b"\n" for line in lines))
    assert code == 0
    (reply,) = [json.loads(line) for line in out.splitlines()]
    assert reply["rejected"] == 2
    assert reply["reason"] == "invalid_data"
    assert "action" in reply["message"]
    records = wait_for_records(daemon.output_path, with_path("rej-"), 2)
    assert [r["path"] for r in records] == ["rej-1", "rej-3"]
    (dead,) = wait_for_records(daemon.dead_letter_path, raw_contains("rej-2"))
    assert assert_record_shape(dead, REJECTED, pid)["line"] == 2


def test_plain_mode_line_without_final_newline_then_clean_close_is_accepted(
    daemon: DaemonProcess,
) -> None:
    code, out, pid = socat(daemon, event_line("no-newline"))
    assert (code, out) == (0, b"")
    (record,) = wait_for_records(daemon.output_path, with_path("no-newline"))
    assert record["__origin__"] == expected_origin(pid)


def test_acknowledged_mode_acks_an_unterminated_last_line_after_half_close(
    daemon: DaemonProcess,
) -> None:
    sock, reader, _ = acked_connection(daemon)
    with sock:
        sock.sendall(event_line("ack-unterminated-1") + b"\n" + event_line("ack-unterminated-2"))
        sock.shutdown(socket.SHUT_WR)
        replies = reader.rest()
    assert replies[-1] == {"ack": 2}
    assert not [r for r in replies if "rejected" in r]
    wait_for_records(daemon.output_path, with_path("ack-unterminated-"), 2)


# --- bad and unfinished lines -------------------------------------------------------------------


def test_client_disconnecting_mid_line_dead_letters_the_partial_line(
    daemon: DaemonProcess,
) -> None:
    good = 200
    partial = event_line("cut-partial")[:60]
    with daemon.connect() as sock:
        sock.sendall(b"".join(event_line(f"cut-e{i}") + b"\n" for i in range(good)) + partial)
    records = wait_for_records(daemon.output_path, with_path("cut-e"), good)
    assert [r["path"] for r in records] == [f"cut-e{i}" for i in range(good)]
    (dead,) = wait_for_records(
        daemon.dead_letter_path, lambda r: r.get("raw") == partial.decode(), timeout=10
    )
    data = assert_record_shape(dead, REJECTED, os.getpid())
    assert data["reason"] == "invalid_json"
    assert data["line"] == good + 1
    assert data["raw_bytes"] == len(partial)
    assert data["raw_truncated"] is False


def test_line_over_the_limit_is_rejected_and_the_connection_goes_on(
    daemon: DaemonProcess,
) -> None:
    def sized(tag: str, size: int) -> bytes:
        line = event_line(tag + "-")
        line = event_line(tag + "-" + "x" * (size - len(line)))
        assert len(line) == size
        return line

    long_line = sized("long-one", 10_000)
    huge_line = sized("long-huge", 600_000)  # spans several of the daemon's reads
    at_limit = sized("long-at-limit", MAX_LINE_BYTES)
    over_limit = sized("long-over-limit", MAX_LINE_BYTES + 1)
    euros = json.dumps(  # 3-byte characters
        {"schema_id": CONTENTS, "version": "1", "data": {"action": "save", "path": "€" * 3000}},
        ensure_ascii=False,
    ).encode()
    with pytest.raises(UnicodeDecodeError):  # the kept head ends inside a character
        euros[:KEPT_HEAD_BYTES].decode()
    too_long = [long_line, huge_line, over_limit, euros]
    lines = [
        event_line("long-e1"),
        long_line,
        event_line("long-e3"),
        huge_line,
        event_line("long-e5"),
        at_limit,
        over_limit,
        event_line("long-e8"),
        euros,
        event_line("long-e10"),
    ]
    sock, reader, _ = acked_connection(daemon)
    with sock:
        payload = b"".join(line + b"\n" for line in lines)
        for start in range(0, len(payload), 100_000):
            sock.sendall(payload[start : start + 100_000])
        replies = reader.until_ack(len(lines))

    rejections = [r for r in replies if "rejected" in r]
    assert [(r["rejected"], r["reason"]) for r in rejections] == [
        (2, "line_too_long"),
        (4, "line_too_long"),
        (7, "line_too_long"),
        (9, "line_too_long"),
    ]
    for reply, line in zip(rejections, too_long, strict=True):
        assert str(MAX_LINE_BYTES) in reply["message"]
        assert "max_line_bytes" in reply["message"]
        assert str(len(line)) in reply["message"]
    records = wait_for_records(daemon.output_path, with_path("long-"), 6)
    assert [r["path"][:13] for r in records] == [
        "long-e1",
        "long-e3",
        "long-e5",
        "long-at-limit",
        "long-e8",
        "long-e10",
    ]

    dead = wait_for_records(
        daemon.dead_letter_path,
        lambda r: r["reason"] == "line_too_long" and r["raw"].startswith('{"schema_id"'),
        4,
    )
    for record, number, line in zip(dead, [2, 4, 7, 9], too_long, strict=True):
        data = assert_record_shape(record, REJECTED, os.getpid())
        assert data["line"] == number
        assert data["raw_encoding"] == "utf-8"  # a character cut by the limit is left out
        assert data["raw"] == line[:KEPT_HEAD_BYTES].decode("utf-8", errors="ignore")
        assert data["raw_truncated"] is True
        assert data["raw_bytes"] == len(line)


# --- bugs: an odd value inside `data` must not cost the events around it -----------------------


def send_between_good_events(daemon: DaemonProcess, tag: str, bad: bytes) -> list[dict[str, Any]]:
    """Sends good, bad, good in one write on an acked connection; returns the replies."""
    sock, reader, _ = acked_connection(daemon)
    with sock:
        sock.sendall(event_line(f"{tag}-1") + b"\n" + bad + b"\n" + event_line(f"{tag}-3") + b"\n")
        sock.shutdown(socket.SHUT_WR)
        return reader.rest()


def assert_rejected_alone(daemon: DaemonProcess, tag: str, replies: list[dict[str, Any]]) -> None:
    rejections = [r for r in replies if "rejected" in r]
    assert [r["rejected"] for r in rejections] == [2], replies
    assert rejections[0]["reason"] in REASONS
    assert replies[-1] == {"ack": 3}
    records = wait_for_records(daemon.output_path, with_path(f"{tag}-"), 2)
    assert [r["path"] for r in records] == [f"{tag}-1", f"{tag}-3"]


def test_invalid_utf8_inside_data_is_rejected_without_losing_neighbours(
    daemon: DaemonProcess,
) -> None:
    bad = event_line("utf8-in-data-2").replace(b"utf8-in-data-2", b"utf8-in-data-\xff")
    replies = send_between_good_events(daemon, "utf8-in-data", bad)
    assert_rejected_alone(daemon, "utf8-in-data", replies)
    assert [r["reason"] for r in replies if "rejected" in r] == ["invalid_utf8"]


def test_out_of_range_number_inside_data_is_rejected_without_losing_neighbours(
    daemon: DaemonProcess,
) -> None:
    bad = (
        b'{"schema_id": "' + CONTENTS.encode() + b'", "version": "1", '
        b'"data": {"action": "save", "path": "huge-number-2", "size": 1e999}}'
    )
    replies = send_between_good_events(daemon, "huge-number", bad)
    assert_rejected_alone(daemon, "huge-number", replies)


def test_escaped_reserved_key_cannot_forge_the_origin(daemon: DaemonProcess) -> None:
    forged = {"transport": "unix", "user": "mallory", "uid": 4242, "gid": 4242, "pid": 1}
    bad = (
        b'{"schema_id": "' + CONTENTS.encode() + b'", "version": "1", "data": '
        b'{"action": "save", "path": "forged-origin", "\\u005f_origin__": '
        + json.dumps(forged).encode()
        + b"}}"
    )
    sock, reader, _ = acked_connection(daemon)
    with sock:
        sock.sendall(bad + b"\n" + event_line("forged-origin-after") + b"\n")
        replies = reader.until_ack(2)
    wait_for_records(daemon.output_path, with_path("forged-origin-after"))
    for record in read_records(daemon.output_path):
        assert record["__origin__"] != forged, record
    assert [(r["rejected"], r["reason"]) for r in replies if "rejected" in r] == [
        (1, "reserved_field")
    ]


# --- the send CLI -------------------------------------------------------------------------------


def test_send_cli_prints_a_verdict_per_event(daemon: DaemonProcess, tmp_path: Path) -> None:
    send = [sys.executable, "-m", "telemetryd", "send", "--socket", str(daemon.socket_path)]
    ndjson = b"\n".join(
        [event_line("cli-ndjson-1"), event_line("cli-ndjson-2", version="9"), b"", b""]
    ) + event_line("cli-ndjson-3")
    missing = tmp_path / "nowhere" / "telemetryd.sock"
    runs: dict[str, tuple[list[str], bytes]] = {
        "one": (
            [
                *send,
                "--timestamp",
                "2026-11-22T01:30:21.131970+00:00Z",
                CONTENTS,
                "1",
                '{"action": "save", "path": "cli-one"}',
            ],
            b"",
        ),
        "invalid": ([*send, CONTENTS, "1", '{"action": "explode", "path": "cli-bad"}'], b""),
        "ndjson": (send, ndjson),
        "no_daemon": (
            [*send[:-1], str(missing), CONTENTS, "1", '{"action": "save", "path": "cli-lost"}'],
            b"",
        ),
    }
    procs = {  # concurrently: each start of the CLI takes seconds of imports
        name: subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, (argv, _) in runs.items()
    }
    results: dict[str, tuple[int, str, str]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(runs[name][1], timeout=60)
        results[name] = (proc.returncode, stdout.decode(), stderr.decode())

    assert results["one"] == (0, "1: accepted\n", "")
    (record,) = wait_for_records(daemon.output_path, with_path("cli-one"))
    assert record["__timestamp__"] == "2026-11-22T01:30:21.131970Z"
    assert record["__origin__"] == expected_origin(procs["one"].pid)

    code, out, _ = results["invalid"]
    assert code == 1
    assert out.startswith("1: rejected: invalid_data: ")
    assert "action" in out
    assert out.count("\n") == 1

    code, out, _ = results["ndjson"]
    assert code == 1
    verdicts = out.splitlines()
    assert len(verdicts) == 3
    assert verdicts[0] == "1: accepted"
    assert verdicts[1].startswith("2: rejected: unknown_version: ")
    assert "registered versions: 1" in verdicts[1]
    assert verdicts[2] == "3: accepted"
    wait_for_records(daemon.output_path, with_path("cli-ndjson-"), 2)

    code, out, err = results["no_daemon"]
    assert code == 3
    assert out == ""
    assert str(missing) in err


# --- connection limit -----------------------------------------------------------------------


def test_connections_over_max_connections_get_an_error_and_the_others_keep_working(
    tmp_path: Path,
) -> None:
    config = daemon_config(tmp_path, server="max_connections = 2")
    with DaemonProcess(tmp_path, config) as daemon:
        first, first_replies, _ = acked_connection(daemon)
        second, second_replies, _ = acked_connection(daemon)
        with daemon.connect() as third:
            third.sendall(event_line("limit-refused") + b"\n")
            (reply,) = ReplyReader(third).rest()
        assert reply["error"] == "too_many_connections"
        assert "2" in reply["message"]

        for n, (sock, reader) in enumerate([(first, first_replies), (second, second_replies)]):
            sock.sendall(event_line(f"limit-ok-{n}") + b"\n")
            assert reader.until_ack(1) == [{"ack": 1}]
        first.close()

        def admitted() -> socket.socket | None:  # the closed connection's slot comes back
            sock = daemon.connect()
            sock.sendall(b'{"hello":"telemetryd","protocol":1}\n')
            if "hello" in (ReplyReader(sock).line() or {}):
                return sock
            sock.close()
            return None

        with wait_for(admitted, 10, "a free connection slot") as fourth:
            fourth.sendall(event_line("limit-ok-after") + b"\n")
            assert ReplyReader(fourth).until_ack(1)[-1] == {"ack": 1}
        second.close()
        assert daemon.stop() == 0
        stats = daemon.final_stats()

    paths = sorted(r["path"] for r in read_records(tmp_path / "out/events.jsonl"))
    assert paths == ["limit-ok-0", "limit-ok-1", "limit-ok-after"]
    source = stats["sources"][0]
    assert source["errors"].get("too_many_connections", 0) >= 1


# --- one daemon per socket --------------------------------------------------------------------


def test_second_daemon_on_the_same_socket_refuses_and_the_first_keeps_working(
    tmp_path: Path,
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with DaemonProcess(first_dir, daemon_config(first_dir)) as first:
        config = daemon_config(second_dir).replace(
            str(second_dir / "run" / "telemetryd.sock"), str(first.socket_path)
        )
        with DaemonProcess(second_dir, config, wait_ready=False) as second:
            assert second.proc is not None
            assert second.proc.wait(30) == 1
            assert "another process is listening" in second.stderr()
            assert str(first.socket_path) in second.stderr()
            assert not any(line.get("msg") == "ready" for line in second.log_lines())
        assert first.socket_path.is_socket()
        sock, reader, _ = acked_connection(first)
        with sock:
            sock.sendall(event_line("first-still-works") + b"\n")
            assert reader.until_ack(1) == [{"ack": 1}]
        assert first.stop() == 0
    (record,) = read_records(first_dir / "out/events.jsonl")
    assert record["path"] == "first-still-works"
