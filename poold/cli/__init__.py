"""The ``poold`` command: one group, commands split by what they act on."""

from __future__ import annotations

import sys

import click

from poold import __version__
from poold.cli import demo, jobs, nodes, pool, queues, server, tls, tokens, top, usage, why
from poold.client import ClientError
from poold.db import SchemaError, StoreError
from poold.demo import DemoError
from poold.jobspec import JobFileError
from poold.tls import TlsError
from poold_common.config import SettingsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poold")
@click.option("--url", envvar="POOLD_URL", help="The daemon's API ($POOLD_URL; else `url` in the client config; else http://127.0.0.1:8470).")
@click.option("--ca-file", envvar="POOLD_CA_FILE", type=click.Path(dir_okay=False),
              help="Verify the daemon's certificate against this CA ($POOLD_CA_FILE; else `ca_file` in the client config; else the system's CAs).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Tables for people, JSON for scripts.")
@click.pass_context
def cli(ctx: click.Context, url: str | None, ca_file: str | None, output: str) -> None:
    """poold: a resource pool for heterogeneous accelerators (GPUs, MIG slices, NPUs, FPGAs).

    Commands that call the daemon send the token in $POOLD_TOKEN, else `token` from the client
    config, ~/.config/poold/client.toml ($XDG_CONFIG_HOME/poold/client.toml), which may also
    hold `url` and `ca_file`. `poold token create` (admins) makes tokens.
    """
    ctx.obj = {"url": url, "ca_file": ca_file, "output": output}


for module in (jobs, why, pool, top, usage, nodes, queues, tokens, tls, server, demo):
    for command in module.COMMANDS:
        cli.add_command(command)

_EXPECTED = (ClientError, JobFileError, SettingsError, SchemaError, StoreError, DemoError, TlsError, OSError)


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
