"""pyproject declares what requirements.txt pins, so `pip install .` installs a working klviz."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_dependencies_are_requirements_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-e"))}
    declared = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    assert declared == pins
    assert "torch==2.13.0" in project["dependencies"]
