"""The API over both stores, with the scheduling pass run at once wherever the daemon would
wake it, and each request carrying the token its real caller would (``tests.auth``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from poold.api.app import create_app
from poold.api.context import AppContext
from tests.auth import authorised


@pytest.fixture
def ctx(pool, settings):
    context = AppContext.build(settings, pool.factory)
    context.wake_scheduler = context.scheduler.run_pass
    return context


@pytest.fixture
def api(ctx, pool):
    with authorised(TestClient(create_app(ctx)), pool.factory) as client:
        yield client
