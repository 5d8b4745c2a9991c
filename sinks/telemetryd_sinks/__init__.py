"""The sinks shipped with telemetryd, installed as the package `telemetryd_sinks`.

Each sink implements the contract in the core, `telemetryd.sink.Sink`, and is registered
in the `telemetryd.sinks` entry-point group (see pyproject.toml); third-party packages add
sinks the same way.
"""
