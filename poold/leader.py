"""Which daemon runs the periodic work: one replica at a time, and another when it dies.

Any replica serves the API; the scheduling pass and the lost-node check run on the one that
holds the **leader lock**:

- on PostgreSQL, a session-level advisory lock (``pg_try_advisory_lock``) held on a
  connection of its own. The lock lives exactly as long as that connection: when the
  replica dies (or its connection drops) PostgreSQL releases it, and the next replica that
  tries takes it, within one tick of its periodic jobs;
- on SQLite (one host by nature), an exclusive ``flock`` on ``<database file>.leader``, released by the kernel when the process dies.

Each periodic job asks :meth:`Leadership.held` before it runs. Correctness never depends on
it (placements are re-checked under lock at commit); it keeps replicas from doing the same
work twice and racing for the same rows.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# The advisory lock's key: any fixed 64-bit number; this one spells "poold" in ASCII.
ADVISORY_KEY = 0x706F6F6C64


class Leadership:
    """Whether this daemon holds the leader lock of ``engine``'s store; see the module docstring."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._file: int | None = None
        self._leading = False

    def held(self) -> bool:
        """True if this daemon leads now: keeps the lock it holds (checking it still does), or
        tries once to take it."""
        with self._lock:
            leading = self._check() if self._leading else self._acquire()
            if leading != self._leading:
                log.info("this daemon %s the periodic work", "now runs" if leading else "no longer runs")
            self._leading = leading
            return leading

    @property
    def leading(self) -> bool:
        """Whether this daemon led at its last :meth:`held` (read without trying the lock)."""
        return self._leading

    def release(self) -> None:
        with self._lock:
            self._drop()
            self._leading = False

    def _acquire(self) -> bool:
        if self.engine.dialect.name == "postgresql":
            try:
                self._connection = self._connection or self.engine.connect()
                taken = bool(self._connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar())
                self._connection.commit()  # end the implicit transaction; the session-level lock stays
            except Exception:  # noqa: BLE001 - the store is away: not leading, try again next tick
                log.warning("could not try the leader lock", exc_info=True)
                self._drop()
                return False
            if not taken:
                self._drop()  # give the connection back; try again next tick
            return taken
        path = _lock_path(self.engine)
        if path is None:
            return True  # an in-memory database belongs to this process alone
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            return False
        self._file = descriptor
        return True

    def _check(self) -> bool:
        if self._connection is None:
            return self._file is not None or _lock_path(self.engine) is None
        try:
            self._connection.execute(text("SELECT 1")).scalar()
            self._connection.commit()
            return True
        except Exception:  # noqa: BLE001 - the connection (and with it the lock) is gone
            log.warning("lost the store connection that held the leader lock", exc_info=True)
            self._drop()
            return self._acquire()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                # Close the DBAPI connection itself (not back to the pool): that releases a
                # session-level advisory lock it holds.
                self._connection.invalidate()
                self._connection.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._connection = None
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _lock_path(engine: Engine) -> Path | None:
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + ".leader")
