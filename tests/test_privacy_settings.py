"""[privacy] and a sink's override: defaults, the merge, and every looser key refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from telemetryd.privacy.settings import (
    PolicyError,
    PrivacySettings,
    SinkPrivacySettings,
    sink_privacy,
)

BASE = PrivacySettings(
    allowed_categories=["unrestricted", "personal-data"],
    action="pseudonymize",
    actions={"user-identifier": "redact"},
    uncategorised="redact",
    origin_user="pseudonymize",
    allowed_properties=["/path", "/cells/*/source"],
)


def test_defaults() -> None:
    settings = PrivacySettings()
    assert settings.allowed_categories == ["unrestricted"]
    assert settings.action == "redact"
    assert settings.actions == {}
    assert settings.uncategorised == "keep"
    assert settings.origin_user == "keep"
    assert settings.pseudonym_key_file == Path("var/privacy/pseudonym.key")
    assert settings.allowed_properties == []


def test_unknown_keys_and_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        PrivacySettings.model_validate({"allowed": ["x"]})
    with pytest.raises(ValidationError):
        PrivacySettings.model_validate({"action": "keep"})
    with pytest.raises(ValidationError):
        SinkPrivacySettings.model_validate({"origin_user": "redact"})


def test_no_override_is_the_global_policy() -> None:
    assert sink_privacy(BASE, None, "sinks[0].privacy") is BASE
    assert sink_privacy(BASE, SinkPrivacySettings(), "sinks[0].privacy") == BASE


def test_a_stricter_override_tightens_every_category() -> None:
    override = SinkPrivacySettings(
        allowed_categories=["unrestricted"],
        action="drop",
        uncategorised="drop",
        origin_user="drop",
        allowed_properties=["/path"],
        pseudonym_key_file=Path("other.key"),
    )
    merged = sink_privacy(BASE, override, "sinks[1].privacy")
    assert merged == PrivacySettings(
        allowed_categories=["unrestricted"],
        action="drop",
        actions={"user-identifier": "drop"},  # the sink's action is stricter than [privacy]'s
        uncategorised="drop",
        origin_user="drop",
        pseudonym_key_file=Path("other.key"),
        allowed_properties=["/path"],
    )


def test_an_override_without_action_keeps_the_per_category_actions() -> None:
    base = PrivacySettings(actions={"user-identifier": "pseudonymize"})
    merged = sink_privacy(base, SinkPrivacySettings(uncategorised="redact"), "sinks[0].privacy")
    assert merged.actions == {"user-identifier": "pseudonymize"}
    assert merged == base.model_copy(update={"uncategorised": "redact"})


def test_a_per_category_override_keeps_the_stricter_level() -> None:
    override = SinkPrivacySettings(actions={"personal-data": "drop"})
    merged = sink_privacy(BASE, override, "sinks[0].privacy")
    assert merged.actions == {"personal-data": "drop", "user-identifier": "redact"}
    assert merged.action == "pseudonymize"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"allowed_categories": ["unrestricted", "user-identifier"]},
            "sinks[2].privacy.allowed_categories: 'user-identifier' is not allowed by [privacy]",
        ),
        (
            {"allowed_properties": ["/secret"]},
            "sinks[2].privacy.allowed_properties: '/secret' is not allowed by [privacy]",
        ),
        (
            {"uncategorised": "keep"},
            "sinks[2].privacy.uncategorised: 'keep' is looser than [privacy] uncategorised "
            "('redact'); a sink may only be stricter",
        ),
        (
            {"origin_user": "keep"},
            "sinks[2].privacy.origin_user: 'keep' is looser than [privacy] origin_user "
            "('pseudonymize'); a sink may only be stricter",
        ),
        (
            {"actions": {"user-identifier": "pseudonymize"}},
            "sinks[2].privacy.actions.user-identifier: 'pseudonymize' is looser than "
            "[privacy]'s action for 'user-identifier' ('redact'); a sink may only be stricter",
        ),
    ],
)
def test_each_looser_key_is_refused_by_name(override: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        sink_privacy(BASE, SinkPrivacySettings.model_validate(override), "sinks[2].privacy")
    assert str(caught.value) == message
    assert caught.value.key == message.split(":", 1)[0]


def test_a_looser_action_is_refused_by_name() -> None:
    base = PrivacySettings(action="drop")
    with pytest.raises(PolicyError, match=r"^sinks\[0\]\.privacy\.action: 'redact' is looser"):
        sink_privacy(base, SinkPrivacySettings(action="redact"), "sinks[0].privacy")
    # A category [privacy] leaves to `action` is held to it too.
    with pytest.raises(PolicyError, match=r"privacy\.actions\.personal-data: 'pseudonymize'"):
        sink_privacy(
            base, SinkPrivacySettings(actions={"personal-data": "pseudonymize"}), "sinks[0].privacy"
        )


def test_strictness_order_of_actions() -> None:
    # keep < pseudonymize < redact < drop: each level accepts itself and the stricter ones.
    levels = ["pseudonymize", "redact", "drop"]
    for i, floor in enumerate(levels):
        base = PrivacySettings(action=floor)
        for j, chosen in enumerate(levels):
            override = SinkPrivacySettings(action=chosen)
            if j >= i:
                assert sink_privacy(base, override, "s").action == chosen
            else:
                with pytest.raises(PolicyError):
                    sink_privacy(base, override, "s")
