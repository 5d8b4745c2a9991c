"""What a policy does to the records of one schema version, compiled once and applied per record.

A plan is a tree of the data pointers that matter (`*` for every array item, an index for a
position of a tuple-style array), each with its action. Applying it decodes the record's members
as raw JSON, decodes and rewrites only the members the plan touches, and re-encodes the record
with `__redacted__` after `__origin__`: the untouched members keep their bytes.

- A value with categories of its own is judged by them; one without is covered by the nearest
  property holding it that has some. An acting value (redact, drop, pseudonymize) is handled as
  a whole: what is inside it goes with it.
- An `allowed_properties` pointer is kept whatever its own categories; values inside it with
  categories of their own are still judged by theirs.
- A value is uncategorised when no category covers it: neither it nor a property holding it
  has categories, nor is it an allowed property. `uncategorised` acts on the outermost such
  values that hold no categorised property; an object or array holding one is kept, and its
  members are judged one by one.
- redact: the value becomes null. drop: the key is removed; an array item becomes null instead,
  so that the positions of the others keep their meaning. pseudonymize: the value becomes its
  pseudonym. A null stays null under redact and pseudonymize: there is nothing to hide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from telemetryd.core.record import Record
from telemetryd.core.schemas.categories import ITEMS
from telemetryd.privacy.rules import PrivacyRules

ORIGIN: Final = "__origin__"
REDACTED: Final = "__redacted__"
#: The members of `__origin__` that name the person or process who sent a record.
ORIGIN_USER_FIELDS: Final = ("user", "uid", "pid")

_NULL: Final = msgspec.Raw(b"null")
_DROPPED: Final[Any] = object()
_decode_members = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

Pseudonym = Callable[[Any], str]


@dataclass(slots=True, eq=False)
class _Node:
    """A data pointer the plan knows: its action (None: kept as it is), whether a category
    covers it, and the pointers below it, by segment."""

    action: str | None = None
    covered: bool = False
    children: dict[str, _Node] = field(default_factory=dict)

    def descend(self, pointer: str) -> _Node:
        node = self
        for raw in pointer.split("/")[1:]:
            segment = raw.replace("~1", "/").replace("~0", "~")
            node = node.children.setdefault(segment, _Node())
        return node


def compile_plan(
    categories: Mapping[str, tuple[str, ...]],
    rules: PrivacyRules,
    pseudonym: Pseudonym | None,
) -> Plan | None:
    """The plan of `rules` for a schema version with these categories (data pointer → names),
    or None when it has nothing to do: its records then pass as they are, untouched."""
    root = _Node()
    for pointer, names in categories.items():
        node = root.descend(pointer)
        node.covered = True
        if pointer not in rules.allowed_properties:
            node.action = rules.action_for(names)
    for pointer in rules.allowed_properties:
        if pointer.startswith("/"):
            node = root.descend(pointer)
            node.covered, node.action = True, None
    _cover(root, covered=False)
    sweeps_uncategorised = rules.uncategorised != "keep"
    busy = _prune(root, sweeps_uncategorised)
    if not busy and not sweeps_uncategorised and rules.origin_user == "keep":
        return None
    if pseudonym is None and rules.pseudonymizes:
        raise ValueError("the rules pseudonymize values, but no pseudonym key was given")
    return Plan(root, rules, pseudonym)


def _cover(node: _Node, *, covered: bool) -> None:
    """A pointer under a covered one is covered too, categories of its own or not."""
    node.covered = node.covered or covered
    for child in node.children.values():
        _cover(child, covered=node.covered)


def _prune(node: _Node, sweeps_uncategorised: bool) -> bool:
    """Remove what has nothing to do below `node`; whether anything is left to do there.

    Under an uncovered node swept for uncategorised values, a kept child stays, as a leaf: a
    missing one would be taken for an uncategorised value. Such a node is always busy.
    """
    busy = node.action is not None
    keeps_leaves = sweeps_uncategorised and not node.covered
    for segment, child in list(node.children.items()):
        if _prune(child, sweeps_uncategorised):
            busy = True
        elif keeps_leaves:
            child.children.clear()  # covered and kept whole
        else:
            del node.children[segment]
    return busy or (keeps_leaves and bool(node.children))


class Plan:
    """The compiled actions of one policy on one schema version's records."""

    __slots__ = ("_origin_user", "_pseudonym", "_root", "_uncategorised")

    def __init__(self, root: _Node, rules: PrivacyRules, pseudonym: Pseudonym | None) -> None:
        self._root = root
        self._uncategorised = rules.uncategorised
        self._origin_user = rules.origin_user
        self._pseudonym = pseudonym

    def apply(self, record: Record) -> Record:
        """`record` as the policy lets it out: the very same object when nothing changes."""
        changed: list[str] = []
        members: dict[str, Any] = {}
        for key, raw in _decode_members(record.payload).items():
            if key.startswith("__"):  # metadata: data keys cannot start with __
                members[key] = self._origin(raw, changed) if key == ORIGIN else raw
                continue
            child = self._root.children.get(key)
            untouched = (
                self._uncategorised == "keep"
                if child is None
                else child.action is None and not child.children
            )
            if untouched:
                members[key] = raw
                continue
            pointer = _segment(key)
            if child is None:
                result = self._act_raw(self._uncategorised, raw, pointer, changed)
            elif child.action is not None and child.action != "pseudonymize":
                result = self._act_raw(child.action, raw, pointer, changed)
            else:
                before = len(changed)
                value = self._walk(_decode(raw), child, pointer, changed, in_array=False)
                unchanged = len(changed) == before
                result = raw if unchanged else value
                if not unchanged and value is not _DROPPED:
                    result = msgspec.Raw(_encode(value))
            if result is not _DROPPED:
                members[key] = result
        if not changed:
            return record
        return Record(
            record.schema_id,
            record.version,
            _encode(_with_redacted(members, changed)),
            record.received,
        )

    def _origin(self, raw: msgspec.Raw, changed: list[str]) -> msgspec.Raw:
        if self._origin_user == "keep":
            return raw
        origin = _decode(raw)
        if not isinstance(origin, dict):
            return raw
        for name in ORIGIN_USER_FIELDS:
            value = origin.get(name)
            if value is None:
                continue
            changed.append(f"/{ORIGIN}/{name}")
            if self._origin_user == "drop":
                del origin[name]
            else:
                origin[name] = self._pseudonym_of(value)
        return msgspec.Raw(_encode(origin))

    def _act_raw(self, action: str, raw: msgspec.Raw, pointer: str, changed: list[str]) -> Any:
        """redact or drop a top-level member without decoding it."""
        if action == "drop":
            changed.append(pointer)
            return _DROPPED
        if raw == _NULL:
            return raw
        changed.append(pointer)
        return _NULL

    def _walk(
        self, value: Any, node: _Node, pointer: str, changed: list[str], *, in_array: bool
    ) -> Any:
        if node.action is not None:
            return self._act(node.action, value, pointer, changed, in_array=in_array)
        sweep: str | None = (
            None if node.covered or self._uncategorised == "keep" else self._uncategorised
        )
        children = node.children
        if isinstance(value, dict):
            for key in list(value):
                child = children.get(key)
                if child is not None:
                    where = pointer + _segment(key)
                    result = self._walk(value[key], child, where, changed, in_array=False)
                elif sweep is not None:
                    where = pointer + _segment(key)
                    result = self._act(sweep, value[key], where, changed, in_array=False)
                else:
                    continue
                if result is _DROPPED:
                    del value[key]
                else:
                    value[key] = result
        elif isinstance(value, list):
            for i, item in enumerate(value):
                child = children.get(str(i)) or children.get(ITEMS)
                if child is not None:
                    value[i] = self._walk(item, child, f"{pointer}/{i}", changed, in_array=True)
                elif sweep is not None:
                    value[i] = self._act(sweep, item, f"{pointer}/{i}", changed, in_array=True)
        elif sweep is not None and children:
            # A scalar where the schema also allows a container: nothing categorised is in it.
            return self._act(sweep, value, pointer, changed, in_array=in_array)
        return value

    def _act(
        self, action: str, value: Any, pointer: str, changed: list[str], *, in_array: bool
    ) -> Any:
        if action == "drop" and not in_array:
            changed.append(pointer)
            return _DROPPED
        if value is None:
            return None
        changed.append(pointer)
        return self._pseudonym_of(value) if action == "pseudonymize" else None

    def _pseudonym_of(self, value: Any) -> str:
        assert self._pseudonym is not None  # compile_plan refuses pseudonymizing rules without
        return self._pseudonym(value)


def _segment(key: str) -> str:
    """`key` as one JSON pointer segment, leading / included, escaped as RFC 6901 says."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _with_redacted(members: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    """`members` with `__redacted__` (the sorted pointers changed) right after `__origin__`
    (last in a record without one, which the daemon never makes)."""
    out: dict[str, Any] = {}
    for key, value in members.items():
        out[key] = value
        if key == ORIGIN:
            out[REDACTED] = sorted(changed)
    out.setdefault(REDACTED, sorted(changed))
    return out
