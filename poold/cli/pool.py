"""`poold pool`: the pool at a glance, one row per device model."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from poold.cli.connection import connect
from poold.cli.output import amount, console, emit_json, percent, table, when

POOL_COLUMNS = ["MODEL", "KIND", "DEVICES", "IN SERVICE", "FREE", "ALLOCATED", "MEMORY HELD", "MIG SLICES FREE", "FRAG", "UTIL",
                "PRICE/H"]


def mig_text(mig: dict[str, dict[str, int]]) -> str | None:
    """MIG slices by profile, free of total: ``{"1g.10gb": {"total": 3, "free": 2}}`` as ``1g.10gb 2/3``."""
    return ", ".join(f"{profile} {count['free']}/{count['total']}" for profile, count in sorted(mig.items())) or None


def pool_row(model: dict[str, Any]) -> list[Any]:
    """One model of ``GET /pool`` as a row of :data:`POOL_COLUMNS`. ALLOCATED is in whole-device
    units (a share counts its fraction, a MIG slice its slices/7); FRAG is the share of the
    model's free capacity the recent job mix cannot use; UTIL the mean utilisation its agents
    last reported; MEMORY HELD is device memory allocated of the total; PRICE/H the price of
    one whole device per hour."""
    memory = f"{model['memory_allocated_mib'] / 1024:.0f}/{model['memory_total_mib'] / 1024:.0f} GiB" if model["memory_total_mib"] else None
    return [model["model"], model["kind"], model["devices"], model["in_service"], model["free"], amount(model["allocated"]), memory,
            mig_text(model["mig"]), percent(None if model["fragmentation"] is None else 100 * model["fragmentation"]),
            percent(model["utilization_pct"]), f"{model['price_per_hour']:.2f}"]


def pool_table(overview: dict[str, Any]) -> Table:
    """``GET /pool`` as a table, titled with the time it was taken."""
    return table(POOL_COLUMNS, [pool_row(model) for model in overview["models"]], title=f"pool at {when(overview['at'])} UTC")


@click.command(name="pool")
@click.pass_context
def pool(ctx: click.Context) -> None:
    """The pool by device model: whole devices present, in service, free and allocated; MIG
    slices free by profile; fragmentation; utilisation; price per hour of one device.

    DEVICES counts whole devices (GPUs, NPUs, FPGAs); MIG slices are counted apart. ALLOCATED is
    in whole devices: a shared device counts the share held, a MIG slice its slices/7. FRAG is
    the share of the model's free capacity that the recent job mix cannot use, as the placement
    engine measures it (- on a daemon that is not the leader). UTIL is the mean utilisation the
    agents last reported for the model's devices (- before any report).
    """
    with connect(ctx) as client:
        overview = client.pool()
    if ctx.obj["output"] == "json":
        emit_json(overview)
    else:
        console.print(pool_table(overview))


COMMANDS = [pool]
