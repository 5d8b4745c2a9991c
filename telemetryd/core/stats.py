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
    """received, sent, rejected and dropped (by reason) and errors (by kind), per component."""

    kind: str
    name: str
    received: int = 0
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # bad input, by reason
    dropped: Counter[str] = field(default_factory=Counter)  # lost good events, by reason
    errors: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "received": self.received,
            "sent": self.sent,
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
            "errors": dict(self.errors),
        }
