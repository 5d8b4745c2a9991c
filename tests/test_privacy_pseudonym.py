"""Pseudonyms equal an independent HMAC-SHA256; the key file is created safely and checked."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from telemetryd.privacy.pseudonym import KEY_BYTES, Pseudonymizer, PseudonymKeyError, load_key


def _expected(key: bytes, data: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "value",
    ["alice", "ünïcode ✓", "", 1000, -3, True, None, [1, "a"], {"b": 1, "a": {"d": [], "c": "x"}}],
)
def test_a_pseudonym_is_the_hmac_of_the_utf8_or_canonical_json(value: Any) -> None:
    key = bytes(range(32))
    data = (
        value.encode()
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert Pseudonymizer(key)(value) == _expected(key, data)


def test_the_key_file_is_created_0600_with_32_bytes(tmp_path: Path) -> None:
    path = tmp_path / "var" / "privacy" / "pseudonym.key"
    old = os.umask(0)  # the mode must not depend on the umask
    try:
        key = load_key(path)
    finally:
        os.umask(old)
    assert len(key) == KEY_BYTES
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pseudonyms_are_stable_across_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    first = Pseudonymizer(load_key(path))("alice")
    again = load_key(path)
    assert Pseudonymizer(again)("alice") == first == _expected(again, b"alice")
    other = tmp_path / "other.key"
    assert Pseudonymizer(load_key(other))("alice") != first  # another key: no join


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"k" * 32)
    path.chmod(0o644)
    with pytest.raises(PseudonymKeyError) as caught:
        load_key(path)
    assert str(caught.value) == (
        f"{path}: the pseudonym key has mode 0644; group and others must have no access to it "
        f"(chmod 600 {path})"
    )


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_of_another_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(PseudonymKeyError) as caught:
        load_key(path)
    assert str(caught.value).startswith(
        f"{path}: the pseudonym key holds {size} bytes; it must be exactly 32"
    )


def test_a_key_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.mkdir(mode=0o700)
    with pytest.raises(PseudonymKeyError, match=r"pseudonym\.key: "):
        load_key(path)


def test_starts_racing_to_create_the_key_all_get_the_one_key(tmp_path: Path) -> None:
    """Processes that find no key at once: one creates it, every other reads it whole (never a
    half-written file), and no temporary file is left beside it."""
    path = tmp_path / "privacy" / "pseudonym.key"
    script = (
        "import sys; from pathlib import Path; from telemetryd.privacy.pseudonym import load_key;"
        "sys.stdout.write(load_key(Path(sys.argv[1])).hex())"
    )
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    keys = {racer.communicate(timeout=60)[0] for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert keys == {path.read_bytes().hex()}
    assert sorted(p.name for p in path.parent.iterdir()) == ["pseudonym.key"]
