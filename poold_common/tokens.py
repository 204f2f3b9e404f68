"""poold's bearer tokens, as both sides write and read them: ``pld_<id>_<secret>``.

The id (12 hex digits) is public: lists, revocations and logs name a token by it, and the
daemon looks the token up by it. The secret (43 URL-safe characters, 256 bits from
``secrets``) is shown once and never stored: the daemon keeps a SHA-256 digest of it, which
is enough for a secret this long (nobody can guess one, so there is nothing to slow down). An
agent makes its node's credential itself in this format before it joins
(``agents.credential``), which is why the format lives in this shared leaf.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal, get_args

PREFIX = "pld_"
IssuedRole = Literal["admin", "user", "join"]
"""The roles admins make tokens for (``poold token create``); a node's credential, role
``agent``, is made by its agent and taken at its join."""
ISSUED_ROLES: tuple[str, ...] = get_args(IssuedRole)
_TOKEN = re.compile(r"pld_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def make_token() -> str:
    """A new token: a random id and a random 256-bit secret."""
    return f"{PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def split_token(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token; None for anything else."""
    match = _TOKEN.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None
