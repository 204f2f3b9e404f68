"""A live demo pool for the CLI's tests: a daemon and five agents on fake devices (the demo
site, poold/demo.py) whose jobs really run; one pool per test module."""

from __future__ import annotations

import os

import pytest

from poold import demo


@pytest.fixture(scope="module")
def demo_pool(tmp_path_factory):
    # The daemon takes its settings from the environment: a utilisation sample every second.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POOLD_ACCOUNTING__SAMPLE_S", "1")
        started = demo.start_pool(tmp_path_factory.mktemp("demo"), say=lambda text: None)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def env(demo_pool):
    """What a `poold` command needs to reach the pool as its admin, and nothing from this machine's config."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_") and not key.startswith("_POOLD")}
    return {**clean, "POOLD_URL": demo_pool.url, "POOLD_TOKEN": demo_pool.tokens.admin, "XDG_CONFIG_HOME": "/nonexistent"}
