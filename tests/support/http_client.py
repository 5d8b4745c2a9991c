"""Helpers for the HTTP API tests: Jupyter's event body, and a raw HTTP/1.1 client on one
socket (h11 as the client's parser), for keep-alive and malformed requests."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import h11

from tests.support.socket_client import CONTENTS


def jupyter_event(path: str, action: str = "save", **extra: Any) -> dict[str, Any]:
    """The body of Jupyter Server's POST /api/events (docs/events.md)."""
    return {"schema_id": CONTENTS, "version": "1", "data": {"action": action, "path": path}} | extra


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One keep-alive connection; requests one at a time, h11 parsing the answers."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        content_type: str | None = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        fields = [("host", "127.0.0.1"), *headers]
        if method != "GET" or body:
            fields.append(("content-length", str(len(body))))
        if content_type is not None and body:
            fields.append(("content-type", content_type))
        data = self.conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.sock.sendall(data)
        reply = self.read_reply()
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return reply

    def read_reply(self) -> Reply:
        status = 0
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, headers, body)
            else:
                raise AssertionError(f"unexpected {event!r}")

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def raw_exchange(port: int, data: bytes, *, shutdown: bool = False, timeout: float = 10) -> bytes:
    """Sends bytes on a fresh connection and reads until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        return read_to_close(sock)


def read_to_close(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def parse_reply(raw: bytes) -> Reply:
    """One response read off a socket (with Content-Length), as bytes."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return Reply(int(status_line.split()[1]), headers, rest[:length])
