"""A Unix socket's path, checked before a source binds it (the socket and HTTP sources)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path


class SocketInUse(OSError):
    pass


def refuse_if_in_use(path: Path) -> None:
    """Binding replaces an existing socket file; refuse instead if a daemon still answers on it."""
    if not path.exists():
        return
    if not path.is_socket():
        raise SocketInUse(
            errno.EEXIST, f"{path} exists and is not a socket; refusing to replace it"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return  # stale file from a daemon that died: safe to replace
    finally:
        probe.close()
    raise SocketInUse(errno.EADDRINUSE, f"another process is listening on {path}")
