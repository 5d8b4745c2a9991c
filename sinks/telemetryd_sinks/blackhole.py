"""The blackhole sink: counts records and discards them. It can be slow or fail on purpose,
so tests and benchmarks can exercise backpressure and retries without a real destination."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from pydantic import Field

from telemetryd.core.record import Record
from telemetryd.sink import Sink, SinkHealth, SinkSettings


class BlackholeSettings(SinkSettings):
    delay_secs: float = Field(
        default=0.0, ge=0, description="Time each batch takes, to simulate a slow destination."
    )
    fail_batches: int = Field(
        default=0, ge=0, description="Fail this many batches first (raising), to exercise retries."
    )


class SimulatedSinkError(OSError):
    """The failure `fail_batches` asks for; an OSError like a real destination's."""


class BlackholeSink(Sink):
    """Discards records; `records` and `batches` count the ones delivered, `failures` the
    batches it refused."""

    settings_model = BlackholeSettings

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, BlackholeSettings):
            raise TypeError(f"BlackholeSink needs BlackholeSettings, not {type(settings).__name__}")
        super().__init__(settings)
        self._delay_secs = settings.delay_secs
        self._fail_batches = settings.fail_batches
        self.records = 0
        self.batches = 0
        self.failures = 0
        self._last_failed = False

    async def write_batch(self, batch: Sequence[Record]) -> None:
        if self._delay_secs:
            await anyio.sleep(self._delay_secs)
        if self.failures < self._fail_batches:
            self.failures += 1
            self._last_failed = True
            raise SimulatedSinkError(
                f"blackhole sink {self.name!r}: simulated failure "
                f"{self.failures} of {self._fail_batches}"
            )
        self.records += len(batch)
        self.batches += 1
        self._last_failed = False

    def health(self) -> SinkHealth:
        if self._last_failed:
            return SinkHealth(False, f"simulated failure {self.failures} of {self._fail_batches}")
        return SinkHealth(True)
