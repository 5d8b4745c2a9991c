"""Pseudonyms: a value replaced by a keyed hash, equal for equal values under one key, so that
records still join on it without saying what it was; and the key file they are made with."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any, Final

import msgspec

KEY_BYTES: Final = 32
PREFIX: Final = "hmac-sha256:"

_canonical = msgspec.json.Encoder(order="sorted").encode  # sorted keys, no whitespace


class PseudonymKeyError(Exception):
    """The pseudonym key file cannot be used; the message names the file and what is wrong."""


class Pseudonymizer:
    """Makes `"hmac-sha256:" + hex(HMAC-SHA256(key, bytes))` of a value, where bytes is the
    UTF-8 of a string and the canonical JSON (keys sorted, no whitespace) of anything else."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, value: Any) -> str:
        data = value.encode() if isinstance(value, str) else _canonical(value)
        # hmac.digest: the one-shot C path, several times faster than hmac.new().hexdigest().
        return PREFIX + hmac.digest(self._key, data, "sha256").hex()


def load_key(path: Path) -> bytes:
    """The key in `path`, created (parent folders too) with 32 random bytes, mode 0600, if the
    file does not exist. A key anyone but its owner may read, or of another size, is refused:
    whoever holds the key can tell which value a pseudonym stands for by trying candidates."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _create(path)
    except OSError as e:
        raise PseudonymKeyError(f"{path}: cannot read the pseudonym key: {e.strerror}") from e
    try:
        info = os.fstat(fd)
        _check(path, info)
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise PseudonymKeyError(
            f"{path}: the pseudonym key holds {info.st_size} bytes; it must be exactly "
            f"{KEY_BYTES} (remove it to have a new one made, which changes every pseudonym)"
        )
    return key


def _check(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise PseudonymKeyError(f"{path}: the pseudonym key is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise PseudonymKeyError(
            f"{path}: the pseudonym key has mode {mode:04o}; group and others must have no "
            f"access to it (chmod 600 {path})"
        )


def _create(path: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written whole to a private temporary file, then linked into place: link refuses an
        # existing name, so of two starts racing one key wins and the other reads it complete
        # (a file created in place could be read before its bytes are written).
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise PseudonymKeyError(f"{path}: cannot create the pseudonym key: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # mkstemp's mode already, whatever the umask
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return load_key(path)
        except OSError as e:
            raise PseudonymKeyError(f"{path}: cannot create the pseudonym key: {e.strerror}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return key
