"""Issue #27 item 3: the declared floors are one documented table, and what is installed meets them."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> dict[str, tuple[str, str]]:
    """{package: (floor, extra or '')} from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for extra, requirements in [("", project["dependencies"]), *project["optional-dependencies"].items()]:
        for text in requirements:
            req = Requirement(text)
            floors = [s.version for s in req.specifier if s.operator == ">="]
            if floors:
                name = req.name.lower()
                floor, extras = out.get(name, (floors[0], set()))
                assert floor == floors[0], f"{name}: two floors in pyproject.toml ({floor}, {floors[0]})"
                out[name] = (floor, extras | ({extra} if extra else set()))
    return {k: (v, ", ".join(sorted(e))) for k, (v, e) in out.items()}


def _documented() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in (ROOT / "docs" / "requirements.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[\d.]+", cells[1]):
            rows[cells[0].lower()] = (cells[1], cells[2])
    return rows


def test_pyproject_floors_are_the_documented_table():
    assert _declared() == _documented()


def test_python_floor_and_posix_are_stated():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    assert any("POSIX" in c for c in project["classifiers"])
    assert "fcntl" in (ROOT / "docs" / "requirements.md").read_text()


@pytest.mark.parametrize("name", sorted(_declared()))
def test_installed_versions_meet_the_floors(name):
    floor, extra = _declared()[name]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        if extra:
            pytest.skip(f"{name} (extra {extra}) is not installed")
        raise
    assert Version(installed) >= Version(floor), f"{name} {installed} is below the declared floor {floor}"


def test_transformers_below_the_floor_is_what_failed():
    """The floor is not arbitrary: the table says which older release failed, and why."""
    text = (ROOT / "docs" / "requirements.md").read_text()
    assert "4.57.6 fails" in text and "headless_sdpa" in text
