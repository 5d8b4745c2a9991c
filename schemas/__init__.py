"""The event schemas shipped with telemetryd: package data of `telemetryd.schemas`."""
