"""`__origin__`: who sent a record, as the daemon authenticated it, never as the event said.

The one place it is built, for every source: a Unix socket's peer credentials from the kernel
(SO_PEERCRED: uid, gid, pid, and the user name of the uid), a TCP peer's address, and over HTTP
the identity of a verified token, which becomes `user` (and a JupyterHub service's `kind`).
Each is encoded once per connection (or per identity on it), not per event.
"""

from __future__ import annotations

import pwd
import socket
import struct
from functools import lru_cache

import msgspec


class Origin(msgspec.Struct, frozen=True, omit_defaults=True):
    """The fields in the order records show them; unset ones are left out."""

    transport: str  # "unix" or "http"
    user: str | None = None
    kind: str | None = None  # "service" for a JupyterHub service's token
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    remote: str | None = None  # a TCP peer's address

    def encode(self) -> bytes:
        return _encode(self)

    def as_user(self, user: str, kind: str | None = None) -> Origin:
        """This origin with a verified token's identity as its user."""
        return msgspec.structs.replace(self, user=user, kind=kind)


_encode = msgspec.json.Encoder().encode


@lru_cache(maxsize=1024)
def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def of_unix_peer(sock: socket.socket, transport: str) -> Origin:
    """A Unix socket's peer, as the kernel reports it."""
    fmt = "3i"
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    pid, uid, gid = struct.unpack(fmt, raw)
    return Origin(transport, user=_user_name(uid), uid=uid, gid=gid, pid=pid)


def of_remote(address: str, transport: str) -> Origin:
    """A TCP peer, by its address."""
    return Origin(transport, remote=address)
