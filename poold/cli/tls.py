"""``poold tls init``: a small CA and the daemon's certificate, for sites without their own."""

from __future__ import annotations

from pathlib import Path

import click

from poold.cli.output import emit_json


@click.group(name="tls")
def tls() -> None:
    """Certificates for the daemon's HTTPS."""


@tls.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, required=True,
              help="A name or address agents and users reach the daemon by (repeatable): the certificate is valid for these.")
@click.option("--days", default=365, show_default=True, help="How long the server certificate is valid.")
@click.pass_context
def init(ctx: click.Context, directory: Path, hosts: tuple[str, ...], days: int) -> None:
    """Make a CA and a server certificate in DIRECTORY (keys mode 0600).

    Point the daemon's server.tls_cert and server.tls_key at server.pem and server-key.pem,
    and agents' and users' ca_file at ca.pem. Run again on the same DIRECTORY to renew the
    server certificate (or change its names): the CA is kept, so nodes and users need nothing
    new; restart the daemon to serve it.
    """
    from poold.tls import init as make

    made = make(directory, list(hosts), days)
    if ctx.obj["output"] == "json":
        emit_json({"ca_made": made.ca_made, "ca_file": str(made.ca_cert), "tls_cert": str(made.cert), "tls_key": str(made.key),
                   "hosts": made.hosts, "not_after": made.not_after.isoformat()})
        return
    click.echo(f"{'made a new CA' if made.ca_made else 'kept the CA'} in {made.ca_cert} (agents' and users' ca_file)")
    click.echo(f"server certificate for {', '.join(made.hosts)} until {made.not_after:%Y-%m-%d}: in poold.toml")
    click.echo(f'  [server]\n  tls_cert = "{made.cert}"\n  tls_key = "{made.key}"')


COMMANDS = [tls]
