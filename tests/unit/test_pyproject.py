"""pyproject declares what requirements.txt pins, so `pip install .` installs a working klviz."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_dependencies_are_requirements_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = set(project["dependencies"]) | {d for name, extra in extras.items() if name != "ray" for d in extra}
    assert declared == _pins("requirements.txt")
    assert set(extras["ray"]) == _pins("requirements-ray.txt")  # the optional --ray extra has its own file
    assert "torch==2.13.0" in project["dependencies"]


def _pins(name: str) -> set[str]:
    return {line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()
            if line.split("#")[0].strip() and not line.startswith(("-e", "-r"))}
