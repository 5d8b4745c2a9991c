"""Fixtures shared by the test files; the processes and helpers they use are in tests/support."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """An HTTP server on loopback that answers the http sink's POSTs and keeps them."""
    with WebhookReceiver() as receiver:
        yield receiver
