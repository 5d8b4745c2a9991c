"""Counters every component keeps, in the spirit of Vector's component metrics.

Plain integers, bumped once per batch rather than per event, so keeping them costs nothing on
the hot path; exporters (logs, Prometheus) read them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ComponentStats:
    """received, sent, dropped (by reason) and errors (by kind) for one source or sink."""

    kind: str
    name: str
    received: int = 0
    sent: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "received": self.received,
            "sent": self.sent,
            "dropped": dict(self.dropped),
            "errors": dict(self.errors),
        }
