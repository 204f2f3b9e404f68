"""Each example job lands, on the demo site, on the chip its accept list and the shipped prices
make cheapest per unit of work (arithmetic in each example's header)."""

from __future__ import annotations

import pytest

from agents.inventory import collect, load_collectors
from poold.db.session import transaction
from poold.demo import SITE
from poold.jobspec import parse_job_file
from poold.scheduler.loop import Scheduler
from poold.services import jobs, nodes
from poold.settings import load_settings
from poold.shipped import shipped_path

EXAMPLES_DIR = shipped_path("config", "examples")

# file -> (node, model, devices, MIG slice?)
EXPECTED = {
    "any-family.toml": ("ascend", "910B", 1, False),
    "cpu-preprocess.toml": ("alveo", None, 0, False),
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


def place_alone(pool, site_inventories, tmp_path, spec):
    """Place ``spec`` on an otherwise empty demo site; return (node, [(model, device uuid)], reason)."""
    settings = load_settings(shipped_path("config", "poold.toml"), env={"POOLD_STATE_DIR": str(tmp_path)})
    with transaction(pool.factory) as session:
        for node, inventory in site_inventories.items():
            nodes.register(session, node, inventory.host, inventory.devices, "test")
        job_id = jobs.submit(session, spec).id
    assert Scheduler(pool.factory, settings).run_pass().placed == [job_id]
    with pool.factory() as session:
        job = jobs.get_job(session, job_id)
        return job.node.name, [(a.device.model, a.device.uuid) for a in job.allocations if a.device is not None], job.reason


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_lands_where_cost_per_work_says(pool, site_inventories, tmp_path, name):
    path = EXAMPLES_DIR / name
    placed_on, devices, reason = place_alone(pool, site_inventories, tmp_path, parse_job_file(path))
    node, model, count, mig = EXPECTED[name]
    assert placed_on == node, reason
    assert [m for m, _ in devices] == [model] * count
    assert all(uuid.startswith("MIG-") == mig for _, uuid in devices)
    lands = next(line for line in path.read_text().splitlines() if line.startswith("# Where it lands in the demo pool:"))
    assert node in lands  # the header names the same node


def test_the_time_example_under_objective_cost_would_take_the_l4(pool, site_inventories, tmp_path):
    # eval-fastest with objective "cost": L4 0.80 / 1 = 0.80 < A100 2.20 / 2 = 1.10 < H100 4.00 / 3 = 1.33
    spec = parse_job_file(EXAMPLES_DIR / "eval-fastest.toml")
    spec.resources.objective = "cost"
    _, devices, _ = place_alone(pool, site_inventories, tmp_path, spec)
    assert [m for m, _ in devices] == ["L4"]
