"""Commands that install and run the daemon or act on its store: shipped, serve, db."""

from __future__ import annotations

import sys

import click

from poold.cli.output import emit_json
from poold.settings import load_settings
from poold.shipped import shipped_files, shipped_path

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="POOLD_CONFIG",
    help="poold.toml ($POOLD_CONFIG; default /etc/poold/poold.toml when present).",
)


@click.command()
@config_option
@click.option("--no-migrate", is_flag=True, help="Refuse to start unless the schema is already current.")
def serve(config_path: str | None, no_migrate: bool) -> None:
    """Run the daemon: HTTP API, scheduler and node watch, over the configured store."""
    from poold.server import serve as run

    settings = load_settings(config_path)
    run(settings, upgrade=settings.migrate_on_start and not no_migrate)


@click.group()
def db() -> None:
    """Manage the store's schema."""


@db.command()
@config_option
def upgrade(config_path: str | None) -> None:
    """Bring the schema up to date."""
    from poold.db import migrate
    from poold.db.session import open_store

    engine = open_store(load_settings(config_path).effective_database_url)
    migrate.upgrade(engine)
    click.echo(f"schema at revision {migrate.current_revision(engine)}")


@db.command()
@config_option
def current(config_path: str | None) -> None:
    """Print the schema revision, and whether it is the one this poold needs."""
    from poold.db import migrate
    from poold.db.session import open_store

    engine = open_store(load_settings(config_path).effective_database_url)
    now, head = migrate.current_revision(engine), migrate.head_revision(engine)
    click.echo(f"{now or 'empty'} ({'current' if now == head else f'needs {head}'})")


@click.command()
@click.argument("name", required=False)
@click.pass_context
def shipped(ctx: click.Context, name: str | None) -> None:
    """List the files this poold ships, or print the one called NAME.

    The default configs, the systemd units and the example jobs come inside the package:
    `poold shipped config/poold.toml > /etc/poold/poold.toml` installs the daemon's config.
    """
    names = shipped_files()
    if name is None:
        emit_json(names) if ctx.obj["output"] == "json" else click.echo("\n".join(names))
        return
    if name not in names:
        raise FileNotFoundError(f"no shipped file {name!r}; `poold shipped` lists them")
    sys.stdout.buffer.write(shipped_path(*name.split("/")).read_bytes())


COMMANDS = [shipped, serve, db]
