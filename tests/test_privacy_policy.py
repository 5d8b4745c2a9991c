"""Sinks' policies: plans cached per schema version, equal policies shared, one redacted copy
of a record per distinct policy, and the key read once per file only when it is needed."""

from __future__ import annotations

from pathlib import Path

import msgspec

from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.privacy.policy import PolicySet, PrivacyPolicy
from telemetryd.privacy.pseudonym import Pseudonymizer, load_key
from telemetryd.privacy.rules import PrivacyRules
from telemetryd.privacy.settings import PrivacySettings, SinkPrivacySettings, sink_privacy
from tests.support.privacy_records import compiled, record

SCHEMA = compiled(
    {
        "$id": "https://example.org/policy",
        "version": "1",
        "type": "object",
        "properties": {
            "path": {"type": "string", "categories": ["personal-data"]},
            "user": {"type": "string", "categories": ["user-identifier"]},
            "action": {"type": "string", "categories": ["unrestricted"]},
        },
    }
)
PLAIN = compiled(
    {
        "$id": "https://example.org/plain",
        "version": "1",
        "type": "object",
        "properties": {"action": {"type": "string", "categories": ["unrestricted"]}},
    }
)
REGISTRY = SchemaRegistry.from_schemas([SCHEMA, PLAIN])
GLOBAL = PrivacySettings(
    allowed_categories=["unrestricted", "personal-data"],
    actions={"user-identifier": "pseudonymize"},
)


def _data(out: bytes) -> dict[str, object]:
    decoded = msgspec.json.decode(out)
    assert isinstance(decoded, dict)
    return {k: v for k, v in decoded.items() if not k.startswith("__") or k == "__redacted__"}


def _sinks() -> dict[str, PrivacySettings]:
    strict = SinkPrivacySettings(allowed_categories=["unrestricted"], action="drop")
    return {
        "archive": sink_privacy(GLOBAL, None, "sinks[0].privacy"),
        "lake": sink_privacy(GLOBAL, SinkPrivacySettings(), "sinks[1].privacy"),
        "research": sink_privacy(GLOBAL, strict, "sinks[2].privacy"),
    }


def test_equal_policies_share_one_policy_and_one_copy(tmp_path: Path) -> None:
    policies = PolicySet(_sinks(), REGISTRY.get, key_dir=tmp_path)
    assert policies.policy_of("archive") is policies.policy_of("lake")
    assert policies.key_of("archive") == policies.key_of("lake") != policies.key_of("research")

    key = load_key(tmp_path / "var/privacy/pseudonym.key")
    plain = record(PLAIN, {"action": "open"})
    full = record(SCHEMA, {"path": "/home/alice", "user": "alice", "action": "save"})
    views = policies.apply_all([plain, full])
    assert set(views) == {policies.key_of("archive"), policies.key_of("research")}

    shared = views[policies.key_of("lake")]
    assert shared[0] is plain  # nothing to hide: the very same record
    assert _data(shared[1].payload) == {
        "__redacted__": ["/user"],
        "path": "/home/alice",
        "user": Pseudonymizer(key)("alice"),
        "action": "save",
    }
    research = views[policies.key_of("research")]
    assert research[0] is plain
    assert _data(research[1].payload) == {"__redacted__": ["/path", "/user"], "action": "save"}


def test_a_batch_with_nothing_to_hide_is_the_same_sequence(tmp_path: Path) -> None:
    policies = PolicySet(_sinks(), REGISTRY.get, key_dir=tmp_path)
    batch = [record(PLAIN, {"action": "open"}), record(PLAIN, {"action": "close"})]
    assert policies.policy_of("research").apply(batch) is batch


def test_plans_are_compiled_once_per_schema_version() -> None:
    asked: list[tuple[str, str]] = []

    def lookup(schema_id: str, version: str) -> None:
        asked.append((schema_id, version))

    policy = PrivacyPolicy(
        PrivacyRules.of(PrivacySettings(uncategorised="drop")), lookup, pseudonym=None
    )
    batch = [record(PLAIN, {"x": i}) for i in range(3)]
    first = policy.apply(batch)
    policy.apply(batch)
    assert asked == [("https://example.org/plain", "1")]
    # A schema not registered has no categories: all its data is uncategorised.
    assert [_data(r.payload) for r in first] == [{"__redacted__": ["/x"]}] * 3


def test_the_key_is_read_only_for_a_policy_that_pseudonymizes(tmp_path: Path) -> None:
    PolicySet({"a": PrivacySettings()}, REGISTRY.get, key_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    PolicySet({"a": PrivacySettings(origin_user="pseudonymize")}, REGISTRY.get, key_dir=tmp_path)
    assert (tmp_path / "var/privacy/pseudonym.key").stat().st_size == 32
