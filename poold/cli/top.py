"""`poold top`: the pool and the queue at a glance, refreshing in place."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from poold.cli.connection import connect
from poold.cli.output import amount, console, emit_json, percent, reason_text, table
from poold.cli.pool import pool_table
from poold.cli.queues import USAGE_COLUMNS, usage_row, wait_text
from poold.client import ClientError, PooldClient

PENDING_SHOWN = 15


def snapshot(client: PooldClient) -> dict[str, Any]:
    """What one frame shows, as the API answers it: the pool by model, the queues, the oldest
    pending jobs (with their reasons) and the running jobs' usage so far."""
    pending = client.jobs(["pending"], limit=1000)
    return {"pool": client.pool(), "queues": client.queues(), "pending": pending[::-1][:PENDING_SHOWN], "pending_count": len(pending),
            "running": client.usage(by="job", states=("running",))}


def frame(view: dict[str, Any], now: datetime | None = None) -> Table:
    """One frame of ``poold top`` from a :func:`snapshot`."""
    now = now or datetime.now(timezone.utc)
    queues = table(["QUEUE", *USAGE_COLUMNS], [[q["name"], *usage_row(q)] for q in view["queues"]], title="queues")
    more = view["pending_count"] - len(view["pending"])
    pending = table(["ID", "NAME", "QUEUE", "OWNER", "WAITING", "REASON"],
                    [[j["id"], j["name"], j["queue"], j.get("owner"), wait_text(_age_s(j["submitted_at"], now)), reason_text(j.get("reason"), 60)]
                     for j in view["pending"]],
                    title=f"pending: {view['pending_count']}" + (f" (oldest {len(view['pending'])} shown)" if more > 0 else ""))
    rows = view["running"]["rows"]
    running = table(["JOB", "NAME", "OWNER", "QUEUE", "HELD H", "COST SO FAR", "PRICE/H", "UTIL"],
                    [[r["job_id"], r["name"], r.get("owner"), r["queue"], amount(r["held_hours"]), f"{r['cost']:.2f}",
                      f"{r['price_per_hour']:.2f}", percent(r["utilization_pct"])] for r in rows],
                    title=f"running: {len(rows)}, {sum(r['price_per_hour'] for r in rows):.2f}/h")
    grid = Table.grid()  # the four tables one under the other, a blank line apart
    for part in (pool_table(view["pool"]), "", queues, "", pending, "", running):
        grid.add_row(part)
    return grid


def _age_s(at: str, now: datetime) -> float:
    return max(0.0, (now - datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds())


@click.command(name="top")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts; with `poold -o json`, the frame's data).")
@click.pass_context
def top(ctx: click.Context, interval: float, once: bool) -> None:
    """A live view of the pool and the queue, refreshed in place every --interval seconds:
    the pool by model (as `poold pool`), the queues' usage, the pending jobs with their
    reasons (oldest first), and the running jobs with their cost so far. Ctrl-C ends it.
    """
    with connect(ctx) as client:
        if once:
            view = snapshot(client)
            emit_json(view) if ctx.obj["output"] == "json" else console.print(frame(view))
            return
        try:
            with Live(_frame_or_error(client), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(_frame_or_error(client), refresh=True)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a person leaves top: not an error


def _frame_or_error(client: PooldClient) -> Table | Text:
    """A frame, or the error in its place (the view keeps trying: a daemon that restarts comes back)."""
    try:
        return frame(snapshot(client))
    except ClientError as exc:
        return Text(f"error: {exc} (retrying)", style="red")


COMMANDS = [top]
