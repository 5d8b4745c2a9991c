"""The sinks shipped with telemetryd, installed as the package `telemetryd_sinks`.

Each sink is one module with one class implementing `telemetryd_sinks.base.Sink`, registered
in the `telemetryd.sinks` entry-point group (see pyproject.toml); third-party packages add
sinks the same way.
"""
