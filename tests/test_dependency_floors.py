"""The lower bounds in pyproject.toml are the versions CI tests: ``requirements/airflow-3.1-lowest.txt`` pins each
direct dependency (extras included) exactly at its bound, and every pin file is the one ``make pins`` makes.

A bound raised without re-pinning, a pin edited by hand, or a new dependency without a lower bound fails here.
"""

from __future__ import annotations

import importlib.util
import shlex
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
PIN_FILES = {"airflow-3.3.txt": "3.3", "airflow-3.1.txt": "3.1", "airflow-3.1-lowest.txt": "3.1"}
LOWEST = "airflow-3.1-lowest.txt"


def direct_requirements() -> list[Requirement]:
    """Every requirement of pyproject.toml (runtime and every extra) that applies on the supported Python."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = [project["dependencies"], *project.get("optional-dependencies", {}).values()]
    reqs = [Requirement(line) for group in groups for line in group]
    env = {"python_version": "3.11", "python_full_version": "3.11.0"}
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def lower_bound(req: Requirement) -> Version:
    bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{req}: every direct dependency needs exactly one '>=' lower bound, tested by CI"
    return bounds[0]


def pins(name: str) -> dict[str, Version]:
    """``name==version`` lines of a pin file, by canonical name."""
    out = {}
    for line in (REQUIREMENTS / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            pkg, _, version = line.partition("==")
            out[canonicalize_name(pkg.split("[")[0])] = Version(version.split(";")[0].strip())
    return out


def load_pins_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pins", REQUIREMENTS / "pins.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_direct_dependency_is_pinned_at_its_lower_bound_in_the_lowest_pins() -> None:
    lowest = pins(LOWEST)
    wrong = {}
    for req in direct_requirements():
        bound, pinned = lower_bound(req), lowest.get(canonicalize_name(req.name))
        if pinned != bound:
            wrong[req.name] = f"declared >={bound}, pinned {pinned}"
    assert not wrong, f"{LOWEST} is not at the declared floors (run `make pins` or fix the bound): {wrong}"


@pytest.mark.parametrize("name", sorted(PIN_FILES))
def test_every_pin_file_satisfies_pyproject_and_its_airflow_line(name: str) -> None:
    pinned = pins(name)
    outside = {
        req.name: str(pinned.get(canonicalize_name(req.name)))
        for req in direct_requirements()
        if pinned.get(canonicalize_name(req.name)) not in req.specifier
    }
    assert not outside, f"{name} pins these outside pyproject.toml's bounds (run `make pins`): {outside}"
    assert pinned["apache-airflow"].base_version.startswith(PIN_FILES[name] + ".")


@pytest.mark.parametrize("name", sorted(PIN_FILES))
def test_each_pin_file_was_made_by_make_pins(name: str) -> None:
    """The header uv writes records the flags; it must be the command ``make pins`` runs for that file."""
    expected = {cmd[cmd.index("-o") + 1]: cmd for cmd in load_pins_script().commands("uv")}[f"requirements/{name}"]
    header = (REQUIREMENTS / name).read_text().splitlines()[1].lstrip("# ")
    assert shlex.split(header) == [arg for arg in expected if arg != "--quiet"]
