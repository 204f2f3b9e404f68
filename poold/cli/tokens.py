"""Commands on tokens (admins): token create, token list, token revoke.

They call the API with an admin's token; with ``--local`` they open the store named by the
daemon's config instead, which is how the first admin token is made (on the daemon's host,
by whoever may read its config and database) and how an admin gets back in when every admin
token is lost.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from poold.cli.completion import node_names
from poold.cli.connection import connect
from poold.cli.output import emit_json, emit_table, when
from poold.cli.server import config_option
from poold.client import ClientError
from poold.jobspec import DurationS
from poold_common.tokens import ISSUED_ROLES

local_option = click.option(
    "--local", is_flag=True,
    help="Open the store named by the daemon's config (--config) instead of calling the API: how the first admin token is made.",
)


class LocalTokens:
    """The token routes' work, done on the store itself (``--local``); answers as the API's."""

    def __init__(self, config_path: str | None):
        from poold.db import migrate
        from poold.db.session import make_sessionmaker, open_store
        from poold.settings import load_settings

        self.engine = open_store(load_settings(config_path).effective_database_url)
        migrate.ensure_current(self.engine)
        self.factory = make_sessionmaker(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def tokens(self, node: str | None = None, include_ended: bool = False) -> list[dict[str, Any]]:
        from poold.api import convert
        from poold.db.session import reading
        from poold.services import tokens

        with reading(self.factory) as session:
            return [convert.token_out(row).model_dump(mode="json") for row in tokens.list_tokens(session, node, include_ended)]

    def create_token(self, request: dict[str, Any]) -> dict[str, Any]:
        from poold.api import convert
        from poold.api.schemas import TokenCreate, TokenIssued
        from poold.db.session import transaction
        from poold.services import ServiceError, tokens

        try:
            body = TokenCreate.model_validate(request)
            with transaction(self.factory) as session:
                issued = tokens.create(session, body.role, user=body.user, expires_in_s=body.expires_in_s, uses=body.uses,
                                       note=body.note, created_by=f"{getpass.getuser()} (poold token create --local)")
                return TokenIssued(**convert.token_out(issued.row).model_dump(), token=issued.token).model_dump(mode="json")
        except ValidationError as exc:
            raise ClientError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        except ServiceError as exc:
            raise ClientError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        from poold.api import convert
        from poold.db.session import transaction
        from poold.services import ServiceError, tokens

        try:
            with transaction(self.factory) as session:
                return convert.token_out(tokens.revoke(session, token_id)).model_dump(mode="json")
        except ServiceError as exc:
            raise ClientError(exc.message) from None


@contextmanager
def _tokens(ctx: click.Context, local: bool, config_path: str | None) -> Iterator[Any]:
    api = LocalTokens(config_path) if local else connect(ctx)
    try:
        yield api
    finally:
        api.close()


@click.group(name="token")
def token() -> None:
    """Make, list and revoke API tokens (admins; --local: on the store itself)."""


@token.command()
@click.option("--role", type=click.Choice(ISSUED_ROLES), required=True,
              help="admin: everything; user: their own jobs and the pool; join: registers new nodes.")
@click.option("--user", help="Whom an admin or user token is for: jobs it submits are this user's.")
@click.option("--expires", help="How long it is valid: 90d, 12h, 30m or seconds. Default 90d; a join token 1h.")
@click.option("--uses", type=int, help="Nodes a join token may bring (default 1).")
@click.option("--note", default="", help="What it is for (token list shows it).")
@local_option
@config_option
@click.pass_context
def create(ctx: click.Context, role: str, user: str | None, expires: str | None, uses: int | None, note: str, local: bool,
           config_path: str | None) -> None:
    """Make a token and print it, this once (only a digest of it is kept).

    The token alone goes to stdout, so `export POOLD_TOKEN=$(poold token create ...)` works;
    what it is goes to stderr. The first admin token is made with --local on the daemon's
    host: `poold token create --local --role admin --user NAME`. A join token is what a new
    node's agent registers with (its join_token); the agent then makes its own credential.
    """
    try:
        expires_in_s = None if expires is None else int(TypeAdapter(DurationS).validate_python(expires))
    except ValidationError:
        raise click.BadParameter(f"not a duration: {expires!r} (90d, 12h, 30m, or seconds)", param_hint="--expires") from None
    request = {"role": role, "user": user, "expires_in_s": expires_in_s, "uses": uses, "note": note}
    with _tokens(ctx, local, config_path) as api:
        issued = api.create_token({key: value for key, value in request.items() if value is not None})
    if ctx.obj["output"] == "json":
        emit_json(issued)
        return
    click.echo(issued["token"])
    whom = f"{issued['role']} {issued['user']}" if issued.get("user") else f"join, {issued['uses_left']} use(s)"
    click.echo(f"token {issued['id']} ({whom}), valid until {when(issued['expires_at'])} UTC; shown this once", err=True)


@token.command(name="list")
@click.option("--all", "include_ended", is_flag=True, help="Also revoked, expired and used-up tokens.")
@click.option("--node", shell_complete=node_names, help="Only this node's credentials.")
@local_option
@config_option
@click.pass_context
def list_tokens(ctx: click.Context, include_ended: bool, node: str | None, local: bool, config_path: str | None) -> None:
    """List tokens, newest first: never their secrets. A node's credential (role agent) shows
    its node and the machine it joined from."""
    with _tokens(ctx, local, config_path) as api:
        rows = api.tokens(node, include_ended)
    if ctx.obj["output"] == "json":
        emit_json(rows)
        return
    emit_table(
        ["ID", "ROLE", "STATE", "USER/NODE", "MACHINE", "USES LEFT", "EXPIRES", "CREATED BY", "NOTE"],
        [[t["id"], t["role"], t["state"], t.get("user") or t.get("node"), (t.get("machine_id") or "")[:12] or None,
          t.get("uses_left"), when(t.get("expires_at")) if t.get("expires_at") else "never", t["created_by"], t.get("note") or None]
         for t in rows],
    )


@token.command()
@click.argument("token_ids", nargs=-1)
@click.option("--node", shell_complete=node_names, help="Revoke this node's credential: its agent is refused from then on, and its name may join again.")
@local_option
@config_option
@click.pass_context
def revoke(ctx: click.Context, token_ids: tuple[str, ...], node: str | None, local: bool, config_path: str | None) -> None:
    """Revoke tokens by id (the `pld_<id>_` part), or a node's credential with --node.

    Through the API a revoke takes effect at once on that daemon, and on others sharing its
    store within their auth.cache_s; with --local, everywhere within auth.cache_s.
    """
    if not token_ids and not node:
        raise click.UsageError("name the tokens to revoke, or --node NAME")
    with _tokens(ctx, local, config_path) as api:
        ids = list(token_ids) + ([t["id"] for t in api.tokens(node) if t["role"] == "agent"] if node else [])
        if node and len(ids) == len(token_ids):
            raise ClientError(f"node {node} has no valid credential")
        revoked = [api.revoke_token(token_id) for token_id in ids]
    if ctx.obj["output"] == "json":
        emit_json(revoked)
        return
    for row in revoked:
        whom = row.get("user") or row.get("node")
        click.echo(f"token {row['id']} ({row['role']}{' ' + whom if whom else ''}) revoked")


COMMANDS = [token]
