"""The effective policy one sink is held to, in a hashable form: sinks with equal rules share
their plans and their redacted records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from telemetryd.privacy.settings import (
    STRICTNESS,
    Action,
    OriginUserAction,
    PrivacySettings,
    UncategorisedAction,
)


@dataclass(frozen=True, slots=True)
class PrivacyRules:
    allowed_categories: frozenset[str]
    action: Action
    actions: tuple[tuple[str, Action], ...]  # sorted (category, action) pairs
    uncategorised: UncategorisedAction
    origin_user: OriginUserAction
    pseudonym_key_file: Path
    allowed_properties: frozenset[str]

    @classmethod
    def of(cls, settings: PrivacySettings) -> PrivacyRules:
        return cls(
            allowed_categories=frozenset(settings.allowed_categories),
            action=settings.action,
            actions=tuple(sorted(settings.actions.items())),
            uncategorised=settings.uncategorised,
            origin_user=settings.origin_user,
            pseudonym_key_file=settings.pseudonym_key_file,
            allowed_properties=frozenset(settings.allowed_properties),
        )

    def action_for(self, categories: Iterable[str]) -> Action | None:
        """None when every category is allowed, else the strictest action of those that are not
        (a value is as private as its most private category)."""
        actions = dict(self.actions)
        chosen = [
            actions.get(c, self.action) for c in categories if c not in self.allowed_categories
        ]
        if not chosen:
            return None
        return max(chosen, key=STRICTNESS.__getitem__)

    @property
    def pseudonymizes(self) -> bool:
        """Whether any value may be pseudonymized, so that the key is needed."""
        return "pseudonymize" in (self.action, self.origin_user, *dict(self.actions).values())
