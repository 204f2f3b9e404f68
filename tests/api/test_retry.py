"""A transaction that loses a race in the store is run again; the caller never sees a 500."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from poold.api import retry
from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db.session import is_retryable, make_engine
from poold.services import nodes


class _Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


def _error(message: str, sqlstate: str | None = None) -> OperationalError:
    return OperationalError("UPDATE nodes ...", {}, _Orig(message, sqlstate))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_error("deadlock detected", "40P01"), True),
        (_error("could not serialize access", "40001"), True),
        (_error("database is locked"), True),
        (_error("relation does not exist", "42P01"), False),
        (ValueError("not a store error"), False),
    ],
)
def test_which_store_errors_are_retried(error, expected):
    assert is_retryable(error) is expected


def test_a_real_postgres_deadlock_is_recognised(postgres):
    """Two transactions lock two rows in opposite orders; PostgreSQL fails one of them."""
    engine = make_engine(postgres.create_database())
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id int PRIMARY KEY, v int)"))
        connection.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))
    errors: list[BaseException] = []
    both_hold_one = threading.Barrier(2)

    def worker(first: int, second: int) -> None:
        try:
            with engine.begin() as connection:
                connection.execute(text("UPDATE t SET v = v + 1 WHERE id = :id"), {"id": first})
                both_hold_one.wait()
                connection.execute(text("UPDATE t SET v = v + 1 WHERE id = :id"), {"id": second})
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    engine.dispose()
    assert len(errors) == 1 and is_retryable(errors[0]), errors


def test_a_route_that_loses_a_race_is_run_again(api, monkeypatch):
    real, calls = nodes.list_nodes, []

    def flaky(session):
        calls.append(1)
        if len(calls) < 3:
            raise _error("deadlock detected", "40P01")
        return real(session)

    monkeypatch.setattr(nodes, "list_nodes", flaky)
    monkeypatch.setattr(retry, "BASE_DELAY_S", 0.0)
    response = api.get("/api/v1/nodes")
    assert response.status_code == 200 and len(calls) == 3


def test_a_race_lost_every_time_is_a_503_not_a_500(api, monkeypatch):
    def always(session):
        raise _error("could not serialize access", "40001")

    monkeypatch.setattr(nodes, "list_nodes", always)
    monkeypatch.setattr(retry, "BASE_DELAY_S", 0.0)
    response = api.get("/api/v1/nodes")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "try again" in response.json()["detail"]


def test_other_errors_are_not_retried(api, monkeypatch):
    calls = []

    def broken(session):
        calls.append(1)
        raise _error("relation does not exist", "42P01")

    monkeypatch.setattr(nodes, "list_nodes", broken)
    with pytest.raises(OperationalError):
        api.get("/api/v1/nodes")
    assert len(calls) == 1
