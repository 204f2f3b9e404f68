"""The API over both stores, with the scheduling pass run at once wherever the daemon would wake it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from poold.api.app import create_app
from poold.api.context import AppContext


@pytest.fixture
def api(pool, settings):
    ctx = AppContext.build(settings, pool.factory)
    ctx.wake_scheduler = ctx.scheduler.run_pass
    with TestClient(create_app(ctx)) as client:
        yield client
