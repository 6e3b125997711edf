"""docs/architecture.md's module table names every module of the controller package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_module_table_matches_the_tree() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("## Modules") : doc.index("\n## ", doc.index("## Modules") + 1)]
    named: set[str] = set()
    for pattern in re.findall(r"`(controller/[\w/*.]+\.py)`", table):
        matches = {str(p.relative_to(ROOT)) for p in ROOT.glob(pattern)}
        assert matches, f"{pattern} names no file"
        named |= matches
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "controller").rglob("*.py")}
    modules -= {"controller/__init__.py"}
    assert sorted(modules - named) == [], "modules the table does not describe"
    assert sorted(named - modules) == [], "table rows for modules that do not exist"
