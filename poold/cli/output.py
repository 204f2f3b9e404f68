"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from poold_common.console import console


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> Table:
    """A table as the CLI draws them (None shows as "-"), to print or to put in a live view."""
    out = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*["-" if value is None else str(value) for value in row])
    return out


def emit_table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    console.print(table(columns, rows, title))


def emit_choices(choices: list[tuple[str, dict]]) -> None:
    """Placements side by side (``PlanChoice``s, each with its label): where, on what, at what
    cost, and the weighted total."""
    if choices:
        emit_table(
            ["", "NODE", "MODEL", "DEVICES", "PRICE/H", "SPEED", "COST/WORK", "LOCALITY", "SCORE"],
            [[label, c["node"], c["model"], len(c["devices"]), f"{c['price_per_hour']:.2f}", f"{c['speed']:g}",
              f"{c['cost_per_work']:.2f}", c.get("locality"), f"{c['scores']['total']:.1f}"] for label, c in choices],
        )


def emit_scores(choices: list[tuple[str, dict]]) -> None:
    """Each scorer's 0..100 for each of ``choices`` (a column per choice), the weighted total last."""
    names = [name for name in dict.fromkeys(name for _, c in choices for name in c["scores"]) if name != "total"] + ["total"]
    emit_table(["SCORER", *(label for label, _ in choices)],
               [[name, *(_score(c["scores"].get(name)) for _, c in choices)] for name in names], title="scores")


def _score(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def emit_rejections(rejections: list[dict], title: str = "filters") -> None:
    """What each filter turned down (``PlanRejection``s), nearest misses first, as the API orders them."""
    if rejections:
        emit_table(["STAGE", "REASON", "TURNED DOWN", "FOR EXAMPLE"],
                   [[r["stage"], r["code"], r["count"], r["example"]] for r in rejections], title=title)


def percent(value: float | None) -> str | None:
    """A 0..100 figure as "42%"; None (not measured) stays None."""
    return None if value is None else f"{value:.0f}%"


def amount(value: float) -> str:
    """Device-hours, whole-device units: two decimals at most ("2.5", "0.14")."""
    return f"{round(value, 2):g}"


def gib(mib: int | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def when(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:19]


def devices_text(job: dict) -> str | None:
    """What a job holds, in a few words: "4x H100", "0.5x L4", "1x H100 slice MIG-44dfed45…"."""
    allocs = job.get("allocations") or []
    if not allocs:
        return None
    first = allocs[0]
    count = f"{first['share']:g}x" if first["share"] < 1 else f"{len(allocs)}x"
    slice_ = f" slice {first['device_uuid'][:12]}…" if first["device_uuid"].startswith("MIG-") else ""
    return f"{count} {first['device_model']}{slice_}"


REASON_WIDTH = 40


def reason_text(reason: str | None, width: int = REASON_WIDTH) -> str | None:
    """A job's reason in a table: its first clause (up to "; " or " ("), cut to ``width`` with an ellipsis."""
    if not reason:
        return None
    first = reason.split("; ", 1)[0].split(" (", 1)[0]
    return first if len(first) <= width else first[: width - 1] + "…"
