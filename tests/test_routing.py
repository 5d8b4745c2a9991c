"""Routing: which sinks get a record, by schema id and version globs."""

from __future__ import annotations

import pytest

from telemetryd.config import ConfigError, parse_config
from telemetryd.core.record import Record
from telemetryd.delivery.routing import RouteFilter, VersionedRule

HUB = "https://schema.jupyter.org/jupyterhub/events/server-action"
CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
KERNEL = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


def record(schema_id: str, version: str) -> Record:
    return Record(schema_id, version, b"{}", 0.0)


def rule(schema: str, *versions: str) -> VersionedRule:
    return VersionedRule.model_validate({"schema": schema, "versions": list(versions)})


@pytest.mark.parametrize(
    ("include", "exclude", "wanted"),
    [
        ([], [], {(CONTENTS, "1"), (CONTENTS, "2"), (KERNEL, "1"), (HUB, "1")}),
        (["https://events.jupyter.org/*"], [], {(CONTENTS, "1"), (CONTENTS, "2"), (KERNEL, "1")}),
        ([rule(CONTENTS, "2")], [], {(CONTENTS, "2")}),
        ([rule("*jupyter_server*", "1")], [], {(CONTENTS, "1"), (KERNEL, "1")}),
        ([], [rule("*", "2")], {(CONTENTS, "1"), (KERNEL, "1"), (HUB, "1")}),
        ([], ["*kernel*", HUB], {(CONTENTS, "1"), (CONTENTS, "2")}),
        ([rule("*", "[12]")], [rule(CONTENTS, "1")], {(CONTENTS, "2"), (KERNEL, "1"), (HUB, "1")}),
    ],
)
def test_include_and_exclude_by_schema_and_version(
    include: list[str | VersionedRule],
    exclude: list[str | VersionedRule],
    wanted: set[tuple[str, str]],
) -> None:
    route = RouteFilter(include, exclude)
    records = [
        record(s, v) for s, v in [(CONTENTS, "1"), (CONTENTS, "2"), (KERNEL, "1"), (HUB, "1")]
    ]
    assert {(r.schema_id, r.version) for r in route.select(records)} == wanted
    for r in records:  # the cached answer is the same
        assert route.wants(r.schema_id, r.version) == ((r.schema_id, r.version) in wanted)


def test_a_schema_is_wanted_if_some_version_may_be() -> None:
    route = RouteFilter([], [rule(CONTENTS, "1")])
    assert route.wants(CONTENTS)  # version 2 still goes there
    assert not RouteFilter([], [CONTENTS]).wants(CONTENTS)


def test_rules_in_the_configuration_and_their_errors() -> None:
    base = '[[sinks]]\nname = "a"\ntype = "stdout"\n'
    config = parse_config(
        base
        + f'include = ["https://events.jupyter.org/*", {{schema = "{HUB}", versions = ["1"]}}]\n'
    )
    (sink,) = config.sinks
    assert sink.include[0] == "https://events.jupyter.org/*"
    assert sink.include[1] == rule(HUB, "1")
    with pytest.raises(ConfigError) as e:
        parse_config(base + 'exclude = [{schema = "*", version = "1"}]\n')
    assert "sinks[0].exclude" in str(e.value)
    assert "version" in str(e.value)
