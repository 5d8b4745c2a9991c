"""`TelemetrydHandler`: forwards jupyter_events' records to telemetryd.

jupyter_events' `EventLogger.emit` validates an event, wraps it in a capsule
(`__timestamp__`, `__schema__`, `__schema_version__`, `__metadata_version__`, then the data)
and logs the capsule dict as the record's message. This handler takes the capsule from the
record, not the formatted text, so no JSON is written twice: the event keeps its own schema id,
version and timestamp, and the daemon adds `__origin__` from the socket's peer credentials.

    c.EventLogger.handlers = [TelemetrydHandler("/run/telemetryd/telemetryd.sock")]
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from telemetryd.client.threaded import Client

_decode = msgspec.json.Decoder(dict[str, Any]).decode


class TelemetrydHandler(logging.Handler):
    """A logging handler for jupyter_events' `EventLogger.handlers`.

    Give it a socket path (default: $TELEMETRYD_SOCKET, else /run/telemetryd/telemetryd.sock)
    and client options (see `telemetryd.client.Client`), or a `Client` to share. Records that
    are not jupyter_events capsules (no `__schema__`) are ignored.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        client: Client | None = None,
        level: int = logging.NOTSET,
        **options: Any,
    ) -> None:
        super().__init__(level)
        self._owns_client = client is None
        self.client = client if client is not None else Client(path, **options)
        self._options = options

    def emit(self, record: logging.LogRecord) -> None:
        capsule = record.msg
        if type(capsule) is not dict:
            if not isinstance(capsule, str | bytes) or not capsule:
                return
            try:
                capsule = _decode(capsule)  # a capsule already formatted as JSON text
            except (msgspec.DecodeError, UnicodeDecodeError):
                return
        schema_id = capsule.get("__schema__")
        if schema_id is None:
            return
        try:
            data = {key: value for key, value in capsule.items() if key[:2] != "__"}
            client = self.client
            if client._closed and self._owns_client:
                client = self._reopen()
            client.emit(
                schema_id,
                capsule.get("__schema_version__", ""),
                data,
                capsule.get("__timestamp__"),
            )
        except Exception:
            self.handleError(record)

    def _reopen(self) -> Client:
        """A new client after close(), as a FileHandler reopens its file. Traitlets
        applications (Jupyter Server, JupyterHub) call logging.config.dictConfig after they
        load the config file that made this handler, and dictConfig closes every handler that
        exists. `emit` runs under the handler's lock, so one client is made."""
        self.client = Client(self.client.path, **self._options)
        return self.client

    def flush(self) -> None:
        self.client.flush(timeout=1.0)

    def close(self) -> None:
        """Flushes (for up to the client's exit timeout) and, if the handler made its client,
        closes it; an event handled after this makes a new client (see `_reopen`)."""
        if self._owns_client:
            self.client.close(self.client.flush_at_exit_secs)
        super().close()
