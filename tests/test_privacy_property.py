"""For generated schemas with categories, data and policies: no value the policy hides appears
anywhere in the output bytes (a pseudonymized one only as its pseudonym), every value it
keeps (allowed properties included) is still there, and a schema version with nothing to do
passes its record by reference."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.core.schemas.model import json_pointer
from telemetryd.privacy.plan import compile_plan
from telemetryd.privacy.pseudonym import Pseudonymizer
from telemetryd.privacy.rules import PrivacyRules
from telemetryd.privacy.settings import PrivacySettings
from tests.support.privacy_records import compiled, record

KEY = bytes(range(32))
CATEGORIES = ["unrestricted", "personal-data", "user-identifier", "secret"]
ACTIONS = st.sampled_from(["redact", "drop", "pseudonymize"])

# A shape is ("leaf", categories) | ("object", categories, {name: shape})
# | ("array", categories, item shape, length): the schema and the data both follow from it.
_categories = st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True)
_names = st.text(alphabet="ab~/*", min_size=1, max_size=3).filter(lambda n: n != "*")
_shapes = st.recursive(
    st.tuples(st.just("leaf"), _categories),
    lambda inner: st.one_of(
        st.tuples(
            st.just("object"), _categories, st.dictionaries(_names, inner, min_size=1, max_size=3)
        ),
        st.tuples(st.just("array"), _categories, inner, st.integers(0, 3)),
    ),
    max_leaves=10,
)
_tops = st.dictionaries(_names, _shapes, min_size=1, max_size=4)
_policies = st.builds(
    PrivacySettings,
    allowed_categories=st.lists(st.sampled_from(CATEGORIES), unique=True),
    action=ACTIONS,
    actions=st.dictionaries(st.sampled_from(CATEGORIES), ACTIONS, max_size=2),
    uncategorised=st.sampled_from(["keep", "redact", "drop"]),
    origin_user=st.sampled_from(["keep", "pseudonymize", "drop"]),
)


def _schema(shape: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"categories": shape[1]} if shape[1] else {}
    if shape[0] == "object":
        spec |= {"type": "object", "properties": {k: _schema(v) for k, v in shape[2].items()}}
    elif shape[0] == "array":
        spec |= {"type": "array", "items": _schema(shape[2])}
    else:
        spec |= {"type": "string"}
    return spec


def _data(shape: Any, tokens: Iterator[str]) -> Any:
    # Tokens hold Z and Q, which no pseudonym (lowercase hex) nor key holds.
    if shape[0] == "object":
        return {k: _data(v, tokens) for k, v in shape[2].items()}
    if shape[0] == "array":
        return [_data(shape[2], tokens) for _ in range(shape[3])]
    return next(tokens)


def _pointers(shape: Any, pointer: str) -> Iterator[str]:
    yield pointer
    if shape[0] == "object":
        for name, child in shape[2].items():
            yield from _pointers(child, pointer + json_pointer([name]))
    elif shape[0] == "array":
        yield from _pointers(shape[2], pointer + "/*")


def _fate(
    shape: Any, value: Any, rules: PrivacyRules, pointer: str, *, covered: bool, acted: bool
) -> Iterator[tuple[str, str]]:
    """(token, "kept" | "hidden" | "pseudonymized") for every leaf value: the oracle."""
    own = shape[1]
    allowed = pointer in rules.allowed_properties
    action = rules.action_for(own) if own and not acted and not allowed else None
    if action is not None and shape[0] == "leaf":
        yield value, "pseudonymized" if action == "pseudonymize" else "hidden"
        return
    acted = acted or action is not None
    covered = covered or bool(own) or allowed
    if shape[0] == "leaf":
        swept = not covered and rules.uncategorised != "keep"
        yield value, "hidden" if acted or swept else "kept"
    elif shape[0] == "object":
        for name, child in shape[2].items():
            where = pointer + json_pointer([name])
            yield from _fate(child, value[name], rules, where, covered=covered, acted=acted)
    else:
        for item in value:
            yield from _fate(shape[2], item, rules, f"{pointer}/*", covered=covered, acted=acted)


@settings(max_examples=300, deadline=None)
@given(top=_tops, policy=_policies, draw=st.data())
def test_no_hidden_value_reaches_the_output(
    top: dict[str, Any], policy: PrivacySettings, draw: st.DataObject
) -> None:
    pointers = sorted(
        p for name, shape in top.items() for p in _pointers(shape, json_pointer([name]))
    )
    allowed = draw.draw(st.lists(st.sampled_from(pointers), unique=True, max_size=3))
    policy = policy.model_copy(update={"allowed_properties": allowed})
    schema = compiled(
        {
            "$id": "https://example.org/generated",
            "version": "1",
            "type": "object",
            "properties": {name: _schema(shape) for name, shape in top.items()},
        }
    )
    tokens = (f"Z{i}Q" for i in itertools.count())
    data = {name: _data(shape, tokens) for name, shape in top.items()}
    origin = {"transport": "unix", "user": "ZuserQ", "uid": 1000, "gid": 1000, "pid": 4242}
    source = record(schema, data, origin)
    rules = PrivacyRules.of(policy)
    pseudonym = Pseudonymizer(KEY)
    plan = compile_plan(schema.categories, rules, pseudonym)
    out = source if plan is None else plan.apply(source)

    if plan is None:
        assert out is source
    fates = [
        fate
        for name, shape in top.items()
        for fate in _fate(
            shape, data[name], rules, json_pointer([name]), covered=False, acted=False
        )
    ]
    fates.append(("ZuserQ", "kept" if policy.origin_user == "keep" else "hidden"))
    for token, fate in fates:
        assert (token.encode() in out.payload) == (fate == "kept"), (token, fate)
        if fate == "pseudonymized":
            assert pseudonym(token).encode() in out.payload, token
    decoded = msgspec.json.decode(out.payload)
    assert isinstance(decoded, dict)
    assert (out is source) == ("__redacted__" not in decoded)
