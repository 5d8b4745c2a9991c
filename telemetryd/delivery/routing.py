"""Which records a sink wants: include/exclude rules over schema ids and versions.

A rule is a schema id glob (every version), or a table naming the versions too:

    include = ["https://events.jupyter.org/jupyter_server/*",
               {schema = "https://events.jupyter.org/jupyterhub/*", versions = ["1"]}]
    exclude = [{schema = "*", versions = ["0"]}]

A record goes to a sink when some include rule matches (or there are none) and no exclude
rule does. Version entries are globs too. Decided once per (schema id, version) and cached, so
the per-event cost is one dict lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from telemetryd.core.record import Record


class VersionedRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: str = Field(alias="schema", min_length=1, description="A schema id glob.")
    versions: list[str] = Field(
        default_factory=list, description="Version globs; empty means every version."
    )


#: What a sink's `include` and `exclude` lists hold.
Rule = str | VersionedRule


@dataclass(frozen=True, slots=True)
class _Compiled:
    schema: str
    versions: tuple[str, ...]  # empty: every version

    def matches(self, schema_id: str, version: str | None) -> bool:
        if not fnmatchcase(schema_id, self.schema):
            return False
        if not self.versions or version is None:
            return True
        return any(fnmatchcase(version, v) for v in self.versions)


def _compile(rules: Sequence[Rule]) -> tuple[_Compiled, ...]:
    return tuple(
        _Compiled(rule, ())
        if isinstance(rule, str)
        else _Compiled(rule.schema_, tuple(rule.versions))
        for rule in rules
    )


class RouteFilter:
    def __init__(self, include: Sequence[Rule] = (), exclude: Sequence[Rule] = ()) -> None:
        self.include = _compile(include)
        self.exclude = _compile(exclude)
        self._decisions: dict[tuple[str, str | None], bool] = {}

    @property
    def wants_everything(self) -> bool:
        return not self.include and not self.exclude

    def wants(self, schema_id: str, version: str | None = None) -> bool:
        """Whether records of this schema (and version; None: some version of it) go here."""
        key = (schema_id, version)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(schema_id, version)
            if len(self._decisions) < 10_000:  # ids come from the registry; bound it anyway
                self._decisions[key] = decision
        return decision

    def _decide(self, schema_id: str, version: str | None) -> bool:
        if self.include and not any(r.matches(schema_id, version) for r in self.include):
            return False
        # With no version given, only an exclude rule for every version rules a schema out.
        return not any(
            r.matches(schema_id, version) and (version is not None or not r.versions)
            for r in self.exclude
        )

    def select(self, records: Sequence[Record]) -> Sequence[Record]:
        if self.wants_everything:
            return records
        wants = self.wants
        return [r for r in records if wants(r.schema_id, r.version)]
