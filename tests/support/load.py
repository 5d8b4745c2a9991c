"""Clients that keep the daemon's Unix socket busy on acknowledged connections, each a thread
that sends and another that reads the acknowledgements."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from tests.support.daemon_process import DaemonProcess
from tests.support.socket_client import acked_connection, event_line
from tests.support.waiting import wait_for


class AckedLoad:
    """Events `<tag>-<n>` over one acknowledged connection, about `rate` a second, until
    `finish`; for a sink's outage under load."""

    def __init__(self, daemon: DaemonProcess, tag: str, rate: int) -> None:
        self.sock, self.reader, _ = acked_connection(daemon)
        self.tag = tag
        self.rate = rate
        self.sent = 0
        self.acked = 0
        self.replies_other: list[dict[str, Any]] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send, daemon=True)
        self._receiver = threading.Thread(target=self._receive, daemon=True)

    def __enter__(self) -> AckedLoad:
        self._sender.start()
        self._receiver.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._sender.join()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._receiver.join()
        self.sock.close()

    def _send(self) -> None:
        step = max(1, self.rate // 20)
        try:
            while not self._stop.is_set():
                numbers = range(self.sent, self.sent + step)
                self.sock.sendall(b"".join(event_line(f"{self.tag}-{n}") + b"\n" for n in numbers))
                self.sent += step
                time.sleep(0.05)  # the pace of the load
        except BaseException as e:
            self.failures.append(e)

    def _receive(self) -> None:
        try:
            while (reply := self.reader.line()) is not None:
                if "ack" in reply:
                    self.acked = reply["ack"]
                else:
                    self.replies_other.append(reply)
        except BaseException as e:
            if not self._stop.is_set():  # the shutdown of __exit__ is no failure
                self.failures.append(e)

    def finish(self, timeout: float = 30) -> int:
        """Stops sending; returns the number sent once the daemon acknowledged all of them."""
        self._stop.set()
        self._sender.join()
        assert self.failures == []
        wait_for(lambda: self.acked >= self.sent, timeout, f"acks of {self.sent} events")
        assert self.replies_other == []
        return self.sent


@dataclass
class AckedSender:
    """A client that sends valid events `c<client>-e<n>` on an acknowledged connection, as fast
    as it can, until the daemon stops."""

    daemon: DaemonProcess
    client: int
    batch: int = 100
    acked: int = 0
    sent: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> list[threading.Thread]:
        self.sock, self.reader, _ = acked_connection(self.daemon)
        threads = [threading.Thread(target=self._send), threading.Thread(target=self._read)]
        for thread in threads:
            thread.start()
        return threads

    def _send(self) -> None:
        try:
            while True:
                lines = [
                    event_line(f"c{self.client}-e{i}")
                    for i in range(self.sent, self.sent + self.batch)
                ]
                self.sock.sendall(b"".join(line + b"\n" for line in lines))
                self.sent += self.batch
        except (BrokenPipeError, ConnectionResetError):
            return  # the daemon stopped reading and closed the connection
        except BaseException as e:
            self.errors.append(e)

    def _read(self) -> None:
        try:
            while (reply := self.reader.line()) is not None:
                if "ack" in reply:
                    assert reply["ack"] >= self.acked
                    self.acked = reply["ack"]
                else:
                    self.rejections.append(reply)
        except BaseException as e:
            self.errors.append(e)
