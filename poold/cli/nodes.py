"""Commands on nodes and devices: nodes, devices (and devices return), drain, undrain."""

from __future__ import annotations

import click

from poold.cli.completion import node_argument, node_names
from poold.cli.connection import connect
from poold.cli.output import emit_json, emit_table, gib, when


@click.command(name="nodes")
@click.pass_context
def list_nodes(ctx: click.Context) -> None:
    """List nodes with their state, free whole devices and free MIG slices.

    FREE DEVICES counts whole devices (GPUs, NPUs, FPGAs; a GPU in MIG mode is one): free
    when nothing is held on them or on their slices. MIG SLICES counts the slices apart.

    A node is `ready`, or `lost` when its agent has not heartbeated for the daemon's
    nodes.timeout_s (its jobs were ended lost and submitted again as their retries allow);
    it is ready again with its next heartbeat. MACHINE is the start of the machine id of
    the agent that holds the node's name.
    """
    with connect(ctx) as client:
        nodes = client.nodes()
    if ctx.obj["output"] == "json":
        emit_json(nodes)
        return
    rows = [
        [
            n["name"],
            n["state"] + (" (drained)" if n["drained"] else ""),
            f"{n['devices_free']}/{n['devices']}",
            f"{n['slices_free']}/{n['slices']}" if n["slices"] else None,
            n["cpu_cores"],
            gib(n["memory_total_mib"]),
            when(n["last_heartbeat_at"]),
            (n.get("machine_id") or "")[:12] or None,
            n.get("drain_reason"),
        ]
        for n in nodes
    ]
    emit_table(["NODE", "STATE", "FREE DEVICES", "MIG SLICES", "CPUS", "MEMORY", "LAST HEARTBEAT", "MACHINE", "DRAIN REASON"], rows)


@click.group(name="devices", invoke_without_command=True)
@click.option("--node", shell_complete=node_names, help="Only this node's devices.")
@click.pass_context
def list_devices(ctx: click.Context, node: str | None) -> None:
    """List devices: model, memory, health, quarantine, how much is allocated, price per hour.

    A device reported unhealthy is quarantined: out of placement while unhealthy and for the
    daemon's nodes.quarantine_s once healthy again; one that flapped, or whose scrub after a
    job failed, stays out until `poold devices return UUID`. QUARANTINE says since when, until
    when, and why. HEALTH says `scrubbing` while the agent scrubs a device after a job.
    """
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
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
        if d.get("scrubbing"):
            health = f"{health}, scrubbing after job {d['scrubbing']['job_id']}"
        price = f"{d['price_per_hour']:.2f}" if d.get("price_per_hour") is not None else None
        rows.append([d["node"], d["index"], d["kind"], model, d["uuid"], gib(d["memory_total_mib"]), health,
                     quarantine_text(d.get("quarantine")), f"{d['allocated_share']:g}", price])
    emit_table(["NODE", "IDX", "KIND", "MODEL", "UUID", "MEMORY", "HEALTH", "QUARANTINE", "ALLOCATED", "PRICE/H"], rows)


def quarantine_text(quarantine: dict | None) -> str | None:
    """Since when, until when and why a device is out of service (None for one in service)."""
    if not quarantine:
        return None
    if quarantine["held"]:
        until = "until returned by an admin"
    elif quarantine.get("until"):
        until = f"until {when(quarantine['until'])}"
    else:
        until = "while unhealthy"
    return f"since {when(quarantine['since'])} {until}: {quarantine.get('reason') or ''}".rstrip(": ")


@list_devices.command(name="return")
@click.argument("uuid")
@click.option("--node", shell_complete=node_names, help="The device's node, when its uuid is on several (NPU and FPGA ids are per node).")
@click.pass_context
def return_device(ctx: click.Context, uuid: str, node: str | None) -> None:
    """Return a quarantined device to service now (one that flapped stays out until this).

    Refused while the device still reports unhealthy.
    """
    with connect(ctx) as client:
        out = client.return_device(uuid, node or ctx.parent.params.get("node"))
    emit_json(out) if ctx.obj["output"] == "json" else click.echo(f"device {uuid} on {out['node']} is back in service")


@click.command()
@node_argument()
@click.option("--reason", help="Why (shown in `poold nodes`).")
@click.pass_context
def drain(ctx: click.Context, node: str, reason: str | None) -> None:
    """Stop placing new jobs on NODE; running jobs go on."""
    with connect(ctx) as client:
        out = client.drain(node, reason)
    emit_json(out) if ctx.obj["output"] == "json" else click.echo(f"node {node} drained")


@click.command()
@node_argument()
@click.pass_context
def undrain(ctx: click.Context, node: str) -> None:
    """Let NODE take new jobs again."""
    with connect(ctx) as client:
        out = client.undrain(node)
    emit_json(out) if ctx.obj["output"] == "json" else click.echo(f"node {node} undrained")


COMMANDS = [list_nodes, list_devices, drain, undrain]
