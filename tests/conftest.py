"""Fixtures shared by the test files; the processes and helpers they use are in tests/support."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator

import pytest

# Before the harness is imported: its asserts then explain a failure as a test's own do.
pytest.register_assert_rewrite("tests.support")

from tests.support.webhook_receiver import WebhookReceiver  # noqa: E402


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


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """An HTTP server on loopback that answers the http sink's POSTs and keeps them."""
    with WebhookReceiver() as receiver:
        yield receiver
