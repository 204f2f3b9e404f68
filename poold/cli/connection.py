"""Where the CLI finds the daemon and what it shows it: the API's URL, a token, the CA.

Each comes from its flag or variable (``--url``/``$POOLD_URL``, ``$POOLD_TOKEN``,
``--ca-file``/``$POOLD_CA_FILE``), else from the user's client config,
``$XDG_CONFIG_HOME/poold/client.toml`` (``~/.config/poold/client.toml``)::

    url = "https://poold.example.org:8470"
    token = "pld_..."              # poold token create; keep the file mode 0600
    ca_file = "/etc/poold/tls/ca.pem"

A token is never a flag: command lines are visible to every user of the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from pydantic import BaseModel, ConfigDict, Field

from poold.client import DEFAULT_URL, PooldClient
from poold_common.config import load_model


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="the daemon's API")
    token: str | None = Field(default=None, description="a poold token (poold token create)")
    ca_file: Path | None = Field(default=None, description="the CA the daemon's certificate is verified against")


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "poold" / "client.toml"


def load_client_config() -> ClientConfig:
    """The user's client config; empty when there is none. ``SettingsError`` naming a bad key."""
    path = config_path()
    return load_model(ClientConfig, path if path.exists() else None, {}, prefix="POOLD_")


def connect(ctx: click.Context) -> PooldClient:
    """A client for the command: flags and variables first, then the user's client config."""
    return client_for(ctx.obj.get("url"), ctx.obj.get("ca_file"))


def client_for(url: str | None, ca_file: str | None, timeout: float = 10.0, need_token: bool = False) -> PooldClient | None:
    """A client for ``url`` and ``ca_file`` as given (else the client config's, else the
    defaults), with $POOLD_TOKEN (else the config's token); None when ``need_token`` and there
    is none."""
    config = load_client_config()
    token = os.environ.get("POOLD_TOKEN") or config.token
    if need_token and not token:
        return None
    return PooldClient(url or config.url or DEFAULT_URL, token=token, ca_file=ca_file or config.ca_file, timeout=timeout)
