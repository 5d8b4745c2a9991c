"""The privacy policy of sinks: a `SinkPolicy` per distinct effective policy, and the set of
them that a bus applies once per publish.

Sinks whose policies are equal share one `PrivacyPolicy`, so one plan per schema version and
one redacted copy of a record, however many sinks receive it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from telemetryd.core.record import Record
from telemetryd.core.schemas.model import CompiledSchema
from telemetryd.privacy.plan import Plan, compile_plan
from telemetryd.privacy.pseudonym import Pseudonymizer, load_key
from telemetryd.privacy.rules import PrivacyRules
from telemetryd.privacy.settings import PrivacySettings

#: (schema id, version) → the compiled schema, or None for one not registered.
SchemaLookup = Callable[[str, str], CompiledSchema | None]

_NO_CATEGORIES: Mapping[str, tuple[str, ...]] = {}


class PrivacyPolicy:
    """One effective policy applied to records (a `SinkPolicy`), with its plan per schema
    version compiled on first use. A record of a schema not registered is taken as having no
    categories: all its data is uncategorised."""

    __slots__ = ("_plans", "_pseudonym", "_schemas", "rules")

    def __init__(
        self, rules: PrivacyRules, schemas: SchemaLookup, pseudonym: Pseudonymizer | None
    ) -> None:
        self.rules = rules
        self._schemas = schemas
        self._pseudonym = pseudonym
        self._plans: dict[str, dict[str, Plan | None]] = {}

    def plan_for(self, schema_id: str, version: str) -> Plan | None:
        versions = self._plans.setdefault(schema_id, {})
        try:
            return versions[version]
        except KeyError:
            schema = self._schemas(schema_id, version)
            categories = _NO_CATEGORIES if schema is None else schema.categories
            plan = versions[version] = compile_plan(categories, self.rules, self._pseudonym)
            return plan

    def apply(self, records: Sequence[Record]) -> Sequence[Record]:
        """`records` as this policy lets them out, in order and one for one: `records` itself
        when none changes, and each unchanged record as the very same object."""
        out: list[Record] = []
        changed = False
        plans = self._plans
        for record in records:
            versions = plans.get(record.schema_id)
            if versions is not None and record.version in versions:
                plan = versions[record.version]
            else:
                plan = self.plan_for(record.schema_id, record.version)
            kept = record if plan is None else plan.apply(record)
            changed = changed or kept is not record
            out.append(kept)
        return out if changed else records


class PolicySet:
    """The policies of several sinks, one `PrivacyPolicy` per distinct effective policy.

    `sinks` maps each sink's name to its effective settings (`sink_privacy`). Pseudonym keys
    are read (or created) when the set is built, once per key file, and only for a policy that
    pseudonymizes; `key_dir` resolves a relative key file.
    """

    def __init__(
        self,
        sinks: Mapping[str, PrivacySettings],
        schemas: SchemaLookup,
        *,
        key_dir: Path = Path(),
    ) -> None:
        keys: dict[Path, Pseudonymizer] = {}
        self._by_sink: dict[str, PrivacyRules] = {}
        self._policies: dict[PrivacyRules, PrivacyPolicy] = {}
        for name, settings in sinks.items():
            rules = PrivacyRules.of(settings)
            self._by_sink[name] = rules
            if rules in self._policies:
                continue
            pseudonym = None
            if rules.pseudonymizes:
                path = key_dir / rules.pseudonym_key_file
                if path not in keys:
                    keys[path] = Pseudonymizer(load_key(path))
                pseudonym = keys[path]
            self._policies[rules] = PrivacyPolicy(rules, schemas, pseudonym)

    def key_of(self, sink: str) -> PrivacyRules:
        """The key of the sink's policy in `apply_all`'s result; equal for equal policies."""
        return self._by_sink[sink]

    def policy_of(self, sink: str) -> PrivacyPolicy:
        """The sink's policy, the same object for every sink with an equal one."""
        return self._policies[self._by_sink[sink]]

    def apply_all(self, records: Sequence[Record]) -> dict[PrivacyRules, Sequence[Record]]:
        """Each distinct policy's view of `records`, computed once whatever the number of
        sinks sharing it. Each view is aligned with `records` (item i is records[i] as that
        policy lets it out), so each sink's selection can be taken from its policy's view."""
        return {rules: policy.apply(records) for rules, policy in self._policies.items()}
