"""`poold usage`: device-hours, cost and utilisation by queue, user, model or job; idle reservations."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from poold.cli.connection import connect
from poold.cli.output import amount, emit_json, emit_table, percent
from poold.cli.queues import amounts_text
from poold.services.accounting import parse_since

BY = ("queue", "user", "model", "job")
JOB_FIELDS = ("job_id", "name", "owner", "queue", "state", "held_hours", "price_per_hour", "samples")


class Since(click.ParamType):
    """``7d``, ``24h``, ``30m``, ``90s`` (that long ago) or an ISO time, checked as the daemon
    reads it (``accounting.parse_since``) and passed on as written: "ago" is the daemon's now."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value).strip()


def usage_rows(answer: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``GET /usage`` as table columns and rows: one per key (a job's own fields with by=job)."""
    if answer["by"] == "job":
        columns = ["JOB", "NAME", "OWNER", "QUEUE", "STATE", "HELD H", "DEVICE-HOURS", "COST", "PRICE/H", "UTIL"]
        rows = [[r["job_id"], r["name"], r.get("owner"), r["queue"], r["state"], amount(r["held_hours"]), _hours(r), f"{r['cost']:.2f}",
                 f"{r['price_per_hour']:.2f}", percent(r["utilization_pct"])] for r in answer["rows"]]
        return columns, rows
    columns = [answer["by"].upper(), "JOBS", "DEVICE-HOURS", "COST", "UTIL"]
    return columns, [[r["key"], r["jobs"], _hours(r), f"{r['cost']:.2f}", percent(r["utilization_pct"])] for r in answer["rows"]]


def _hours(row: dict[str, Any]) -> str | None:
    return amounts_text({model: float(amount(hours)) for model, hours in sorted(row["device_hours"].items())})


def emit_csv(answer: dict[str, Any]) -> None:
    """One line per row; device-hours one column per model (``device_hours_H100``), empty where none."""
    models = sorted({model for row in answer["rows"] for model in row["device_hours"]})
    fields = (list(JOB_FIELDS) if answer["by"] == "job" else ["key", "jobs"]) + [f"device_hours_{m}" for m in models] + ["cost", "utilization_pct"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in answer["rows"]:
        writer.writerow({**row, **{f"device_hours_{m}": hours for m, hours in row["device_hours"].items()}})


@click.command(name="usage")
@click.option("--by", type=click.Choice(BY), help="One row per queue (the default), user, device model or job.")
@click.option("--since", type=Since(), help="Only time held since then: 7d, 24h, 30m ago, or an ISO time (UTC unless it says; default: all time).")
@click.option("--idle", is_flag=True, help="Running jobs whose devices' average utilisation is below --below (idle reservations).")
@click.option("--below", type=click.FloatRange(0, 100), default=10.0, show_default=True, help="The utilisation (%) --idle lists jobs below.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "csv"]), help="Overrides `poold -o`; csv for spreadsheets.")
@click.pass_context
def usage(ctx: click.Context, by: str | None, since: str | None, idle: bool, below: float, output: str | None) -> None:
    """Device-hours by model, cost and average device utilisation, by queue (default), user,
    model or job: what each held, within --since, from the daemon's accounting.

    COST is price x time held, summed over each job's allocations; UTIL the devices' average
    utilisation while held, from the agents' samples (- without samples). With --idle: the
    running jobs holding devices whose average utilisation is below --below (default 10%),
    one row per job.
    """
    output = output or ctx.obj["output"]
    if idle and by not in (None, "job"):
        raise click.UsageError("--idle lists jobs, one row each: it takes no --by")
    with connect(ctx) as client:
        if idle:
            answer = client.usage(by="job", since=since, states=("running",), idle_below=below)
        else:
            answer = client.usage(by=by or "queue", since=since)
    if output == "json":
        emit_json(answer)
    elif output == "csv":
        emit_csv(answer)
    else:
        columns, rows = usage_rows(answer)
        since_text = f" since {answer['since'].replace('T', ' ')[:19]} UTC" if answer.get("since") else ""
        title = f"running jobs below {below:g}% utilisation{since_text}" if idle else f"usage by {answer['by']}{since_text}"
        emit_table(columns, rows, title=title)


COMMANDS = [usage]
