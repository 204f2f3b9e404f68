"""Commands on queues: `queues` (usage against entitlement, for everyone) and the `queue`
group (list, show, create, set, delete; changes are for admins). See docs/queues.md."""

from __future__ import annotations

from typing import Any

import click

from poold.cli.connection import connect
from poold.cli.output import emit_json, emit_table, when


def amounts_text(amounts: dict[str, float]) -> str | None:
    """``{"H100": 16, "cost": 40}`` as ``H100=16 cost=40``; None when empty."""
    return " ".join(f"{key}={value:g}" for key, value in amounts.items()) or None


def wait_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _amounts(option: str, values: tuple[str, ...]) -> dict[str, float | None] | None:
    """``("H100=16", "cost=40", "A100=")`` -> ``{"H100": 16.0, "cost": 40.0, "A100": None}`` (empty: remove the key)."""
    if not values:
        return None
    out: dict[str, float | None] = {}
    for value in values:
        key, sep, amount = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=AMOUNT (e.g. H100=16, gpu=4, cost=40.0; KEY= removes it)", param_hint=option)
        try:
            out[key] = float(amount) if amount.strip() else None
        except ValueError:
            raise click.BadParameter(f"{value!r}: {amount!r} is not a number", param_hint=option) from None
    return out


def _change(priority: int | None, weight: float | None, description: str | None, guarantee: tuple[str, ...],
            limit: tuple[str, ...]) -> dict[str, Any]:
    request = {"priority": priority, "weight": weight, "description": description,
               "guarantee": _amounts("--guarantee", guarantee), "limit": _amounts("--limit", limit)}
    return {key: value for key, value in request.items() if value is not None}


def _entitlement_options(command):
    for option in reversed([
        click.option("--priority", type=int, help="Higher queues are scheduled first (-1000..1000)."),
        click.option("--weight", type=float, help="Its share of what no guarantee holds, against the other queues' weights (> 0)."),
        click.option("--description", help="What the queue is for."),
        click.option("--guarantee", multiple=True, metavar="KEY=AMOUNT",
                     help="Devices by model (H100=16) or kind (gpu=4), or cost=MONEY per hour; repeatable; KEY= removes one."),
        click.option("--limit", multiple=True, metavar="KEY=AMOUNT", help="As --guarantee: what the queue never holds more than."),
    ]):
        command = option(command)
    return command


def _show(ctx: click.Context, queue: dict[str, Any]) -> None:
    if ctx.obj["output"] == "json":
        emit_json(queue)
        return
    source = f"set by {queue['changed_by']} at {when(queue['changed_at'])}" if queue.get("changed_by") else (
        "the config file" if queue["in_config"] else "created through the API")
    for label, value in (("queue", queue["name"]), ("priority", queue["priority"]), ("weight", f"{queue['weight']:g}"),
                         ("guarantee", amounts_text(queue["guarantee"]) or "-"), ("limit", amounts_text(queue["limit"]) or "-"),
                         ("description", queue["description"] or "-"), ("from", source)):
        click.echo(f"{label + ':':13}{value}")


ENTITLEMENT_COLUMNS = ["QUEUE", "PRIO", "WEIGHT", "GUARANTEE", "LIMIT"]


def _queue_table(ctx: click.Context, columns: list[str], rest: Any) -> None:
    """The queues as JSON, or a table: their entitlement columns, then ``rest(queue)``'s."""
    with connect(ctx) as client:
        queues = client.queues()
    if ctx.obj["output"] == "json":
        emit_json(queues)
        return
    emit_table(ENTITLEMENT_COLUMNS + columns, [[q["name"], q["priority"], f"{q['weight']:g}", amounts_text(q["guarantee"]),
                                               amounts_text(q["limit"]), *rest(q)] for q in queues])


@click.command(name="queues")
@click.pass_context
def list_usage(ctx: click.Context) -> None:
    """Each queue, highest priority first: what its placed jobs hold (devices by model, cost per
    hour) against its entitlement (weight, guarantee, limit), how many wait and the oldest wait."""
    _queue_table(ctx, USAGE_COLUMNS, usage_row)


USAGE_COLUMNS = ["HOLDS", "COST/H", "PLACED", "PENDING", "OLDEST WAIT"]


def usage_row(q: dict[str, Any]) -> list[Any]:
    """A queue's usage (``GET /queues``) as a row of :data:`USAGE_COLUMNS`."""
    return [amounts_text(q["devices"]), f"{q['cost_per_hour']:.2f}", f"{q['placed']}" + (f" ({q['stopping']} stopping)" if q["stopping"] else ""),
            q["pending"], wait_text(q["oldest_wait_s"])]


@click.group(name="queue")
def queue() -> None:
    """Show queues; create, change and delete them (admins). A queue changed here is no longer
    reseeded from the config file at start (`queue set NAME --from-config` hands it back)."""


@queue.command(name="list")
@click.pass_context
def list_queues(ctx: click.Context) -> None:
    """The queues and their entitlements, and where each is set from (the config file, or who changed it)."""
    _queue_table(ctx, ["SET BY", "DESCRIPTION"], lambda q: [
        q["changed_by"] or ("config" if q["in_config"] else "api"), q["description"] or None])


@queue.command()
@click.argument("name")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """One queue's entitlement and where it is set from."""
    with connect(ctx) as client:
        _show(ctx, client.queue(name))


@queue.command()
@click.argument("name")
@_entitlement_options
@click.pass_context
def create(ctx: click.Context, name: str, **options: Any) -> None:
    """Make queue NAME (admins): `poold queue create batch --weight 2 --guarantee gpu=4 --limit cost=40`."""
    with connect(ctx) as client:
        _show(ctx, client.create_queue({"name": name, **_change(**options)}))


@queue.command(name="set")
@click.argument("name")
@_entitlement_options
@click.option("--from-config", is_flag=True, help="Hand the queue back to the config file: its entry there applies now and at each start.")
@click.pass_context
def set_(ctx: click.Context, name: str, from_config: bool, **options: Any) -> None:
    """Change queue NAME (admins). Keys given with --guarantee/--limit are set, KEY= removes one,
    the others stay: `poold queue set prod --guarantee H100=16 --guarantee cost=40`."""
    request = _change(**options)
    if from_config:
        if request:
            raise click.UsageError("--from-config takes no other option")
        request = {"from_config": True}
    elif not request:
        raise click.UsageError("nothing to change: give --weight, --priority, --description, --guarantee, --limit or --from-config")
    with connect(ctx) as client:
        _show(ctx, client.update_queue(name, request))


@queue.command()
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete queue NAME (admins): refused while any job, ended ones included, refers to it,
    and for a queue the config file names."""
    with connect(ctx) as client:
        client.delete_queue(name)
    click.echo(f"queue {name} deleted")


COMMANDS = [list_usage, queue]
