"""Commands that run the daemon or act on its store: serve, db."""

from __future__ import annotations

import click

from poold.settings import load_settings

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


COMMANDS = [serve, db]
