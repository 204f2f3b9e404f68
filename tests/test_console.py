"""The one terminal both command lines print to: literal text, whatever it holds, and no
other rich console that could read markup or emoji codes in what users and agents wrote."""

from __future__ import annotations

import ast
from pathlib import Path

from rich.table import Table

from poold_common.console import console

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = "[/] [bold]x[/bold] 0000:ab:00.0 :thumbs_up:"


def test_text_and_table_cells_print_as_written():
    table = Table("cell")
    table.add_row(WRITTEN)
    with console.capture() as captured:
        console.print(WRITTEN)
        console.print(table)
    out = captured.get()
    assert out.startswith(WRITTEN + "\n") and f" {WRITTEN} " in out


def test_no_other_module_makes_a_console_or_turns_markup_on():
    found = []
    for package in ("poold", "agents", "poold_common", "poold_wire"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), where)):
                if isinstance(node, ast.ImportFrom) and node.module == "rich.console" and where != "poold_common/console.py":
                    found.append(f"{where}: imports rich.console")
                if isinstance(node, ast.keyword) and node.arg in {"markup", "emoji"} and not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    found.append(f"{where}:{node.value.lineno}: {node.arg}=")
    assert found == []
