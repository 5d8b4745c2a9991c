"""A real HTTP server on loopback for the http sink's tests: it answers POSTs from a script
(503 with Retry-After, 429, 413 past a size, ...) and keeps every request, gzip bodies decoded."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request's body was read
    path: str
    headers: dict[str, str]  # names in lower case
    raw: bytes  # the body as sent
    body: bytes  # decoded when Content-Encoding is gzip
    status: int  # what the receiver answered

    def lines(self) -> list[bytes]:
        assert self.body.endswith(b"\n"), "an NDJSON body ends with a newline"
        return self.body.splitlines()


#: Decides the answer to a request from its decoded body, when no scripted answer is left.
Responder = Callable[[bytes], Answer]


class WebhookReceiver:
    """`with WebhookReceiver() as hook:` serves on a free port of 127.0.0.1 until left."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.requests: list[Received] = []
        self._script: deque[Answer] = deque()
        self.responder = responder or (lambda _: Answer())
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def script(self, *answers: Answer) -> None:
        """Answers for the next requests, in order; then the responder's."""
        with self._lock:
            self._script.extend(answers)

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def records(self) -> list[dict[str, Any]]:
        """Every line of every request answered 2xx, decoded."""
        return [json.loads(line) for r in self.delivered() for line in r.lines()]

    def _answer(self, body: bytes) -> Answer:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.responder(body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the sink's client expects

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
                answer = receiver._answer(body)
                with receiver._lock:
                    receiver.requests.append(
                        Received(time.monotonic(), self.path, headers, raw, body, answer.status)
                    )
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is the assertions, not an access log

        return Handler
