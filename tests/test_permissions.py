"""Who may send and who may read: the socket's group and the records' group are set apart.

The documented unit once ran the daemon as `Group=jupyter`, so every record file (mode 0640) was
readable by every Jupyter user. Now the socket has `unix_socket_group` (who may send) and the
file sinks `group` (who may read); disk buffers are the daemon's user's alone (0600). Changing a
file's group to any group needs root, which is how CI runs; elsewhere these tests are skipped.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetryd.config import ConfigError, parse_config
from telemetryd.settings_types import gid_of
from telemetryd_sinks.file.compressor import gzip_file
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess
from tests.support.records import wait_for_records
from tests.support.socket_client import event_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to any group needs root")


@pytest.fixture
def groups() -> Iterator[tuple[str, str]]:
    """Two groups made for the test (the senders', the readers'), removed afterwards."""
    made = [f"td-{role}-{uuid.uuid4().hex[:8]}" for role in ("send", "read")]
    try:
        for name in made:
            subprocess.run(["groupadd", name], check=True)
        yield made[0], made[1]
    finally:
        for name in made:
            subprocess.run(["groupdel", name], check=False, capture_output=True)


def run_without_group_rights(workdir: Path, config_text: str) -> subprocess.CompletedProcess[str]:
    """`telemetryd run` as a user in none of the test's groups: root without supplementary
    groups and without CAP_CHOWN, so giving a file to another group is refused as it is to any
    user outside it, while the checkout and its interpreter stay readable wherever they are."""
    config = workdir / "telemetryd.toml"
    config.write_text(config_text)
    outsider = ["setpriv", "--clear-groups", "--inh-caps=-chown", "--bounding-set=-chown"]
    return subprocess.run(
        [*outsider, sys.executable, "-m", "telemetryd", "run", "--config", str(config)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mode_and_gid(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode), info.st_gid


def test_the_socket_s_group_and_the_records_group_are_set_apart(
    tmp_path: Path, groups: tuple[str, str]
) -> None:
    senders, readers = groups
    server = f'unix_socket_group = "{senders}"\nhttp_unix_socket = "{tmp_path}/run/http.sock"\n'
    sinks = file_sink("archive", tmp_path / "out" / "events.jsonl", f'group = "{readers}"')
    sinks += file_sink(
        "buffered",
        tmp_path / "out" / "buffered.jsonl",
        f'buffer = "disk"\nbuffer_path = "{tmp_path}/buffer"\ngroup = "{readers}"',
    )
    config = daemon_config(tmp_path, server=server, sinks=sinks) + f'group = "{readers}"\n'
    with DaemonProcess(tmp_path, config) as daemon:
        with daemon.connect() as sock:
            sock.sendall(event_line("perm/a.ipynb") + b"\nnot json\n")
        wait_for_records(tmp_path / "out" / "events.jsonl", lambda r: r.get("path") is not None)
        wait_for_records(tmp_path / "out" / "buffered.jsonl", lambda r: r.get("path") is not None)
        wait_for_records(tmp_path / "out" / "rejected.jsonl", lambda r: True)
        assert mode_and_gid(daemon.socket_path) == (0o660, gid_of(senders))
        assert mode_and_gid(tmp_path / "run" / "http.sock") == (0o660, gid_of(senders))
        for name in ("events.jsonl", "buffered.jsonl", "rejected.jsonl"):
            assert mode_and_gid(tmp_path / "out" / name) == (0o640, gid_of(readers)), name
        segments = list((tmp_path / "buffer").glob("*.seg"))
        assert segments
        assert {stat.S_IMODE(os.stat(s).st_mode) for s in segments} == {0o600}
        assert daemon.stop() == 0


def test_a_gzipped_rotation_keeps_the_mode_and_group(
    tmp_path: Path, groups: tuple[str, str]
) -> None:
    rotated = tmp_path / "events.20261122T013021.131970Z.jsonl"
    rotated.write_bytes(b'{"a":1}\n')
    gz = gzip_file(rotated, 0o640, lambda _: None, gid_of(groups[1]))
    assert mode_and_gid(gz) == (0o640, gid_of(groups[1]))


@pytest.mark.parametrize("setting", ["server.unix_socket_group", "sinks[0].group"])
def test_a_group_the_daemon_is_not_in_refuses_to_start_naming_the_key(
    tmp_path: Path, groups: tuple[str, str], setting: str
) -> None:
    group = groups[0]
    server = f'unix_socket_group = "{group}"' if setting.startswith("server") else ""
    sink = file_sink("archive", tmp_path / "out" / "events.jsonl", f'group = "{group}"')
    sinks = sink if setting.startswith("sinks") else None
    run = run_without_group_rights(tmp_path, daemon_config(tmp_path, server=server, sinks=sinks))
    assert run.returncode == 1, run.stderr
    first = run.stderr.splitlines()[0]
    assert first.startswith(f"telemetryd: error: {tmp_path / 'telemetryd.toml'}: {setting}: ")
    assert f"to group '{group}': Operation not permitted" in first
    assert "must be a member" in first
    assert not (tmp_path / "run" / "telemetryd.sock").exists()


def test_a_group_that_does_not_exist_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            '[server]\nunix_socket_group = "no-such-group-td"\n'
            '[[sinks]]\nname = "a"\ntype = "file"\npath = "x"\ngroup = "no-such-group-td"\n'
        )
    assert [key for key, _ in caught.value.problems] == [
        "server.unix_socket_group",
        "sinks[0].group",
    ]
    assert "no group 'no-such-group-td' on this system" in str(caught.value)
