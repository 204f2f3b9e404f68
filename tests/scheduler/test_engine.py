"""Placement decisions over an in-memory view: filters, grouping, scores. Arithmetic in comments."""

from __future__ import annotations

import numpy as np
import pytest

from poold.scheduler.engine import Engine, Placement, Unplaceable
from poold.scheduler.pool import Holding
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack
from tests.builders import job, make_node, make_pool

STACK = build_stack()


def place(spec, pool):
    return Engine(pool, STACK).place(PlacementRequest.from_spec(1, spec))


def decide(settings, spec, *builders):
    pool = make_pool(settings, *builders)
    return place(spec, pool), pool


def hold(pool, node: int, index: int, share: float, job_id: int = 99) -> None:
    """Let job ``job_id`` hold ``share`` of GPU ``index`` of node slot ``node``."""
    slot = next(d for d in pool.devices_of(node) if pool.dev_index[d] == index and pool.dev_profile[d] < 0)
    pool.apply(Holding(job_id, node, (slot,), share, (0,), 0.0, 0))


def names(pool, decision):
    return pool.node_name[decision.chosen.node], {pool.model_name(d) for d in decision.chosen.devices}


def site():
    return (
        make_node("hgx").gpus(8, "H100", nvlink=18).mig(0, ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]),
        make_node("a100").gpus(4, "A100", nvlink=12),
        make_node("l4").gpus(2, "L4"),
        make_node("ascend").npus(8),
        make_node("alveo").fpgas(2),
    )


@pytest.mark.parametrize(
    ("resources", "node", "model"),
    [
        # H100 4.00/2.5 = 1.60 per unit vs A100 2.20/1.0 = 2.20 -> H100
        ({"count": 4, "interconnect": "nvlink", "accept": [{"model": "H100", "speed": 2.5}, {"model": "A100", "speed": 1.0}]}, "hgx", "H100"),
        # H100 4.00/1.5 = 2.67 vs A100 2.20/1.0 = 2.20 -> A100
        ({"count": 2, "accept": [{"model": "H100", "speed": 1.5}, {"model": "A100", "speed": 1.0}]}, "a100", "A100"),
        # L4 0.80/1 = 0.80 vs A100 2.20/2 = 1.10 -> L4
        ({"memory_per_device": "16GiB", "accept": [{"model": "L4", "speed": 1.0}, {"model": "A100", "speed": 2.0}]}, "l4", "L4"),
        # 40 GiB rules out the L4 (22.5 GiB): A100 2.20 per unit
        ({"memory_per_device": "40GiB", "accept": [{"model": "L4", "speed": 1.0}, {"model": "A100", "speed": 2.0}]}, "a100", "A100"),
        # objective time: H100 speed 2.5 beats A100 1.0 whatever the price
        ({"objective": "time", "accept": [{"model": "A100", "speed": 1.0}, {"model": "H100", "speed": 2.5}]}, "hgx", "H100"),
        # no accept list: every GPU at speed 1, cheapest is the L4 at 0.80
        ({}, "l4", "L4"),
        # kind any across families: 910B 1.60/1.0 = 1.60 vs A100 2.20/1.2 = 1.83 -> 910B
        ({"kind": "any", "accept": [{"model": "910B", "speed": 1.0}, {"model": "A100", "speed": 1.2}]}, "ascend", "910B"),
        ({"kind": "npu", "count": 2}, "ascend", "910B"),
        ({"kind": "fpga", "fpga_shell": "xilinx_u250_gen3x16_xdma_shell_4_1"}, "alveo", "U250"),
        # compute capability 9.0 leaves only H100s
        ({"compute_capability": "9.0"}, "hgx", "H100"),
    ],
)
def test_picks_cheapest_per_unit_of_work(settings, resources, node, model):
    decision, pool = decide(settings, job(**resources), *site())
    assert isinstance(decision, Placement), decision.reason
    assert names(pool, decision) == (node, {model})
    assert len(decision.chosen.devices) == resources.get("count", 1)


def test_mig_profile_gets_a_slice_of_that_profile_and_a_slice_costs_its_fraction(settings):
    decision, pool = decide(settings, job(mig_profile="1g.10gb"), *site())
    assert isinstance(decision, Placement)
    [device] = decision.chosen.devices
    assert pool.dev_uuid[device].startswith("MIG-") and pool.profile_name(device) == "1g.10gb"
    # 1 compute slice of 7 of a 4.00/h H100: 4.00 x 1/7 = 0.571
    assert decision.chosen.price_per_hour == pytest.approx(4.0 / 7)


def test_jobs_without_profile_never_get_slices_or_the_split_gpu(settings):
    node = make_node("hgx").gpus(2, "H100").mig(0, ["7g.80gb"])
    decision, _ = decide(settings, job(count=2), node)
    assert isinstance(decision, Unplaceable)
    assert "split_into_slices" in decision.rejections.counts
    assert "mig_slice_not_asked" in decision.rejections.counts


def test_nvlink_interconnect_needs_every_pair_linked(settings):
    decision, _ = decide(settings, job(count=2, interconnect="nvlink"), make_node("pcie").gpus(4, "L4"))
    assert isinstance(decision, Unplaceable)
    assert "no_nvlink" in decision.reason


