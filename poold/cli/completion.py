"""Shell completion of job ids and node names, from the daemon.

click completes commands and options by itself (``eval "$(_POOLD_COMPLETE=bash_source poold)"``,
docs/operations.md); the functions here add the values only the daemon knows. Completion must
never get in the way: when the daemon cannot be reached, no token is set or the client config
is broken, they complete nothing, quietly and quickly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from poold.cli.connection import client_for
from poold.client import ClientError, PooldClient
from poold_common.config import SettingsError

RECENT_JOBS = 100
TIMEOUT_S = 2.0


def _ask(ctx: click.Context, question: Callable[[PooldClient], list[CompletionItem]]) -> list[CompletionItem]:
    """``question`` put to the daemon the command line names (``--url``/``--ca-file`` before the
    command, else $POOLD_URL, else the client config); nothing on any failure."""
    root = ctx.find_root().params
    try:
        client = client_for(root.get("url"), root.get("ca_file"), timeout=TIMEOUT_S, need_token=True)
        if client is None:
            return []
        with client:
            return question(client)
    except (ClientError, SettingsError, OSError, ValueError, KeyError):
        return []


def job_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The ids of the most recent jobs that start with what was typed, each with its name and state."""
    def question(client: PooldClient) -> list[CompletionItem]:
        return [CompletionItem(str(job["id"]), help=f"{job['name']} ({job['state']})")
                for job in client.jobs(limit=RECENT_JOBS) if str(job["id"]).startswith(incomplete)]
    return _ask(ctx, question)


def node_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The names of the pool's nodes that start with what was typed, each with its state."""
    def question(client: PooldClient) -> list[CompletionItem]:
        return [CompletionItem(node["name"], help=node["state"] + (" (drained)" if node["drained"] else ""))
                for node in client.nodes() if node["name"].startswith(incomplete)]
    return _ask(ctx, question)


def job_id_argument(**kwargs: Any):
    """The JOB_ID argument, completed with recent job ids."""
    return click.argument("job_id", type=int, shell_complete=job_ids, **kwargs)


def node_argument(**kwargs: Any):
    """The NODE argument, completed with node names."""
    return click.argument("node", shell_complete=node_names, **kwargs)
