"""Configuration errors name the file, the key and the problem; the shipped file is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetryd.cli import main
from telemetryd.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/telemetryd/telemetryd.toml")
    return str(info.value)


def test_the_repository_configuration_is_valid() -> None:
    config = load_config(REPO / "telemetryd.toml")
    assert config.server.unix_socket == Path("run/telemetryd.sock")
    assert config.server.unix_socket_mode == 0o660
    assert [s.name for s in config.sinks] == ["archive"]
    assert config.dead_letter.type == "file"


def test_an_empty_file_means_the_defaults() -> None:
    config = parse_config("")
    assert config.sinks == []
    assert config.server.max_line_bytes == 1024 * 1024
    assert config.dead_letter.name == "dead-letter"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nbogus = 1\n", "telemetryd.toml: server.bogus: unknown key"),
        ("[nonsense]\n", "nonsense: unknown key"),
        (
            "[server]\nmax_line_bytes = -1\n",
            "server.max_line_bytes: Input should be greater than 0",
        ),
        ("[server]\nunix_socket_mode = '999'\n", "server.unix_socket_mode"),
        ("[server\n", "not valid TOML"),
        ("[[sinks]]\nname = 'a'\n", "sinks[0].type: missing"),
        (
            "[[sinks]]\nname = 'a'\ntype = 'carrier-pigeon'\n",
            "sinks[0].type: unknown sink type 'carrier-pigeon'",
        ),
        ("[[sinks]]\nname = 'a'\ntype = 'file'\n", "sinks[0].path: Field required"),
        (
            "[[sinks]]\nname = 'a'\ntype = 'file'\npath = 'x'\nrotate_byts = 5\n",
            "sinks[0].rotate_byts: unknown key",
        ),
        (
            "[[sinks]]\nname = 'a'\ntype = 'file'\npath = 'x'\nwhen_full = 'panic'\n",
            "sinks[0].when_full",
        ),
        (
            "[[sinks]]\nname = 'a'\ntype = 'stdout'\n[[sinks]]\nname = 'a'\ntype = 'stdout'\n",
            "sinks[1].name: duplicate sink name 'a'",
        ),
        ("[dead_letter]\ntype = 'file'\n", "dead_letter.name"),
        (
            "[[sinks]]\nname = 'a'\ntype = 'file'\npath = 'x'\nbatches_in_flight = 2\n",
            "sinks[0].batches_in_flight: the file sink writes one batch at a time",
        ),
        (
            "[[sinks]]\nname = 'a'\ntype = 'http'\nurl = 'http://h/'\nbatches_in_flight = 0\n",
            "sinks[0].batches_in_flight: Input should be greater than or equal to 1",
        ),
    ],
)
def test_errors_name_the_file_and_the_key(text: str, expected: str) -> None:
    message = problems(text)
    assert message.startswith("/etc/telemetryd/telemetryd.toml: ")
    assert expected in message


def test_every_problem_is_reported_at_once() -> None:
    message = problems("[server]\nbogus = 1\nmax_connections = 0\n")
    assert "server.bogus" in message
    assert "server.max_connections" in message


def test_a_sink_table_s_problems_are_reported_with_the_rest_of_the_file() -> None:
    message = problems(
        "[server]\nunix_sockett = 'x'\n"
        "[[sinks]]\nname = 'a'\ntype = 'file'\npath = 'x'\nrotate_bytes = -1\n"
    )
    assert message.splitlines() == [
        "/etc/telemetryd/telemetryd.toml: server.unix_sockett: unknown key",
        "/etc/telemetryd/telemetryd.toml: sinks[0].rotate_bytes: "
        "Input should be greater than or equal to 0 (got -1)",
    ]


def test_pioneer_without_auth_is_refused_naming_the_keys() -> None:
    assert parse_config("").pioneer.enabled is False
    message = problems("[pioneer]\nenabled = true\n")
    assert "telemetryd.toml: pioneer.enabled: true while auth.required is false" in message
    assert "pioneer.allow_anonymous = true" in message
    config = parse_config("[pioneer]\nenabled = true\nallow_anonymous = true\n")
    assert config.pioneer.enabled


def test_octal_mode_as_string_or_toml_octal() -> None:
    assert parse_config("[server]\nunix_socket_mode = '0600'\n").server.unix_socket_mode == 0o600
    assert parse_config("[server]\nunix_socket_mode = 0o640\n").server.unix_socket_mode == 0o640


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "telemetryd.toml")]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nunix_sockett = 'x'\n")
    assert main(["check-config", str(bad)]) == 2
    assert f"{bad}: server.unix_sockett: unknown key" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_check_config_reports_bad_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "bad.yaml").write_text(
        "$id: https://example.org/e\nversion: 1\ntype: object\n"
        "properties:\n  __secret: {type: string}\n"
    )
    config = tmp_path / "t.toml"
    config.write_text(f"[schemas]\npaths = ['{schemas}']\n")
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err
    assert "/properties/__secret" in err
