"""The jupyter_events and jupyter_server versions telemetryd.jupyter's fast path supports are
one fact: its guard (`SUPPORTED_JUPYTER_EVENTS`, `SUPPORTED_JUPYTER_SERVER`), the bounds of
pyproject.toml's extras (so a new release reaches the tests only by a deliberate bump) and the
oldest versions `make test-jupyter-oldest` pins (tests/constraints-oldest.txt).

The installed versions are inside the range, so the Jupyter tests exercise the fast path (they
assert it is on: `attach` in tests/test_jupyter_extension.py, and the live servers' log line),
not the fallback; the pytest header names the versions (tests/conftest.py).
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from telemetryd.jupyter import SUPPORTED_JUPYTER_EVENTS, SUPPORTED_JUPYTER_SERVER

REPO = Path(__file__).resolve().parent.parent
Bounds = tuple[tuple[int, int], tuple[int, int]]
SUPPORTED: dict[str, Bounds] = {
    "jupyter_events": SUPPORTED_JUPYTER_EVENTS,
    "jupyter_server": SUPPORTED_JUPYTER_SERVER,
}


def _specifier(bounds: Bounds) -> SpecifierSet:
    (lo_major, lo_minor), (hi_major, hi_minor) = bounds
    return SpecifierSet(f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}")


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("-", "_")


def test_pyprojects_extras_bound_jupyter_as_the_guard_does() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    found: dict[tuple[str, str], SpecifierSet] = {}
    for extra, requirements in extras.items():
        for requirement in map(Requirement, requirements):
            if _name(requirement) in SUPPORTED:
                found[(extra, _name(requirement))] = requirement.specifier
    assert {key for key in found if key[0] == "test"} == {
        ("test", "jupyter_events"),
        ("test", "jupyter_server"),
    }
    for (_, name), specifier in found.items():
        assert specifier == _specifier(SUPPORTED[name]), (name, str(specifier))


def test_the_oldest_constraints_pin_the_lower_bounds() -> None:
    pins: dict[str, Version] = {}
    for line in (REPO / "tests" / "constraints-oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (pin,) = requirement.specifier
            assert pin.operator == "==", line
            pins[_name(requirement)] = Version(pin.version)
    assert pins == {name: Version("{}.{}".format(*low)) for name, (low, _) in SUPPORTED.items()}


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_the_installed_version_is_supported(name: str) -> None:
    """Else the Jupyter tests would test the fallback (and fail: they expect the fast path)."""
    installed = importlib.metadata.version(name)
    assert installed in _specifier(SUPPORTED[name]), (name, installed)
