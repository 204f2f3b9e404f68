"""Commands on nodes and devices: nodes, devices, drain, undrain."""

from __future__ import annotations

import click

from poold.cli.output import emit_json, emit_table, gib, when
from poold.client import PooldClient


@click.command(name="nodes")
@click.pass_context
def list_nodes(ctx: click.Context) -> None:
    """List nodes with their state and free devices.

    A node is `ready`, or `lost` when its agent has not heartbeated for the daemon's
    nodes.timeout_s (its jobs were ended lost and submitted again as their retries allow);
    it is ready again with its next heartbeat. MACHINE is the start of the machine id of
    the agent that holds the node's name.
    """
    with PooldClient(ctx.obj["url"]) as client:
        nodes = client.nodes()
    if ctx.obj["output"] == "json":
        emit_json(nodes)
        return
    rows = [
        [
            n["name"],
            n["state"] + (" (drained)" if n["drained"] else ""),
            f"{n['devices_free']}/{n['devices']}",
            n["cpu_cores"],
            gib(n["memory_total_mib"]),
            when(n["last_heartbeat_at"]),
            (n.get("machine_id") or "")[:12] or None,
            n.get("drain_reason"),
        ]
        for n in nodes
    ]
    emit_table(["NODE", "STATE", "FREE DEVICES", "CPUS", "MEMORY", "LAST HEARTBEAT", "MACHINE", "DRAIN REASON"], rows)


@click.command(name="devices")
@click.option("--node", help="Only this node's devices.")
@click.pass_context
def list_devices(ctx: click.Context, node: str | None) -> None:
    """List devices: model, memory, health, how much is allocated, price per hour."""
    with PooldClient(ctx.obj["url"]) as client:
        devices = client.devices(node)
    if ctx.obj["output"] == "json":
        emit_json(devices)
        return
    rows = []
    for d in devices:
        profile = d["attributes"].get("mig_profile")
        model = f"{d['model']} {profile}" if profile else d["model"]
        if d["attributes"].get("mig_mode"):
            model += " (MIG)"
        health = d["health"] if d["health"] == "ok" else f"{d['health']}: {d.get('health_reason') or ''}"
        price = f"{d['price_per_hour']:.2f}" if d.get("price_per_hour") is not None else None
        rows.append([d["node"], d["index"], d["kind"], model, d["uuid"], gib(d["memory_total_mib"]), health, f"{d['allocated_share']:g}", price])
    emit_table(["NODE", "IDX", "KIND", "MODEL", "UUID", "MEMORY", "HEALTH", "ALLOCATED", "PRICE/H"], rows)


@click.command()
@click.argument("node")
@click.option("--reason", help="Why (shown in `poold nodes`).")
@click.pass_context
def drain(ctx: click.Context, node: str, reason: str | None) -> None:
    """Stop placing new jobs on NODE; running jobs go on."""
    with PooldClient(ctx.obj["url"]) as client:
        out = client.drain(node, reason)
    emit_json(out) if ctx.obj["output"] == "json" else click.echo(f"node {node} drained")


@click.command()
@click.argument("node")
@click.pass_context
def undrain(ctx: click.Context, node: str) -> None:
    """Let NODE take new jobs again."""
    with PooldClient(ctx.obj["url"]) as client:
        out = client.undrain(node)
    emit_json(out) if ctx.obj["output"] == "json" else click.echo(f"node {node} undrained")


COMMANDS = [list_nodes, list_devices, drain, undrain]
