"""`telemetryd send`: emit events from the shell over the acknowledged protocol.

Deliberately synchronous and dependency-light (socket + msgspec): it is what an operator runs
to check a deployment, and it prints the daemon's verdict for every event.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from telemetryd import protocol


@dataclass(frozen=True)
class Verdict:
    line: int
    accepted: bool
    reason: str = ""
    message: str = ""


class SendError(Exception):
    pass


def _replies(sock: socket.socket) -> Iterator[bytes]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from lines


def send_events(path: Path, lines: Iterable[bytes], timeout_secs: float = 30.0) -> list[Verdict]:
    """Sends NDJSON event lines; returns one verdict per line once the daemon settled them all."""
    payload = [line.rstrip(b"\r\n") + b"\n" for line in lines]
    if not payload:
        return []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_secs)
        try:
            sock.connect(str(path))
        except OSError as e:
            raise SendError(f"cannot connect to telemetryd at {path}: {e.strerror or e}") from None
        sock.sendall(protocol.client_hello())
        replies = _replies(sock)
        hello = protocol.decode_reply(next(replies, b"{}") or b"{}")
        if hello.get(protocol.HELLO_KEY) != protocol.HELLO_VALUE:
            raise SendError(f"unexpected answer from {path}: {hello}")
        sock.sendall(b"".join(payload))
        sock.shutdown(socket.SHUT_WR)
        rejected: dict[int, Verdict] = {}
        acked = 0
        for raw in replies:
            reply = protocol.decode_reply(raw)
            if "rejected" in reply:
                number = int(reply["rejected"])
                rejected[number] = Verdict(
                    number, False, str(reply["reason"]), str(reply["message"])
                )
            elif "ack" in reply:
                acked = int(reply["ack"])
                if acked >= len(payload):
                    break
            elif "error" in reply:
                raise SendError(f"{reply['error']}: {reply.get('message', '')}")
    if acked < len(payload):
        raise SendError(f"the daemon settled {acked} of {len(payload)} events before closing")
    return [rejected.get(n, Verdict(n, True)) for n in range(1, len(payload) + 1)]
