"""Tokens: who may call the API, as admins make, list and revoke them (``poold token``), and
the credential a node's agent makes at its join.

Four roles:

- ``admin``: everything: what users do, on every job; drain, devices, tokens;
- ``user``: submit; see the pool and every job's summary; see the environment, read the log
  and cancel only their own jobs;
- ``agent``: one node's credential: register that node again, heartbeat, fetch its
  assignments, report and ship the logs of its jobs; nothing else;
- ``join``: register a new node, a limited number of times, and receive nothing else.

A token is valid while it is not revoked and not expired; a join token brings a node only
while it has uses left.
Requests check tokens through ``poold.auth.Authenticator``, which keeps verified ones in memory.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from poold.db.models import TokenModel, utcnow
from poold.services import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from poold_common.tokens import ISSUED_ROLES, make_token, split_token

DEFAULT_EXPIRY_S = {"admin": 90 * 86400, "user": 90 * 86400, "join": 3600}
MAX_EXPIRY_S = 10 * 365 * 86400
MAX_JOIN_USES = 100_000
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"


@dataclass(frozen=True)
class Principal:
    """Whom a valid token speaks for: an admin or user by name, a node's agent, a join token."""

    token_id: str
    role: str
    user: str | None = None
    node: str | None = None
    machine_id: str | None = None

    def __str__(self) -> str:
        if self.role == "agent":
            return f"the agent of node {self.node}"
        if self.role == "join":
            return f"join token {self.token_id}"
        return f"{self.role} {self.user}"


@dataclass
class Issued:
    """A token just made: its row, and the token itself, which is shown this once."""

    row: TokenModel
    token: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session, role: str, *, user: str | None = None, expires_in_s: int | None = None, uses: int | None = None,
    note: str = "", created_by: str = "",
) -> Issued:
    """A new ``admin``, ``user`` or ``join`` token. Admins and users have a name; a join token
    has ``uses`` (default 1). Every one expires: after ``expires_in_s``, by default 90 days
    (1 hour for a join token). Refused with 422 naming the field."""
    if role not in ISSUED_ROLES:
        raise Invalid(f"{role!r} is not a role tokens are made for (one of {', '.join(ISSUED_ROLES)}; "
                      "a node's credential comes from its join)", field="role")
    if role == "join":
        if user is not None:
            raise Invalid("a join token has no user", field="user")
        uses = 1 if uses is None else uses
        if not 1 <= uses <= MAX_JOIN_USES:
            raise Invalid(f"between 1 and {MAX_JOIN_USES}", field="uses")
    else:
        if not user:
            raise Invalid(f"an {role} token is made for a user: name one", field="user")
        if uses is not None:
            raise Invalid("only join tokens have uses", field="uses")
    expires_in_s = DEFAULT_EXPIRY_S[role] if expires_in_s is None else expires_in_s
    if not 1 <= expires_in_s <= MAX_EXPIRY_S:
        raise Invalid(f"between 1 s and {MAX_EXPIRY_S} s (10 years)", field="expires_in_s")
    token = make_token()
    token_id, secret = split_token(token)  # type: ignore[misc] - make_token's are well formed
    now = utcnow()
    row = TokenModel(id=token_id, secret_sha256=digest(secret), role=role, user_name=user, uses_left=uses, note=note,
                     created_by=created_by, created_at=now, expires_at=now + timedelta(seconds=expires_in_s))
    session.add(row)
    session.flush()
    return Issued(row, token)


def check(row: TokenModel | None, secret: str, now: datetime | None = None) -> Principal:
    """Whom ``row``'s token speaks for, when ``secret`` is its secret and it is still valid;
    :class:`Unauthorized` saying why not otherwise."""
    if row is None or not hmac.compare_digest(row.secret_sha256, digest(secret)):
        raise Unauthorized("not a valid token", field="Authorization")
    ensure_valid(row, now)
    return Principal(token_id=row.id, role=row.role, user=row.user_name, node=row.node, machine_id=row.machine_id)


def ensure_valid(row: TokenModel, now: datetime | None = None) -> None:
    """:class:`Unauthorized` when ``row``'s token was revoked or has expired. (A join token's
    uses are counted at the join itself, where sending a join again is answered as before.)"""
    now = now or utcnow()
    if row.revoked_at is not None:
        raise Unauthorized(f"token {row.id} was revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC", field="Authorization")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(f"token {row.id} expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC", field="Authorization")


def get(session: Session, token_id: str, *, lock: bool = False) -> TokenModel | None:
    query = select(TokenModel).where(TokenModel.id == token_id)
    return session.scalars(query.with_for_update() if lock else query).one_or_none()


def state_of(row: TokenModel, now: datetime | None = None) -> str:
    """``valid``, ``revoked``, ``expired`` or (a join token) ``used up``."""
    now = now or utcnow()
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "used up" if row.role == "join" and (row.uses_left or 0) <= 0 else "valid"


