"""The configuration reference and the default configuration file are generated from the
settings models: they must say what the code does, every key included."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from telemetryd.config import load_config
from telemetryd.config_reference import (
    SECTIONS,
    render_default_config,
    render_markdown,
    shipped_sinks,
)
from telemetryd.sink import SinkSettings

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "regenerate with `telemetryd config-reference{} > {}`"


def test_the_reference_page_is_what_the_models_say() -> None:
    page = ROOT / "docs" / "configuration-reference.md"
    assert page.read_text() == render_markdown(), REGENERATE.format("", page.name)


def test_the_default_configuration_file_is_what_the_models_say() -> None:
    assert (ROOT / "telemetryd.toml").read_text() == render_default_config(), REGENERATE.format(
        " --toml", "telemetryd.toml"
    )


def test_the_default_configuration_file_names_every_key_and_loads() -> None:
    text = (ROOT / "telemetryd.toml").read_text()
    written = {line.lstrip("# ").split(" = ")[0] for line in text.splitlines() if " = " in line}
    for section, model in SECTIONS:
        for key in model.model_fields:
            if key not in ("tokens", "jupyterhub"):
                assert key in written, f"[{section}] {key} is missing from telemetryd.toml"
    tomllib.loads(text)
    config = load_config(ROOT / "telemetryd.toml")
    assert [sink.name for sink in config.sinks] == ["archive"]


@pytest.mark.parametrize(
    "model",
    [model for _, model in SECTIONS]
    + [SinkSettings]
    + [cls.settings_model for _, cls in shipped_sinks()],
    ids=lambda model: model.__name__,
)
def test_every_key_says_what_it_does(model: type[SinkSettings]) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"


def test_the_reference_covers_every_shipped_sink() -> None:
    names = [name for name, _ in shipped_sinks()]
    assert {"file", "http", "nats", "redis", "postgres", "stdout", "blackhole"} <= set(names)
    page = render_markdown()
    for name in names:
        assert f'### `type = "{name}"`' in page
