"""Sinks are found through the `telemetryd.sinks` entry-point group, as third-party ones are."""

from __future__ import annotations

import pytest

from telemetryd.plugins import UnknownSinkType, load_sink_class, sink_types
from telemetryd_sinks.blackhole import BlackholeSink
from telemetryd_sinks.file.sink import FileSink
from telemetryd_sinks.stdout import StdoutSink


def test_shipped_sinks_are_registered_as_entry_points() -> None:
    assert {"file", "stdout", "blackhole"} <= set(sink_types())
    assert load_sink_class("file") is FileSink
    assert load_sink_class("stdout") is StdoutSink
    assert load_sink_class("blackhole") is BlackholeSink


def test_an_unknown_type_names_the_installed_ones() -> None:
    with pytest.raises(UnknownSinkType, match="unknown sink type 'kafka'; installed sink types: "):
        load_sink_class("kafka")
