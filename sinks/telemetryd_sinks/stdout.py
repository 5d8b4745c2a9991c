"""The stdout sink: records as JSON Lines on the daemon's stdout (or stderr), for debugging
and demos (`make run`, `telemetryd ... | jq`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

import anyio.to_thread
from pydantic import Field

from telemetryd.core.record import Record
from telemetryd.sink import Sink, SinkHealth, SinkSettings


class StdoutSettings(SinkSettings):
    stream: Literal["stdout", "stderr"] = Field(
        default="stdout", description="The standard stream the records are written to."
    )


class StdoutSink(Sink):
    """Writes every record as one JSON line, flushed after each batch."""

    settings_model = StdoutSettings

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, StdoutSettings):
            raise TypeError(f"StdoutSink needs StdoutSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._stream_name = settings.stream
        self._error: str | None = None

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        data = b"".join([part for record in batch for part in (record.payload, b"\n")])
        # A paused pager or a full pipe blocks the write: keep that off the event loop.
        try:
            await anyio.to_thread.run_sync(self._write, data)
        except OSError as exc:
            self._error = f"writing to {self._stream_name}: {exc}"
            raise
        self._error = None

    def _write(self, data: bytes) -> None:
        # Looked up per batch so that a replaced sys.stdout (tests, embedding) is honoured.
        stream = sys.stdout if self._stream_name == "stdout" else sys.stderr
        stream.flush()  # text printed earlier must come out before these bytes
        stream.buffer.write(data)
        stream.buffer.flush()

    def health(self) -> SinkHealth:
        if self._error is not None:
            return SinkHealth(False, self._error)
        return SinkHealth(True)
