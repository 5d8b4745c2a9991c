from __future__ import annotations

import importlib.metadata

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_report_header() -> str:
    """Which Jupyter the Jupyter tests ran against (`make test`: the newest pyproject.toml
    allows, then the oldest supported, tests/constraints-oldest.txt)."""
    found = []
    for name in ("jupyter_events", "jupyter_server"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return "jupyter: " + ", ".join(found)
