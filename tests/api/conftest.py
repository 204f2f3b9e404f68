"""The live API app over the store (both backends), with the scheduler run on every wake."""

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
