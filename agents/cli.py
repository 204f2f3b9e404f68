"""``poold-agent``: show what this node would report, or run the agent.

    poold-agent inventory [--fake FIXTURE] [--json] [--config FILE]
    poold-agent run [--config FILE] [--fake FIXTURE] [--server URL] [--node NAME] [--state-dir DIR] [--metrics-listen HOST:PORT]

Every error is one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from agents.config import AgentSettings, load_agent_settings, with_overrides
from poold_common.config import SettingsError
from poold_common.console import console

if TYPE_CHECKING:
    from agents.inventory import Inventory


def _settings(config: Path | None, **overrides: object) -> AgentSettings:
    try:
        return with_overrides(load_agent_settings(config), **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc).replace(":\n  ", ": ", 1).replace("\n  ", "; ")) from None
    except ValueError as exc:  # a flag's value failed validation
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in getattr(exc, "errors", lambda: [])())
        raise click.ClickException(f"invalid option: {problems or exc}") from None


def _inventory_module():
    try:
        from agents import inventory
    except ImportError as exc:
        raise click.ClickException(f"the device collectors are not available: {exc}") from None
    return inventory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The poold node agent: device inventory, health, and the jobs placed on this node."""


@cli.command()
@click.option("--fake", metavar="FIXTURE", help="report a fixture of the mocked-device harness (e.g. hgx-h100-mig)")
@click.option("--json", "as_json", is_flag=True, help="print the inventory as JSON")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="agent.toml (for its collectors list)")
def inventory(fake: str | None, as_json: bool, config: Path | None) -> None:
    """Print what the agent would report to the daemon."""
    settings = _settings(config, fake=fake)
    module = _inventory_module()
    try:
        found = module.collect(module.load_collectors(fake=settings.fake, enabled=settings.collectors))
    except Exception as exc:  # the one line the user needs, not a traceback
        raise click.ClickException(f"inventory failed: {exc}") from None
    if as_json:
        click.echo(found.model_dump_json(indent=2))
    else:
        _print_inventory(found)


def _print_inventory(found: Inventory) -> None:
    host = found.host
    console.print(Text.assemble((host.hostname, "bold"), f": {host.cpu_cores} CPU cores, {host.memory_total_mib} MiB memory"))
    table = Table("device", "model", "bus id", "MiB free/total", "util %", "°C", "W", "health")
    table.columns[0].overflow = table.columns[7].overflow = "fold"
    for device in found.devices:
        uuid = device.uuid if device.parent_uuid is None else f"└ {device.uuid}"
        model = f"{device.vendor} {device.kind} {device.model}" + ("" if device.index is None else f" #{device.index}")
        memory = f"{_fmt(device.memory_free_mib)}/{_fmt(device.memory_total_mib)}"
        health = device.health if device.health == "ok" else Text(f"{device.health}: {device.health_reason}", style="red")
        table.add_row(uuid, model, device.bus_id or "-", memory, _fmt(device.utilization_pct),
                      _fmt(device.temperature_c), _fmt(device.power_w), health)
    console.print(table)
    for name, status in sorted(found.collectors.items()):
        console.print(f"collector {name}: {status}")


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@cli.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="agent.toml")
@click.option("--fake", metavar="FIXTURE", help="run over a fixture of the mocked-device harness")
@click.option("--server", metavar="URL", help="the daemon's base URL (server_url)")
@click.option("--node", metavar="NAME", help="this node's name (node_name)")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="job dirs and queued events")
@click.option("--metrics-listen", metavar="HOST:PORT", help="serve the devices' metrics for Prometheus there (metrics_listen)")
def run(config: Path | None, fake: str | None, server: str | None, node: str | None, state_dir: Path | None,
        metrics_listen: str | None) -> None:
    """Run the agent until SIGTERM (running jobs are left running and adopted on the next start).

    At its first start the node joins with join_token (POOLD_AGENT_JOIN_TOKEN; an admin makes
    one with `poold token create --role join`) and keeps a credential of its own in the state
    dir, the only token it sends from then on. Over https, ca_file is the CA it trusts.
    """
    settings = _settings(config, fake=fake, server_url=server, node_name=node, state_dir=state_dir, metrics_listen=metrics_listen)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from agents.agent import build_agent

    try:
        agent = build_agent(settings)
    except ImportError as exc:
        raise click.ClickException(f"the device collectors are not available: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot use state dir {settings.state_dir}: {exc.strerror or exc}") from None
    except Exception as exc:  # a collector that cannot load, a bad fixture name
        raise click.ClickException(f"cannot start the agent: {exc}") from None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop())
    agent.run()


def main() -> None:
    try:
        cli(prog_name="poold-agent")
    except KeyboardInterrupt:
        sys.exit(130)
