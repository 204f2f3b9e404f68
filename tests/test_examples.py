"""Each example job lands, on the demo site, on the chip its accept list and the shipped prices
make cheapest per unit of work (arithmetic in each example's header)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.inventory import collect, load_collectors
from poold.db.session import transaction
from poold.demo import EXAMPLES_DIR, SITE
from poold.jobspec import parse_job_file
from poold.scheduler.loop import run_pass
from poold.services import jobs, nodes
from poold.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]

# file -> (node, model, devices, MIG slice?)
EXPECTED = {
    "any-family.toml": ("ascend", "910B", 1, False),
    "ascend-npu.toml": ("ascend", "910B", 2, False),
    "eval-fastest.toml": ("hgx-h100", "H100", 1, False),
    "fpga-u250.toml": ("alveo", "U250", 1, False),
    "half-gpu.toml": ("l4", "L4", 1, False),
    "inference-l4.toml": ("l4", "L4", 1, False),
    "llm-finetune.toml": ("hgx-h100", "H100", 4, False),
    "notebook-mig.toml": ("hgx-h100", "H100", 1, True),
}


@pytest.fixture(scope="module")
def site_inventories():
    return {node: collect(load_collectors(fake=fixture)) for node, fixture in SITE}


def test_every_example_is_expected():
    assert sorted(path.name for path in EXAMPLES_DIR.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_lands_where_cost_per_work_says(pool, site_inventories, tmp_path, name):
    settings = load_settings(ROOT / "config" / "poold.toml", env={"POOLD_STATE_DIR": str(tmp_path)})
    with transaction(pool.factory) as session:
        for node, inventory in site_inventories.items():
            nodes.register(session, node, inventory.host, inventory.devices, "test")
        job_id = jobs.submit(session, parse_job_file(EXAMPLES_DIR / name)).id
    assert run_pass(pool.factory, settings).placed == [job_id]
    node, model, count, mig = EXPECTED[name]
    with pool.factory() as session:
        job = jobs.get_job(session, job_id)
        assert job.node.name == node, job.reason
        assert [a.device.model for a in job.allocations] == [model] * count
        assert all(a.device.uuid.startswith("MIG-") == mig for a in job.allocations)
