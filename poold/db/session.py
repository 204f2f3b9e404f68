"""Engines and sessions for SQLite (WAL, the default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from poold.db import StoreError

WRITE_OPTION = "poold_write"

# PostgreSQL's answers that mean "this transaction lost a race; run it again": serialization
# failure, deadlock detected (one of the two is chosen to fail), lock not available.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def open_store(url: str) -> Engine:
    """An engine for ``url`` that has answered once; :class:`StoreError` (one line) otherwise."""
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    except (DBAPIError, OSError) as exc:
        engine.dispose()
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot open the store {where}: {lines[0] if lines else exc.__class__.__name__}") from None
    return engine


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite files get WAL mode, foreign keys and a busy timeout.

    Raises :class:`StoreError` for a URL that does not parse or names a driver not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not echoed: the text may hold a password.
        raise StoreError("the database URL does not parse: write it as dialect[+driver]://user:password@host/database") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001 - DBAPI types
            # pysqlite would BEGIN only before the first write, so a read-check-write
            # transaction would not be atomic; we emit BEGIN ourselves (below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):  # noqa: ANN001
            # Write transactions take SQLite's write lock up front, the way row locks
            # (SELECT ... FOR UPDATE) serialise them on PostgreSQL.
            immediate = connection.get_execution_options().get(WRITE_OPTION)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// means psycopg 3 here, the driver the postgres extra installs.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot open the store {parsed.render_as_string(hide_password=True)}: {exc}") from None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# SQLite takes one writer at a time; threads of one daemon wait for each other here, in a
# queue, instead of in SQLite's busy handler, which polls with growing sleeps.
_SQLITE_WRITERS: dict[str, threading.Lock] = {}


def _writer_lock(engine: Engine) -> threading.Lock | contextlib.nullcontext:
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    return _SQLITE_WRITERS.setdefault(str(engine.url), threading.Lock())


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back whole on any error.

    On SQLite it holds the database's write lock from the start (one writer at a time).
    """
    with _writer_lock(factory.kw["bind"]), factory() as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only unit of work: one consistent view, and on SQLite no write lock (readers
    never wait for writers in WAL mode)."""
    with factory() as session, session.begin():
        yield session


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a store error that running the same transaction again can cure: a
    deadlock or serialization failure on PostgreSQL, a busy database on SQLite."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database table is locked" in message
