"""A client of the daemon's Unix socket: event lines, and the replies of acknowledged mode."""

from __future__ import annotations

import json
import socket
from typing import Any

from tests.support.daemon_process import DaemonProcess

CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
KERNELS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


def event_line(
    path: str, action: str = "save", schema_id: str = CONTENTS, version: str = "1"
) -> bytes:
    return json.dumps(
        {"schema_id": schema_id, "version": version, "data": {"action": action, "path": path}}
    ).encode()


def receive_lines(sock: socket.socket, until: int | None = None) -> list[dict[str, Any]]:
    """Reads reply lines until EOF, or until an ack covering line `until` arrives."""
    buffer = b""
    replies: list[dict[str, Any]] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            reply = json.loads(line)
            replies.append(reply)
            if until is not None and reply.get("ack", 0) >= until:
                return replies
    return replies


class ReplyReader:
    """Reads the daemon's reply lines from a socket, keeping what follows a returned line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self.eof = False

    def line(self) -> dict[str, Any] | None:
        """The next reply, or None at the end of the stream."""
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def until_ack(self, count: int) -> list[dict[str, Any]]:
        """Replies up to and including the first ack covering line `count`."""
        replies: list[dict[str, Any]] = []
        while True:
            reply = self.line()
            if reply is None:
                raise AssertionError(f"connection closed before ack {count}; got {replies}")
            replies.append(reply)
            if reply.get("ack", 0) >= count:
                return replies

    def rest(self) -> list[dict[str, Any]]:
        replies: list[dict[str, Any]] = []
        while (reply := self.line()) is not None:
            replies.append(reply)
        return replies


def acked_connection(daemon: DaemonProcess) -> tuple[socket.socket, ReplyReader, dict[str, Any]]:
    """A connection in acknowledged mode: (socket, its reply reader, the daemon's hello)."""
    sock = daemon.connect()
    sock.sendall(b'{"hello":"telemetryd","protocol":1}\n')
    reader = ReplyReader(sock)
    hello = reader.line()
    assert hello is not None, "no hello reply"
    assert hello.get("hello") == "telemetryd", hello
    return sock, reader, hello


def send_acked(daemon: DaemonProcess, lines: list[bytes]) -> list[dict[str, Any]]:
    """Sends lines on an acknowledged connection; returns the rejections, once all are settled."""
    sock, reader, _ = acked_connection(daemon)
    with sock:
        sock.sendall(b"".join(line + b"\n" for line in lines))
        replies = reader.until_ack(len(lines))
    return [r for r in replies if "rejected" in r]
