"""docs/ARCHITECTURE.md names every klviz module, and every module path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _modules() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "klviz").rglob("*.py")
                  if p.name != "__init__.py" or p.parent.name in ("cli",))


def test_every_module_has_its_line():
    missing = [m for m in _modules() if f"`{m}`" not in DOC]
    assert not missing, f"docs/ARCHITECTURE.md does not describe: {missing}"


def test_every_path_it_names_exists():
    named = set(re.findall(r"`((?:klviz|pages|tests|bench)/[\w/.-]+\.py)`", DOC))
    assert named, "the doc names no module"
    gone = sorted(p for p in named if not (ROOT / p).exists())
    assert not gone, f"docs/ARCHITECTURE.md names files that do not exist: {gone}"
