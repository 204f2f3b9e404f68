"""The ``poold`` command: one group, commands split by what they act on."""

from __future__ import annotations

import sys

import click

from poold import __version__
from poold.cli import demo, jobs, nodes, server
from poold.client import DEFAULT_URL, ClientError
from poold.db import SchemaError, StoreError
from poold.demo import DemoError
from poold.jobspec import JobFileError
from poold_common.config import SettingsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poold")
@click.option("--url", envvar="POOLD_URL", default=DEFAULT_URL, show_default=True, help="The daemon's API ($POOLD_URL).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Tables for people, JSON for scripts.")
@click.pass_context
def cli(ctx: click.Context, url: str, output: str) -> None:
    """poold: a resource pool for heterogeneous accelerators (GPUs, MIG slices, NPUs, FPGAs)."""
    ctx.obj = {"url": url, "output": output}


for module in (jobs, nodes, server, demo):
    for command in module.COMMANDS:
        cli.add_command(command)

_EXPECTED = (ClientError, JobFileError, SettingsError, SchemaError, StoreError, DemoError, OSError)


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors are one clear line and a non-zero exit, never a traceback."""
    try:
        cli.main(args=argv, prog_name="poold", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except _EXPECTED as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
