"""`AsyncClient`: the client for asyncio programs (and anyio on asyncio, such as telemetryd's
own tests): a task instead of a thread, the same buffer and protocol as `Client`.

`emit` is synchronous and cheap, as in `Client`; call it from the event loop's thread (from
another thread it still works, waking the writer through `call_soon_threadsafe`). The writer
starts with `await client.start()`, `async with AsyncClient(...)`, or at the first `emit`
made inside a running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from telemetryd.client.base import ClientBase, log
from telemetryd.client.session import ProtocolError, Session

READ_BYTES = 65536


class AsyncClient(ClientBase):
    def __init__(self, path: Any = None, **options: Any) -> None:
        super().__init__(path, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()  # set when events are settled or the writer stops
        self._urgent = asyncio.Event()  # set while flush() waits: no lingering
        self._stop = False

    async def start(self) -> None:
        if self._task is None:
            self._start(asyncio.get_running_loop())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._task = loop.create_task(self._run(), name=f"telemetryd-client {self.path}")

    def _wake(self) -> None:
        if self._task is None:
            try:
                self._start(asyncio.get_running_loop())
            except RuntimeError:
                return  # no loop yet: start() will find the events buffered
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._wakeup.set)

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (as Client)
        """Waits until every buffered event is acknowledged; False on timeout or when the
        writer is not running."""
        await self.start()
        self._urgent.set()
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                while len(self._outbox) and self._task is not None and not self._task.done():
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        finally:
            self._urgent.clear()
        return len(self._outbox) == 0

    async def aclose(self, timeout: float | None = 5.0) -> bool:  # noqa: ASYNC109 (as Client)
        """Flushes for up to `timeout` seconds, stops the writer, and drops (counting them as
        `closed`) the events still buffered. True when nothing was dropped."""
        if self._closed:
            return len(self._outbox) == 0
        flushed = await self.flush(timeout)
        self._closed = True
        self._stop = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._outbox.drop_all("closed")
        return flushed

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _stopping(self) -> bool:
        # A method: a type checker takes an attribute as unchanged by the calls in between.
        return self._stop

    # -- the writer task ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._stop:
                session: Session | None = None
                error: BaseException = ConnectionResetError("telemetryd closed the connection")
                try:
                    async with asyncio.timeout(self.connect_timeout_secs):
                        reader, writer = await asyncio.open_unix_connection(self.path)
                except (OSError, TimeoutError) as e:
                    error = e
                else:
                    session = self._session()
                    try:
                        await self._serve(reader, writer, session)
                    except (OSError, ProtocolError) as e:
                        error = e
                    except Exception as e:  # a bug must not end the task that holds the buffer
                        log.exception("telemetryd client: the writer failed; reconnecting")
                        error = e
                    finally:
                        writer.close()
                        with contextlib.suppress(OSError):
                            await writer.wait_closed()
                if self._stopping():
                    break
                failures = 0 if session is not None and session.greeted else failures + 1
                self._disconnected(session, error)
                self._progress.set()
                await self._sleep(self._backoff(failures))
        finally:
            self._progress.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._stop:
                    self._wakeup.clear()
                    await self._wakeup.wait()  # only close() ends a backoff early

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: Session
    ) -> None:
        """One connection, until it breaks (raising) or aclose()."""
        greeted = asyncio.Event()
        writer.write(session.hello())
        replies = asyncio.create_task(self._read(reader, session, greeted))
        try:
            waiting = asyncio.create_task(greeted.wait())
            await asyncio.wait((replies, waiting), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if replies.done():
                replies.result()  # the daemon went away (or refused us) before its hello
                return
            self._connected(session)
            await self._write(writer, session, replies)
        finally:
            replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replies

    async def _write(
        self, writer: asyncio.StreamWriter, session: Session, replies: asyncio.Task[None]
    ) -> None:
        outbox = self._outbox
        while not self._stop:
            if replies.done():
                replies.result()  # raises what ended the connection
                raise ConnectionResetError("telemetryd closed the connection")
            data = session.next_batch()
            if data:
                writer.write(data)
                self._written += data.count(b"\n")
                await writer.drain()
                continue
            if outbox.rest():
                self._wakeup.clear()
                wake = asyncio.create_task(self._wakeup.wait())
                await asyncio.wait((wake, replies), return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                outbox.idle = False
                if self.linger_secs > 0 and not self._urgent.is_set():
                    # Events trickle in: let more join the batch (see Client).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.linger_secs):
                            await self._urgent.wait()

    async def _read(
        self, reader: asyncio.StreamReader, session: Session, greeted: asyncio.Event
    ) -> None:
        while True:
            data = await reader.read(READ_BYTES)
            if not data:
                raise ConnectionResetError("telemetryd closed the connection")
            before = self._outbox.head
            rejections = session.receive(data)
            if session.greeted:
                greeted.set()
            if rejections:
                self._rejected(rejections)
            if self._outbox.head != before:
                self._progress.set()
