"""`[privacy]` and a sink's `privacy` override: the settings, and the merge that keeps a sink's
policy at least as strict as the global one.

Strictness orders, least strict first: an action keep < pseudonymize < redact < drop (a
pseudonym can still be joined on, null cannot, and a removed key does not even say the value
was there); the allowed categories and allowed properties by inclusion (fewer is stricter).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

#: What happens to a value of a category that is not allowed.
Action = Literal["redact", "drop", "pseudonymize"]
#: What happens to a value with no category.
UncategorisedAction = Literal["keep", "redact", "drop"]
#: What happens to `__origin__`'s user, uid and pid.
OriginUserAction = Literal["keep", "pseudonymize", "drop"]

STRICTNESS: Final[Mapping[str, int]] = {"keep": 0, "pseudonymize": 1, "redact": 2, "drop": 3}


class PolicyError(ValueError):
    """A sink's privacy override is looser than `[privacy]`; `key` names the setting."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key


class PrivacySettings(BaseModel):
    """`[privacy]`: what the sinks may see of the records' data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_categories: list[str] = Field(
        ["unrestricted"],
        description="Categories kept as they are; a value of any other category gets its action.",
    )
    action: Action = Field(
        "redact",
        description='For a category not allowed: "redact" (value becomes null), "drop" (key '
        'removed) or "pseudonymize" (value replaced by its keyed hash).',
    )
    actions: dict[str, Action] = Field(
        {}, description="Per category, an action used instead of `action`."
    )
    uncategorised: UncategorisedAction = Field(
        "keep", description='For a value no category covers: "keep", "redact" or "drop".'
    )
    origin_user: OriginUserAction = Field(
        "keep",
        description='For `__origin__`\'s user, uid and pid: "keep", "pseudonymize" or "drop".',
    )
    pseudonym_key_file: Path = Field(
        Path("var/privacy/pseudonym.key"),
        description="The key of the pseudonyms; created (mode 0600, 32 random bytes) if absent.",
    )
    allowed_properties: list[str] = Field(
        [],
        description="JSON pointers into the data (* for every array item) kept whatever "
        "their categories.",
    )

    def action_for(self, category: str) -> Action:
        return self.actions.get(category, self.action)


class SinkPrivacySettings(BaseModel):
    """A sink's `privacy`: the keys of `[privacy]`, each stricter or equal, never looser."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_categories: list[str] | None = Field(
        None, description="A subset of `[privacy] allowed_categories`."
    )
    action: Action | None = Field(None, description="At least as strict as `[privacy] action`.")
    actions: dict[str, Action] | None = Field(
        None, description="Per category, at least as strict as `[privacy]`'s for it."
    )
    uncategorised: UncategorisedAction | None = Field(
        None, description="At least as strict as `[privacy] uncategorised`."
    )
    origin_user: OriginUserAction | None = Field(
        None, description="At least as strict as `[privacy] origin_user`."
    )
    pseudonym_key_file: Path | None = Field(
        None, description="A key of the sink's own: its pseudonyms join with no other sink's."
    )
    allowed_properties: list[str] | None = Field(
        None, description="A subset of `[privacy] allowed_properties`."
    )


_Level = TypeVar("_Level", bound=str)


def _stricter(chosen: _Level, base: _Level) -> _Level:
    return chosen if STRICTNESS[chosen] >= STRICTNESS[base] else base


def sink_privacy(
    base: PrivacySettings, override: SinkPrivacySettings | None, key: str
) -> PrivacySettings:
    """The policy a sink is held to: `override` over `base`, where `key` names the override
    (`sinks[2].privacy`). Raises PolicyError on the first setting looser than `base`'s.

    Every category's action is the stricter of the two levels': a sink's own `action = "drop"`
    also tightens a category that `[privacy] actions` names; without one, `[privacy]`'s hold.
    """
    if override is None:
        return base
    _refuse_looser(base, override, key)
    sink_actions = override.actions or {}
    actions: dict[str, Action] = {}
    for category in sorted(set(base.actions) | set(sink_actions)):
        chosen = sink_actions.get(category, override.action or base.action_for(category))
        actions[category] = _stricter(chosen, base.action_for(category))
    return PrivacySettings(
        allowed_categories=(
            base.allowed_categories
            if override.allowed_categories is None
            else override.allowed_categories
        ),
        action=override.action or base.action,
        actions=actions,
        uncategorised=override.uncategorised or base.uncategorised,
        origin_user=override.origin_user or base.origin_user,
        pseudonym_key_file=override.pseudonym_key_file or base.pseudonym_key_file,
        allowed_properties=(
            base.allowed_properties
            if override.allowed_properties is None
            else override.allowed_properties
        ),
    )


def _refuse_looser(base: PrivacySettings, override: SinkPrivacySettings, key: str) -> None:
    for name, values, allowed in (
        ("allowed_categories", override.allowed_categories, base.allowed_categories),
        ("allowed_properties", override.allowed_properties, base.allowed_properties),
    ):
        for value in values or ():
            if value not in allowed:
                raise PolicyError(f"{key}.{name}", f"{value!r} is not allowed by [privacy]")
    for name, chosen, floor in (
        ("action", override.action, base.action),
        ("uncategorised", override.uncategorised, base.uncategorised),
        ("origin_user", override.origin_user, base.origin_user),
    ):
        if chosen is not None and STRICTNESS[chosen] < STRICTNESS[floor]:
            raise PolicyError(f"{key}.{name}", _looser(chosen, f"[privacy] {name}", floor))
    for category, chosen in (override.actions or {}).items():
        floor = base.action_for(category)
        if STRICTNESS[chosen] < STRICTNESS[floor]:
            where = f"[privacy]'s action for {category!r}"
            raise PolicyError(f"{key}.actions.{category}", _looser(chosen, where, floor))


def _looser(chosen: str, where: str, floor: str) -> str:
    return f"{chosen!r} is looser than {where} ({floor!r}); a sink may only be stricter"
