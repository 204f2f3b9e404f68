"""Cgroups for tests: a parent of each test's own, removed at its end, and a skip saying why
where this machine cannot give jobs cgroups (not root, no hierarchy with cpu and memory)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import cgroups
from agents.cgroups import CgroupDriver, JobCgroup


def driver_or_skip(parent: str) -> CgroupDriver:
    driver, why = cgroups.detect(parent)
    if driver is None:
        pytest.skip(f"no cgroups for jobs on this machine: {why}")
    return driver


def parent_dirs(parent: str) -> list[Path]:
    """Every directory ``parent`` may have: one per v1 controller, one per v2 mount."""
    v2, v1 = cgroups.cgroup_mounts(cgroups.MOUNTS.read_text())
    return [mount / parent for mount in [*v2, *v1.values()]]


def remove_parent(parent: str) -> None:
    """Empty and remove the test's job cgroups, then its parent."""
    for directory in parent_dirs(parent):
        if not directory.is_dir():
            continue
        for child in sorted((d for d in directory.iterdir() if d.is_dir()), reverse=True):
            job = JobCgroup([child])
            job.kill()
            job.remove()
        directory.rmdir()


def fresh_parent() -> Iterator[str]:
    name = f"poold-test-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        remove_parent(name)