def test_multi_gpu_set_prefers_one_numa_node(settings):
    # 8 GPUs all on NVLink, NUMA 0 for 0-3 and 1 for 4-7: a 4-GPU job takes one NUMA half.
    decision, pool = decide(settings, job(count=4), make_node("hgx").gpus(8, "H100", nvlink=18))
    assert isinstance(decision, Placement)
    assert len({int(pool.dev_numa[d]) for d in decision.chosen.devices}) == 1


def test_fractional_share_best_fit_fills_the_half_used_gpu(settings):
    pool = make_pool(settings, make_node("l4").gpus(2, "L4"))
    hold(pool, 0, 1, 0.5)  # GPU 1 already half used
    decision = place(job(share=0.5), pool)
    assert isinstance(decision, Placement)
    # best fit within the node: GPU 1 is full after (1.0 used), GPU 0 half (0.5): GPU 1
    assert pool.dev_index[decision.chosen.devices[0]] == 1
    assert decision.chosen.price_per_hour == pytest.approx(0.4)  # 0.80 x 0.5


def test_whole_device_job_does_not_take_a_partly_used_gpu(settings):
    pool = make_pool(settings, make_node("l4").gpus(1, "L4"))
    hold(pool, 0, 0, 0.25)
    decision = place(job(), pool)
    assert isinstance(decision, Unplaceable)
    assert decision.rejections.counts == {"device_busy": 1}


def test_whole_device_jobs_pack_onto_busy_nodes(settings):
    pool = make_pool(settings, make_node("a").gpus(2, "A100"), make_node("b").gpus(2, "A100"))
    hold(pool, 1, 0, 1.0)
    decision = place(job(), pool)
    # best fit: node a -> 1/2 of its GPUs in use after; node b -> 2/2
    assert pool.node_name[decision.chosen.node] == "b"


@pytest.mark.parametrize(
    ("resources", "code"),
    [
        ({"count": 8, "accept": [{"model": "A100"}]}, "too_few_devices"),
        ({"memory_per_device": "100GiB"}, "insufficient_memory"),
        ({"cpu_cores": 1000}, "insufficient_cpu"),
        ({"host_memory": "10TiB"}, "insufficient_host_memory"),
        ({"max_price_per_hour": 0.5, "accept": [{"model": "A100"}]}, "too_expensive"),
        ({"kind": "fpga", "fpga_shell": "xilinx_u55c_gen3x16_xdma_base_3"}, "wrong_fpga_shell"),
        ({"accept": [{"model": "B200"}]}, "model_not_accepted"),
        ({"mig_profile": "4g.40gb"}, "not_a_mig_slice"),
    ],
)
def test_a_job_that_fits_nowhere_says_why(settings, resources, code):
    decision, _ = decide(settings, job(**resources), *site())
    assert isinstance(decision, Unplaceable)
    assert code in decision.rejections.counts
    assert code in decision.reason


def test_unhealthy_and_drained_and_down_are_skipped(settings):
    sick = make_node("sick").gpus(1, "L4", health="unhealthy")
    drained, down = make_node("drained").gpus(1, "L4"), make_node("down").gpus(1, "L4")
    pool = make_pool(settings, sick, drained, down)
    pool.node_drained[1] = True
    pool.node_ready[2] = False
    decision = place(job(), pool)
    assert isinstance(decision, Unplaceable)
    assert decision.rejections.counts == {"device_unhealthy": 1, "node_drained": 1, "node_lost": 1}
    assert "XID 79" in decision.reason


def test_stack_holds_every_plugin_once():
    names = [p.name for group in (STACK.node_filters, STACK.device_filters, STACK.candidate_filters, STACK.scorers) for p in group]
    assert len(names) == len(set(names))
    assert {"node_ready", "node_resources", "device_kind", "accept_list", "device_health", "mig_profile", "device_free",
            "device_memory", "compute_capability", "fpga_shell", "interconnect", "max_price",
            "cost_per_work", "speed", "best_fit", "locality", "fragmentation", "first_fit", "sum_of_squares"} == set(names)
    for objective in ("cost", "time", "pack"):
        assert set(STACK.weights(objective)) == {s.name for s in STACK.scorers}


def test_a_choice_keeps_its_own_scores_not_the_decisions_arrays(settings):
    # A pass keeps every placement it makes until it commits them: a choice that held on to its
    # decision's arrays (a row per candidate and scorer: 5,000 units x 7 scorers x 8 bytes,
    # twice, per placement over 5,000 nodes) made the scale pass take 24 s instead of 16 s.
    # What a choice keeps for its scores is one value per scorer.
    pool = make_pool(settings, *(make_node(f"n{i}").gpus(8, "H100") for i in range(30)))
    decision = place(job(count=1, accept=[{"model": "H100"}]), pool)
    assert isinstance(decision, Placement)
    for choice in (decision.chosen, decision.runner_up):
        if choice is None:
            continue
        kept = [cell.cell_contents for cell in choice.make_parts.__closure__ or ()]
        arrays = [value for value in kept if isinstance(value, np.ndarray)]
        arrays += [v for value in kept if isinstance(value, list) for v in value if isinstance(v, np.ndarray)]
        assert all(array.size <= len(STACK.scorers) for array in arrays), [array.shape for array in arrays]
        assert set(choice.parts) == {scorer.name for scorer in STACK.scorers}
