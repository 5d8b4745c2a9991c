"""The lightweight client: what Jupyter processes import to send events to telemetryd.

    from telemetryd.client import Client
    client = Client("/run/telemetryd/telemetryd.sock")
    client.emit("https://events.jupyter.org/jupyter_server/contents_service/v1", "1",
                {"action": "save", "path": "a.ipynb"})

It depends on msgspec and the standard library only: importing it imports none of the daemon's
dependencies (anyio, pydantic, fastjsonschema). `emit` never blocks and never raises because of
the daemon; events wait in a bounded buffer until the daemon acknowledges them.
"""

from typing import TYPE_CHECKING, Any

from telemetryd.client.base import DEFAULT_SOCKET, SOCKET_ENV
from telemetryd.client.handler import TelemetrydHandler
from telemetryd.client.outbox import OutboxStats as ClientStats
from telemetryd.client.session import ProtocolError, Rejection
from telemetryd.client.threaded import Client

__all__ = [
    "DEFAULT_SOCKET",
    "SOCKET_ENV",
    "AsyncClient",
    "Client",
    "ClientStats",
    "ProtocolError",
    "Rejection",
    "TelemetrydHandler",
]

if TYPE_CHECKING:
    from telemetryd.client.aio import AsyncClient


def __getattr__(name: str) -> Any:
    # asyncio is imported only by programs that use AsyncClient.
    if name == "AsyncClient":
        from telemetryd.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
