"""Discovery of sink plugins through the `telemetryd.sinks` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from telemetryd.sink import Sink

ENTRY_POINT_GROUP = "telemetryd.sinks"


class UnknownSinkType(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown sink type {name!r}; installed sink types: {', '.join(known)}")
        self.name = name
        self.known = known


@cache
def sink_types() -> dict[str, str]:
    """Entry-point name → "module:attr", for every installed sink plugin."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


#: The extra that installs each shipped sink's client library.
SINK_EXTRAS = {"nats": "nats", "redis": "redis", "postgres": "postgres"}


class SinkUnavailable(ImportError):
    """A sink plugin whose module (or a library it needs) cannot be imported."""


def load_sink_class(name: str) -> type[Sink]:
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            cls = ep.load()
        except ModuleNotFoundError as e:
            extra = SINK_EXTRAS.get(name)
            hint = f": pip install 'telemetryd[{extra}]'" if extra else ""
            raise SinkUnavailable(
                f"sink type {name!r} needs the Python package {e.name!r}, which is not "
                f"installed{hint}"
            ) from e
        if not (isinstance(cls, type) and issubclass(cls, Sink)):
            raise TypeError(f"sink plugin {name!r} ({ep.value}) is not a telemetryd Sink class")
        return cls
    raise UnknownSinkType(name, sorted(sink_types()))
