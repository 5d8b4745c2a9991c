"""`telemetryd schemas list|validate|show`, driven through a parser like the main CLI's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from telemetryd import schema_commands

FIXTURES = Path(__file__).parent / "fixtures" / "schemas"
GOOD = FIXTURES / "good"
BAD = FIXTURES / "bad"
MULTI = "https://example.org/events/multi"
CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="telemetryd")
    schema_commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder: no implicit ./telemetryd.toml unless a test writes one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEMETRYD_CONFIG", raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(
        f'[schemas]\npaths = ["{GOOD}"]\nallowed = ["https://example.org/*"]\n', encoding="utf-8"
    )
    return path


def test_list_without_a_config_file_shows_the_builtin_schemas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("schemas", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "VERSION", "TITLE", "ALLOWED", "SOURCE"]
    row = next(line for line in lines if line.startswith(CONTENTS))
    assert " 1 " in row
    assert "Contents Manager activities" in row
    assert " yes " in row
    assert row.endswith("contents_service/v1.yaml")
    # Aligned: every row's second column starts where the header's does.
    column = lines[0].index("VERSION")
    assert all(line[column - 2 : column] == "  " for line in lines)
    assert not any(MULTI in line for line in lines)


def test_list_json_with_config(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "-c", str(config), "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    by_key = {(r["id"], r["version"]): r for r in rows}
    assert [v for i, v in by_key if i == MULTI] == ["1", "2", "10"]
    assert by_key[(MULTI, "2")] == {
        "id": MULTI,
        "version": "2",
        "title": "Multi, second version",
        "allowed": True,
        "personal_data": None,
        "source": str(GOOD / "multi" / "v2.json"),
    }
    assert by_key[(CONTENTS, "1")]["allowed"] is False


def test_config_option_after_the_command(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "list", "--config", str(config)) == 0
    assert MULTI in capsys.readouterr().out


def test_default_config_file_is_used_when_present(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.rename("telemetryd.toml")
    assert run("schemas", "list") == 0
    assert MULTI in capsys.readouterr().out


def test_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[schemas]\npathz = []\n", encoding="utf-8")
    assert run("schemas", "-c", str(bad), "list") == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "pathz" in err


def test_missing_named_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "-c", "nowhere.toml", "list") == 2
    assert "nowhere.toml" in capsys.readouterr().err


def test_schema_problems_in_config_paths_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "custom.toml"
    path.write_text(f'[schemas]\npaths = ["{BAD / "id_missing.yaml"}"]\n', encoding="utf-8")
    assert run("schemas", "-c", str(path), "list") == 2
    assert f"{BAD / 'id_missing.yaml'}: /$id: missing" in capsys.readouterr().err


def test_validate_good_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "validate", str(GOOD)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"OK {GOOD / 'multi' / 'v1.yaml'} {MULTI} v1",
        f"OK {GOOD / 'multi' / 'v10.yml'} {MULTI} v10",
        f"OK {GOOD / 'multi' / 'v2.json'} {MULTI} v2",
        f"OK {GOOD / 'private.yaml'} urn:example:events:private v1",
    ]


def test_validate_reports_every_problem_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "validate", str(GOOD / "private.yaml"), str(BAD)) == 1
    out, err = capsys.readouterr()
    assert out == f"OK {GOOD / 'private.yaml'} urn:example:events:private v1\n"
    lines = err.splitlines()
    assert f"{BAD / 'reserved_property.yaml'}: /properties/__secret: property names" in err
    assert f"{BAD / 'not_object.yaml'}: /: a schema must be a JSON object" in err
    assert {line.split(":")[0] for line in lines} == {str(p) for p in BAD.iterdir()}


def test_validate_does_not_read_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("telemetryd.toml").write_text("not toml at all [", encoding="utf-8")
    assert run("schemas", "validate", str(GOOD / "private.yaml")) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_validate_missing_path_and_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("schemas", "validate", "missing.yaml") == 1
    assert "missing.yaml: /: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run("schemas", "validate", "empty") == 1
    assert "no schema files" in capsys.readouterr().err


def test_show_highest_version(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "-c", str(config), "show", MULTI) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{MULTI} version 10\n")
    assert "versions:       1, 2, 10" in out
    assert "Multi, tenth version" in out


def test_show_properties(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "-c", str(config), "show", "urn:example:events:private", "1") == 0
    out = capsys.readouterr().out
    assert "personal data:  yes" in out
    assert "allowed:        no" in out
    assert "Categories and personal-data are telemetryd keywords" in out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line}
    assert rows["PROPERTY"].split() == ["PROPERTY", "TYPE", "REQUIRED", "CATEGORIES", "DESCRIPTION"]
    assert rows["user"].split() == ["user", "string", "yes", "user-identifier", "User", "name"]
    assert rows["count"].split()[:4] == ["count", "integer", "no", "unrestricted"]


def test_show_builtin_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "show", CONTENTS) == 0
    out = capsys.readouterr().out
    assert "title:          Contents Manager activities" in out
    assert "source_path" in out


def test_show_json_prints_the_document(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "-c", str(config), "show", MULTI, "1", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["$id"] == MULTI
    assert doc["version"] == "1"
    assert doc["required"] == ["a"]


def test_show_unknown_version_names_known_ones(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("schemas", "-c", str(config), "show", MULTI, "3") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{MULTI} has no version '3'; known versions: 1, 2, 10" in err


def test_show_unknown_id_suggests_and_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "show", CONTENTS.replace("contents", "content")) == 1
    err = capsys.readouterr().err
    assert f"did you mean {CONTENTS}?" in err
    assert f"  {CONTENTS} (versions 1)" in err


def test_schemas_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas") == 2
    assert "usage: telemetryd schemas" in capsys.readouterr().err


def _category_rows(out: str) -> dict[str, str]:
    """The POINTER → CATEGORIES table at the end of `schemas show`."""
    table = out.split("\nPOINTER ", 1)[1].splitlines()[1:]
    return {line.split(None, 1)[0]: line.split(None, 1)[1] for line in table}


def test_show_lists_categories_at_every_depth(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("schemas", "-c", str(config), "show", "urn:example:events:private", "1") == 0
    assert _category_rows(capsys.readouterr().out) == {
        "/user": "user-identifier",
        "/detail/email": "user-identifiable-information, personal-data",
        "/detail/team": "my-operator-category",
        "/count": "unrestricted",
    }


def test_show_marks_the_categories_an_overlay_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "private.yaml"
    overlay.write_text(
        '"$id": urn:example:events:private\nversion: "1"\n'
        "categories:\n  /user: [user-identifier, personal-data]\n  /mode: [unrestricted]\n",
        encoding="utf-8",
    )
    config = tmp_path / "custom.toml"
    config.write_text(
        f'[schemas]\npaths = ["{GOOD}"]\noverlays = ["{overlay}"]\n', encoding="utf-8"
    )
    assert run("schemas", "-c", str(config), "show", "urn:example:events:private") == 0
    out = capsys.readouterr().out
    rows = _category_rows(out)
    assert rows["/user"] == "user-identifier, personal-data (overlay)"
    assert rows["/mode"] == "unrestricted (overlay)"
    assert rows["/detail/email"] == "user-identifiable-information, personal-data"
    mode = next(line for line in out.splitlines() if line.startswith("mode "))
    assert mode.split()[:4] == ["mode", "string", "no", "unrestricted"]


def test_show_builtin_schema_with_its_shipped_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("schemas", "show", CONTENTS) == 0
    rows = _category_rows(capsys.readouterr().out)
    assert rows == {
        "/action": "unrestricted (overlay)",
        "/path": "personal-data (overlay)",
        "/source_path": "personal-data (overlay)",
    }


def test_an_overlay_problem_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overlay = tmp_path / "o.yaml"
    overlay.write_text(
        '"$id": urn:example:events:private\nversion: "1"\ncategories:\n  /nope: [unrestricted]\n',
        encoding="utf-8",
    )
    config = tmp_path / "custom.toml"
    config.write_text(
        f'[schemas]\npaths = ["{GOOD}"]\noverlays = ["{overlay}"]\n', encoding="utf-8"
    )
    assert run("schemas", "-c", str(config), "list") == 2
    err = capsys.readouterr().err
    assert f"{overlay}: /categories/~1nope: '/nope': the schema has no property 'nope'" in err
