"""Free TCP ports on loopback, for the servers the harness starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port of 127.0.0.1 free now (the OS's pick; another process could take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
