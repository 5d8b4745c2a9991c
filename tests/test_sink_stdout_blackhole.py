"""The stdout and blackhole sinks: what they print, count and refuse."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from telemetryd.core.record import Record
from telemetryd.plugins import load_sink_class
from telemetryd_sinks.blackhole import BlackholeSettings, BlackholeSink
from telemetryd_sinks.stdout import StdoutSettings, StdoutSink


def records(count: int) -> list[Record]:
    return [
        Record(schema_id="urn:test", version="1", payload=b'{"i":%d}' % i, received=0.0)
        for i in range(count)
    ]


def blackhole_settings(**overrides: Any) -> BlackholeSettings:
    # model_validate, as the config loader does: the keys arrive as a TOML table.
    return BlackholeSettings.model_validate({"name": "void", "type": "blackhole", **overrides})


def stdout_settings(**overrides: Any) -> StdoutSettings:
    return StdoutSettings.model_validate({"name": "debug", "type": "stdout", **overrides})


def blackhole(**overrides: Any) -> BlackholeSink:
    return BlackholeSink(blackhole_settings(**overrides))


@pytest.mark.anyio
async def test_stdout_writes_json_lines(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = StdoutSink(stdout_settings())
    await sink.start()
    await sink.write_batch(records(2))
    await sink.write_batch([])
    await sink.close()
    out, err = capfdbinary.readouterr()
    assert out == b'{"i":0}\n{"i":1}\n'
    assert err == b""
    assert sink.health().healthy


@pytest.mark.anyio
async def test_stdout_sink_can_write_to_stderr(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = StdoutSink(stdout_settings(stream="stderr"))
    await sink.write_batch(records(1))
    out, err = capfdbinary.readouterr()
    assert (out, err) == (b"", b'{"i":0}\n')


def test_stdout_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="path"):
        stdout_settings(path="x")
    with pytest.raises(ValidationError):
        stdout_settings(stream="stdin")


@pytest.mark.anyio
async def test_blackhole_counts_and_discards() -> None:
    sink = blackhole()
    await sink.write_batch(records(3))
    await sink.write_batch(records(2))
    assert (sink.records, sink.batches, sink.failures) == (5, 2, 0)
    assert sink.health().healthy


@pytest.mark.anyio
async def test_blackhole_fails_the_first_batches_then_delivers() -> None:
    sink = blackhole(fail_batches=2)
    for attempt in (1, 2):
        with pytest.raises(OSError, match=f"simulated failure {attempt} of 2"):
            await sink.write_batch(records(3))
        assert not sink.health().healthy
    await sink.write_batch(records(3))  # the retry
    assert (sink.records, sink.batches, sink.failures) == (3, 1, 2)
    assert sink.health().healthy


@pytest.mark.anyio
async def test_blackhole_delay_slows_every_batch() -> None:
    sink = blackhole(delay_secs=0.05)
    began = time.monotonic()
    await sink.write_batch(records(1))
    await sink.write_batch(records(1))
    assert time.monotonic() - began >= 0.1
    assert sink.batches == 2


@pytest.mark.parametrize("bad", [{"delay_secs": -1}, {"fail_batches": -1}, {"fail_batch": 1}])
def test_blackhole_settings_reject_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        blackhole_settings(**bad)


def test_entry_points_load_the_sinks() -> None:
    assert load_sink_class("stdout") is StdoutSink
    assert load_sink_class("blackhole") is BlackholeSink
