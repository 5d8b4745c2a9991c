"""pyproject.toml lists every package: setuptools cannot find them through the package-dir map."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _packages_in(root: Path, name: str) -> set[str]:
    """The regular packages (folders with an __init__.py) under root, root itself as `name`."""
    return {
        ".".join((name, *init.parent.relative_to(root).parts))
        for init in root.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_every_package_is_listed() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = _packages_in(REPO / "telemetryd", "telemetryd") | _packages_in(
        REPO / "sinks" / "telemetryd_sinks", "telemetryd_sinks"
    )
    assert on_disk - listed == set()
    assert "telemetryd.schemas" in listed
    assert setuptools["package-dir"] == {
        "telemetryd.schemas": "schemas",
        "telemetryd_sinks": "sinks/telemetryd_sinks",
    }


def test_no_symlinks_in_the_packages() -> None:
    for top in ("telemetryd", "sinks", "schemas"):
        assert [p for p in (REPO / top).rglob("*") if p.is_symlink()] == []


def test_the_core_never_imports_a_sink() -> None:
    # The core drives sinks through telemetryd.sink and finds them by entry point only.
    importers = [
        path.relative_to(REPO)
        for path in (REPO / "telemetryd").rglob("*.py")
        if "telemetryd_sinks" in path.read_text()
    ]
    assert importers == []
