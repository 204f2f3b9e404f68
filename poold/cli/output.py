"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# Piped output gets a width that fits the tables instead of rich's 80-column fallback.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def emit_table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["-" if value is None else str(value) for value in row])
    console.print(table)


def gib(mib: int | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def when(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:19]
