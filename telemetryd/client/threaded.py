"""`Client`: the client for threaded (and plain synchronous) programs.

`emit` buffers; one daemon thread per client connects, writes and reads acknowledgements with
a non-blocking socket and a selector, so it never stops reading replies while the daemon
pushes back (a blocking write could wait for the daemon while the daemon waits for us to read).
Emitting threads wake it through a socketpair only when it sleeps with nothing to write.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import socket
import threading
import time
import weakref
from typing import Any

from telemetryd.client.base import ClientBase, log
from telemetryd.client.session import ProtocolError, Session

#: How long the interpreter's exit waits for the buffer to be acknowledged, by default.
FLUSH_AT_EXIT_SECS = 5.0
READ_BYTES = 65536

_live: weakref.WeakSet[Client] = weakref.WeakSet()


class Client(ClientBase):
    """Sends events to telemetryd's Unix socket from any thread. See ClientBase for options;
    `flush_at_exit_secs` bounds the flush at interpreter exit (0: none)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        flush_at_exit_secs: float = FLUSH_AT_EXIT_SECS,
        **options: Any,
    ) -> None:
        super().__init__(path, **options)
        self.flush_at_exit_secs = flush_at_exit_secs
        self._settled = threading.Condition()
        #: Set while flush() waits: the writer then writes at once instead of lingering.
        self._urgent = threading.Event()
        self._stop = False
        self._start_writer()
        _live.add(self)

    def _start_writer(self) -> None:
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._thread = threading.Thread(
            target=self._run, name=f"telemetryd-client {self.path}", daemon=True
        )
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_writer.send(b"\0")

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every buffered event is acknowledged; False if `timeout` (seconds)
        passed first or the client is closed."""
        self._urgent.set()
        self._wake()
        try:
            with self._settled:
                return (
                    self._settled.wait_for(
                        lambda: len(self._outbox) == 0 or not self._thread.is_alive(), timeout
                    )
                    and len(self._outbox) == 0
                )
        finally:
            self._urgent.clear()

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flushes for up to `timeout` seconds, then stops the writer; events still buffered
        are dropped and counted (`closed`). True when nothing was dropped. Idempotent."""
        if self._closed:
            return len(self._outbox) == 0
        flushed = self.flush(timeout)
        self._closed = True
        self._stop = True
        self._wake()
        self._thread.join(timeout=1.0 if timeout is None else max(timeout, 1.0))
        self._outbox.drop_all("closed")
        _live.discard(self)
        for sock in (self._wake_reader, self._wake_writer):
            sock.close()
        return flushed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _stopping(self) -> bool:
        # A method: a type checker takes an attribute as unchanged by the calls in between.
        return self._stop

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop:
            session: Session | None = None
            error: BaseException = ConnectionResetError("telemetryd closed the connection")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(self.connect_timeout_secs)
                    sock.connect(self.path)
                    sock.setblocking(False)
                    session = self._session()
                    self._serve(sock, session)
            except (OSError, ProtocolError) as e:
                error = e
            except Exception as e:  # a bug here must not end the thread that holds the buffer
                log.exception("telemetryd client: the writer failed; reconnecting")
                error = e
            if self._stopping():
                break
            failures = 0 if session is not None and session.greeted else failures + 1
            self._disconnected(session, error)
            self._notify()
            self._sleep(self._backoff(failures))
        self._notify()

    def _sleep(self, seconds: float) -> None:
        """Waits out a backoff; an emit does not cut it short, close() does."""
        deadline = time.monotonic() + seconds
        while not self._stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_reader, selectors.EVENT_READ)
                if selector.select(remaining):
                    self._drain_wakes()

    def _drain_wakes(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_reader.recv(4096):
                pass

    def _notify(self) -> None:
        with self._settled:
            self._settled.notify_all()

    def _serve(self, sock: socket.socket, session: Session) -> None:
        """One connection, until it breaks (raising) or close()."""
        outbox = self._outbox
        pending = bytearray(session.hello())
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            writing = False
            while not self._stop:
                if not pending and session.greeted:
                    pending += session.next_batch()
                if pending and not writing:
                    selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    writing = True
                elif not pending and writing:
                    selector.modify(sock, selectors.EVENT_READ)
                    writing = False
                if not pending and session.greeted and not outbox.rest():
                    continue  # an event arrived between next_batch and rest
                woken = False
                for key, mask in selector.select():
                    if key.fileobj is self._wake_reader:
                        self._drain_wakes()
                        woken = True
                        continue
                    if mask & selectors.EVENT_READ:
                        was_greeted = session.greeted
                        self._read(sock, session)
                        if session.greeted and not was_greeted:
                            self._connected(session)
                    if mask & selectors.EVENT_WRITE and pending:
                        sent = sock.send(pending)
                        self._count_written(sent, pending)
                        del pending[:sent]
                outbox.idle = False
                if woken and self.linger_secs > 0:
                    # Events trickle in: let more join the batch, so a busy app costs one
                    # write and one acknowledgement per `linger_secs`, not per event.
                    self._urgent.wait(self.linger_secs)

    def _read(self, sock: socket.socket, session: Session) -> None:
        data = sock.recv(READ_BYTES)
        if not data:
            raise ConnectionResetError("telemetryd closed the connection")
        before = self._outbox.head
        rejections = session.receive(data)
        if rejections:
            self._rejected(rejections)
        if self._outbox.head != before:
            self._notify()

    def _count_written(self, sent: int, pending: bytearray) -> None:
        # Lines, not bytes: a line counts once its newline is written.
        self._written += pending.count(b"\n", 0, sent)


@atexit.register
def _flush_at_exit() -> None:
    for client in list(_live):
        if client.flush_at_exit_secs > 0:
            client.close(client.flush_at_exit_secs)


def _after_fork_in_child() -> None:
    """A forked child has the parent's clients but not their threads: it starts its own, and
    leaves the events buffered before the fork to the parent, which still sends them."""
    for client in list(_live):
        client._outbox.drop_all("forked")
        client._start_writer()


os.register_at_fork(after_in_child=_after_fork_in_child)