def list_tokens(session: Session, node: str | None = None, include_ended: bool = False) -> list[TokenModel]:
    """Tokens newest first (``node``: that node's credentials); without ``include_ended``, only valid ones."""
    query = select(TokenModel).order_by(TokenModel.created_at.desc(), TokenModel.id)
    if node is not None:
        query = query.where(TokenModel.node == node)
    rows = list(session.scalars(query))
    now = utcnow()
    return rows if include_ended else [row for row in rows if state_of(row, now) == "valid"]


def revoke(session: Session, token_id: str) -> TokenModel:
    row = get(session, token_id, lock=True)
    if row is None:
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is not None:
        raise Conflict(f"token {token_id} was already revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    row.revoked_at = utcnow()
    return row


def node_credential(session: Session, node: str) -> TokenModel | None:
    """The credential that holds ``node``'s name: its agent's, not revoked."""
    query = select(TokenModel).where(TokenModel.role == "agent", TokenModel.node == node, TokenModel.revoked_at.is_(None))
    return session.scalars(query.order_by(TokenModel.created_at.desc()).limit(1)).one_or_none()


class Joined(NamedTuple):
    """A new node's join: the join token it uses one use of, and the credential row made for it."""

    join_id: str
    credential: TokenModel


def check_register(session: Session, who: Principal, node: str, machine_id: str | None, credential: str | None) -> Joined | None:
    """May ``who`` register ``node`` from machine ``machine_id``? Its own agent may, from its
    machine; a join token may bring a node whose name no credential holds, and takes the
    credential its agent made (``credential``) as the node's. Sending the same join again (its
    answer was lost) is answered as before, using nothing.

    Returns, for a new join, the join token's id, which the caller counts one use of with
    :func:`use_join` as the last statement of its transaction, and the node's credential row
    (the daemon keeps it in memory: the agent's first heartbeat is checked without a read).
    Joins of different names run side by side (a pool of thousands joins at once); two joins
    of one name are taken one at a time (a lock on the name), so the second sees the first's
    credential."""
    if who.role == "agent":
        if who.node != node:
            raise Forbidden(f"{who} may not register node {node}", field="node")
        if machine_id is not None and who.machine_id is not None and machine_id != who.machine_id:
            raise Forbidden(f"node {node}'s credential belongs to machine {who.machine_id}; this is machine {machine_id}",
                            field="machine_id")
        return None
    if who.role != "join":
        raise Forbidden(f"{who} may not register nodes: that takes a join token (poold token create --role join) "
                        "or the node's own credential", field="node")
    lock_name(session, node)
    join = get(session, who.token_id)
    if join is None:
        raise Unauthorized(f"join token {who.token_id} is gone", field="Authorization")
    ensure_valid(join)  # again: it may have been revoked since it was verified
    parts = split_token(credential) if credential is not None else None
    held = node_credential(session, node)
    if held is not None:
        if parts is not None and held.id == parts[0] and hmac.compare_digest(held.secret_sha256, digest(parts[1])) \
                and held.machine_id == machine_id:
            return None
        raise Forbidden(
            f"node {node} already has a credential (token {held.id}, machine {held.machine_id}): only its agent may "
            f"register it. To give the name to another machine, an admin revokes it first (poold token revoke {held.id})",
            field="node",
        )
    if credential is None:
        raise Invalid("a join sends the credential the agent made for its node", field="credential")
    if parts is None:
        raise Invalid("not a poold token (pld_<12 hex digits>_<43 characters>)", field="credential")
    if machine_id is None:
        raise Invalid("a join names the agent's machine", field="machine_id")
    if (join.uses_left or 0) <= 0:
        raise Unauthorized(f"join token {join.id} is used up", field="Authorization")
    if get(session, parts[0]) is not None:
        raise Conflict(f"a token with id {parts[0]} exists: make the credential again", field="credential")
    row = TokenModel(id=parts[0], secret_sha256=digest(parts[1]), role="agent", user_name=None, node=node, machine_id=machine_id,
                     uses_left=None, note="", created_by=f"join token {join.id}", created_at=utcnow(), expires_at=None, revoked_at=None)
    session.add(row)
    return Joined(join.id, row)


def use_join(session: Session, token_id: str, now: datetime | None = None) -> None:
    """Count one use of join token ``token_id``, in one conditional statement: it never goes
    below zero, and a token revoked or expired meanwhile counts nothing (401, and the join's
    transaction is undone). Run last in the join's transaction: the token's row stays locked
    from here to the commit, so concurrent joins with one token wait for each other only
    that long."""
    now = now or utcnow()
    counted = session.execute(
        update(TokenModel)
        .where(TokenModel.id == token_id, TokenModel.uses_left > 0, TokenModel.revoked_at.is_(None),
               or_(TokenModel.expires_at.is_(None), TokenModel.expires_at > now))
        .values(uses_left=TokenModel.uses_left - 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if counted != 1:
        raise Unauthorized(f"join token {token_id} is used up, revoked or expired", field="Authorization")


def lock_name(session: Session, node: str) -> None:
    """Take joins of ``node`` one at a time until the transaction ends (PostgreSQL: an advisory
    lock on the name; SQLite takes every write transaction one at a time already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext("poold node " + node))))
