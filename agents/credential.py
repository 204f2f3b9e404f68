"""The node's credential: a token the agent makes itself and the daemon takes at its join.

Kept in ``state_dir/credential.json`` (mode 0600) with the node's name and the machine id.
At the first start there is none: the agent makes one (``poold_common.tokens.make_token``),
writes it down, and registers with the join token an admin gave it (``join_token``),
sending the credential; once the daemon has taken it (``joined``), it is the only token the
agent ever sends. Made before the join, as a kubelet makes its key before asking for a
certificate: a join whose answer was lost is sent again with the same credential, and the
daemon answers it as before.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agents.shim import atomic_write_json, read_json
from poold_common.tokens import make_token

FILE = "credential.json"


class CredentialError(Exception):
    """The state directory holds another node's credential; the message says what to do."""


class Credential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    machine_id: str
    token: str
    joined: bool = False


def load_or_make(state_dir: Path, node: str, machine_id: str) -> Credential:
    """The node's credential from ``state_dir``, or a new one (not yet joined), written down."""
    path = Path(state_dir) / FILE
    data = read_json(path)
    if data is None:
        credential = Credential(node=node, machine_id=machine_id, token=make_token())
        save(state_dir, credential)
        return credential
    credential = Credential.model_validate(data)
    if credential.node != node:
        raise CredentialError(
            f"{path} is node {credential.node}'s credential and this agent is node {node}: set node_name = "
            f"{credential.node!r}, or remove the file (and revoke the old credential) to join as {node} with a join token"
        )
    return credential


def save(state_dir: Path, credential: Credential) -> None:
    path = Path(state_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_json(path, credential.model_dump(), mode=0o600)
