"""What the benchmarks that start real daemons share: throwaway stores (SQLite in a temporary
directory, or a database made and dropped on a PostgreSQL server), and waiting for a daemon
to answer."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from poold.db import migrate
from poold.db.session import make_engine


@contextmanager
def throwaway_store(db: str | None, label: str) -> Iterator[tuple[Engine, str]]:
    """A fresh, migrated store and its backend's name: SQLite in a temporary directory when
    ``db`` is None, else a new database on the PostgreSQL server of URL ``db``, dropped at the
    end (``label`` names both)."""
    if db is None:
        with TemporaryDirectory(prefix=f"poold-{label}-") as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / f'{label}.db'}")
            migrate.upgrade(engine)
            try:
                yield engine, "sqlite"
            finally:
                engine.dispose()
        return
    url = make_url(db)
    admin = create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    name = f"poold_{label}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(url.set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(engine)
        yield engine, "postgresql"
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_answering(url: str, process: subprocess.Popen | None = None, log: Path | None = None, timeout_s: float = 60.0) -> None:
    """Until the daemon at ``url`` answers ``/healthz``; stops the benchmark if ``process``
    exits first (quoting the end of ``log``) or nothing answers in ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the daemon exited: {log.read_text()[-2000:] if log else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no answer from {url}/healthz within {timeout_s:.0f} s")
