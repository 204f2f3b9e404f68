"""The packages' layering: ``agents`` and ``poold`` never import each other; what they share
lives in the leaves ``poold_wire`` (the wire schema) and ``poold_common``, which import
neither. A node can then run an agent of another release than its daemon's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level package -> the modules of ``package`` that import it (at any depth of the code)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("agents", {"poold"}),
        ("poold", {"agents"}),
        ("poold_wire", {"poold", "agents", "poold_common"}),
        ("poold_common", {"poold", "agents", "poold_wire"}),
    ],
)
def test_package_imports_none_of(package, forbidden):
    imports = imported_packages(package)
    assert imports  # the scan found the package's code
    assert {name: sorted(imports[name]) for name in forbidden & set(imports)} == {}


def test_the_wire_schema_needs_only_pydantic():
    assert set(imported_packages("poold_wire")) <= {"__future__", "json", "math", "datetime", "typing", "typing_extensions", "pydantic", "pydantic_core", "poold_wire"}
