"""Both sources keep the Source contract the daemon drives them through (telemetryd.source)."""

from __future__ import annotations

from pathlib import Path

from telemetryd.config import ServerSettings
from telemetryd.core.ingest import Ingestor
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus
from telemetryd.delivery.intake import Intake
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.source import Source
from telemetryd.sources.http.app import HttpApi
from telemetryd.sources.http.server import HttpSource
from telemetryd.sources.unix import UnixSource


def intake(name: str) -> Intake:
    dead_letter = SinkQueue(10, 1 << 20, "drop_newest", ComponentStats("sink", "rejected"))
    return Intake(
        Ingestor(SchemaRegistry.load()), Bus([]), dead_letter, ComponentStats("source", name)
    )


def test_both_sources_are_sources(tmp_path: Path) -> None:
    # Typed as Source: mypy checks the signatures, isinstance that nothing is missing.
    unix: Source = UnixSource(ServerSettings(unix_socket=tmp_path / "s.sock"), intake("unix"))
    http: Source = HttpSource(
        HttpApi(ServerSettings(unix_socket=None, http="127.0.0.1:0"), intake("http"), workers=[])
    )
    for source in (unix, http):
        assert isinstance(source, Source)
    assert [unix.stats.name, http.stats.name] == ["unix", "http"]
    assert [unix.config_key, http.config_key] == ["server.unix_socket", "server.http"]
    assert set(unix.snapshot()) == {
        "connections",
        "replies_dropped",
        "read_budget_held_bytes",
        "read_budget_waiting",
    }
    assert set(http.snapshot()) == {"address", "connections", "responses"}


def test_http_on_a_unix_socket_alone_names_its_key(tmp_path: Path) -> None:
    settings = ServerSettings(unix_socket=None, http_unix_socket=tmp_path / "http.sock")
    source: Source = HttpSource(HttpApi(settings, intake("http"), workers=[]))
    assert source.config_key == "server.http_unix_socket"
