"""Sink plugins, installed as the package `telemetryd.sinks`.

Each sink is one module with one class implementing `telemetryd.sinks.base.Sink`, registered
in the `telemetryd.sinks` entry-point group (see pyproject.toml); third-party packages add
sinks the same way.
"""
