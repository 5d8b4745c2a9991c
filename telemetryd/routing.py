"""Which records a sink wants: include/exclude glob patterns over schema ids."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from telemetryd.record import Record


class RouteFilter:
    """Decides once per schema id (cached), so the per-event cost is one dict lookup."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._decisions: dict[str, bool] = {}

    @property
    def wants_everything(self) -> bool:
        return not self.include and not self.exclude

    def wants(self, schema_id: str) -> bool:
        decision = self._decisions.get(schema_id)
        if decision is None:
            decision = self._decide(schema_id)
            if len(self._decisions) < 10_000:  # ids come from the registry; bound it anyway
                self._decisions[schema_id] = decision
        return decision

    def _decide(self, schema_id: str) -> bool:
        if self.include and not any(fnmatchcase(schema_id, p) for p in self.include):
            return False
        return not any(fnmatchcase(schema_id, p) for p in self.exclude)

    def select(self, records: Sequence[Record]) -> Sequence[Record]:
        if self.wants_everything:
            return records
        wants = self.wants
        return [r for r in records if wants(r.schema_id)]
