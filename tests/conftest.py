"""Shared fixtures: the store on SQLite and PostgreSQL, settings, and an API client.

PostgreSQL cases run against $POOLD_TEST_PG_URL (default: the local server, user postgres).
Where no server answers they skip with a message, unless POOLD_TEST_REQUIRE_PG=1 (what
.ci/run sets), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from poold.db.models import Base
from poold.db.session import make_engine, make_sessionmaker, transaction
from poold.services.queues import sync_queues
from poold.settings import QueueSettings, Settings

PG_ADMIN_URL = os.environ.get("POOLD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("POOLD_TEST_REQUIRE_PG") == "1"


@dataclass
class Store:
    url: str
    engine: Engine
    factory: sessionmaker[Session]

    @property
    def backend(self) -> str:
        return self.engine.dialect.name


class PostgresServer:
    """Makes throwaway databases on the test server and drops them at the end."""

    def __init__(self, admin_url: str):
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"poold_test_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as connection:
            for name in self.created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer(PG_ADMIN_URL)
        with server.admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"
        if REQUIRE_PG:
            pytest.fail(message + " (POOLD_TEST_REQUIRE_PG=1 makes PostgreSQL cases mandatory)")
        pytest.skip(message)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def _pg_schema_url(postgres: PostgresServer) -> str:
    """One PostgreSQL database with the schema, emptied between tests."""
    url = postgres.create_database()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'poold.db'}"
    return request.getfixturevalue("_pg_schema_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    if engine.dialect.name == "sqlite":
        Base.metadata.create_all(engine)
    else:
        with engine.begin() as connection:
            tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    store = Store(db_url, engine, make_sessionmaker(engine))
    yield store
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        prices={"H100": 4.0, "A100": 2.2, "L4": 0.8, "910B": 1.6, "U250": 1.5},
        queues={"default": QueueSettings(), "interactive": QueueSettings(priority=10)},
    )


@pytest.fixture
def pool(store: Store, settings: Settings) -> Store:
    """The store with the settings' queues in it: ready for nodes and jobs."""
    with transaction(store.factory) as session:
        sync_queues(session, settings)
    return store
