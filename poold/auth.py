"""Bearer tokens checked on every request, from memory wherever possible.

Thousands of heartbeats a second are answered from memory (``poold.telemetry``); checking
their tokens must not cost each a round trip to the store. :class:`Authenticator` keeps every
token it verified for ``auth.cache_s`` seconds (its row: digest, role, user or node, expiry),
so a request whose token is in memory costs one SHA-256 of the secret and a comparison; a
token not seen yet, or seen longer ago, is read from the store again (in a worker thread).
The tokens in memory are read again together every ``auth.cache_s / 2`` (:meth:`revalidate`,
a periodic job, one query per 1,000 tokens), so that a node heartbeating every 10 s never
waits for the store for its token, while a revoke elsewhere still reaches it in time.
Tokens that fail are not kept: each try reads the store.

A token revoked through this daemon is dropped at once. Several daemons may share one
store: a token revoked through another (or with ``poold token revoke --local``) stops
working here when its time in memory is over, within ``auth.cache_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from poold.db.ids import among
from poold.db.models import TokenModel
from poold.db.session import reading
from poold.services import Unauthorized, tokens
from poold.services.tokens import Principal
from poold_common.tokens import split_token

REVALIDATE_CHUNK = 1000  # token ids per query (one IN list every store takes)


class Authenticator:
    """``clock``: seconds, monotonic (tests pass their own)."""

    def __init__(self, factory: sessionmaker[Session], cache_s: float, clock: Callable[[], float] = time.monotonic):
        self.factory, self.cache_s, self.clock = factory, cache_s, clock
        self._known: dict[str, tuple[TokenModel, float]] = {}  # id -> (row, clock() when it was read)
        self._lock = threading.Lock()

    def from_memory(self, token: str) -> Principal | None:
        """Whom ``token`` speaks for, from memory; None when it must be read from the store.
        :class:`Unauthorized` for a token that is not one, or is not valid as remembered."""
        token_id, secret = _parts(token)
        known = self._known.get(token_id)
        if known is None or self.clock() - known[1] > self.cache_s:
            return None
        return tokens.check(known[0], secret)

    def from_store(self, token: str) -> Principal:
        """Whom ``token`` speaks for, read from the store (and kept); :class:`Unauthorized` if nobody."""
        token_id, secret = _parts(token)
        read_at = self.clock()
        with reading(self.factory) as session:
            row = tokens.get(session, token_id)
        principal = tokens.check(row, secret)
        with self._lock:
            self._known[token_id] = (row, read_at)  # type: ignore[assignment] - check() refused None
        return principal

    def remember(self, row: TokenModel) -> None:
        """Keep ``row``, a token this daemon has just written (a node's credential, at its
        join), as if read from the store now: its agent's first heartbeat is checked from
        memory. (Thousands of nodes joining at once would otherwise each cost a read.)"""
        with self._lock:
            self._known[row.id] = (row, self.clock())

    def revalidate(self) -> None:
        """Ask the store which tokens in memory are still unrevoked, and keep those for another
        ``cache_s``; the others (revoked elsewhere, or gone) are dropped, so their next use
        reads the store and fails. Of a token's row only ``revoked_at`` ever changes (expiry
        is checked at each use from the row kept), so only ids are read: at 5,000 nodes this
        runs every few seconds."""
        with self._lock:
            known = list(self._known)
        for start in range(0, len(known), REVALIDATE_CHUNK):
            chunk = known[start : start + REVALIDATE_CHUNK]
            read_at = self.clock()
            with reading(self.factory) as session:
                valid = set(session.scalars(select(TokenModel.id).where(among(TokenModel.id, chunk), TokenModel.revoked_at.is_(None))))
            with self._lock:
                for token_id in chunk:
                    kept = self._known.get(token_id)
                    if kept is None:
                        continue  # forgotten meanwhile (revoked here): it must not come back
                    if token_id in valid:
                        self._known[token_id] = (kept[0], read_at)
                    else:
                        del self._known[token_id]

    def forget(self, token_id: str) -> None:
        """Drop a token (revoked here): its next use is checked in the store."""
        with self._lock:
            self._known.pop(token_id, None)


def _parts(token: str) -> tuple[str, str]:
    parts = split_token(token)
    if parts is None:
        raise Unauthorized("not a poold token (pld_...): make one with `poold token create`", field="Authorization")
    return parts
