"""Gangs over several nodes (``poold.scheduler.gang``): how a job is split into parts, which
nodes take them, and that a gang is placed whole or not at all."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings
from hypothesis import strategies as st

from poold.scheduler.engine import TOO_FEW_NODES, Engine, Placement, Unplaceable
from poold.scheduler.framework import EngineOptions
from poold.scheduler.gang import splits
from poold.scheduler.pool import Holding
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack
from poold.settings import Settings
from tests.builders import job, make_node, make_pool


def engine_over(settings: Settings, *builders) -> Engine:
    return Engine(make_pool(settings, *builders), build_stack(), EngineOptions(seed=7))


def request(**resources) -> PlacementRequest:
    return PlacementRequest.from_spec(1, job(**resources))


@pytest.fixture
def settings() -> Settings:
    return Settings()


# ---- splitting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_sizes", "resources", "expected"),
    [
        # nodes = 2, count = 8: one way, 2 parts of 8 (16 devices).
        ([8, 8], {"count": 8, "nodes": 2}, [(8, 2)]),
        # same_node = false, 16 over 8-GPU nodes: 16/1 = 16 > 8; 16/2 = 8 <= 8 -> 2x8, then 4x4, 8x2, 16x1.
        ([8, 8], {"count": 16, "same_node": False}, [(8, 2), (4, 4), (2, 8), (1, 16)]),
        # 12 over 8-GPU nodes: 12 and 12/2 = 6... 12/1 = 12 > 8, so 2x6 first, then 3x4, 4x3, 6x2, 12x1.
        ([8, 8], {"count": 12, "same_node": False}, [(6, 2), (4, 3), (3, 4), (2, 6), (1, 12)]),
        # 4 over 8-GPU nodes: one node holds it (4 <= 8): 1x4 first, then 2x2, 4x1.
        ([8], {"count": 4, "same_node": False}, [(4, 1), (2, 2), (1, 4)]),
        # The largest node counts: 8 over a 4-GPU and an 8-GPU node -> 1x8 first.
        ([4, 8], {"count": 8, "same_node": False}, [(8, 1), (4, 2), (2, 4), (1, 8)]),
        # 7 (prime) over 4-GPU nodes: 7 > 4, so 7 parts of 1 is the only way.
        ([4, 4], {"count": 7, "same_node": False}, [(1, 7)]),
    ],
)
def test_splits_fewest_equal_parts_first(settings, node_sizes, resources, expected):
    engine = engine_over(settings, *(make_node(f"n{i}").gpus(size, "H100") for i, size in enumerate(node_sizes)))
    assert splits(engine, request(**resources)) == expected


# ---- which nodes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "resources", "expected"),
    [
        # Two 8xH100 nodes and one 8xA100: 16 GPUs split 2x8; only the H100 pair can hold both
        # parts on one model (one A100 node is 1 < 2 parts).
        ([("a", 8, "H100", None), ("b", 8, "H100", None), ("c", 8, "A100", None)],
         {"count": 16, "same_node": False, "accept": [{"model": "H100"}, {"model": "A100"}]}, {"a", "b"}),
        # Networks: a and c on ib0, b on ib1: 2 parts must share ib0 -> a and c.
        ([("a", 8, "H100", "ib0"), ("b", 8, "H100", "ib1"), ("c", 8, "H100", "ib0")], {"count": 8, "nodes": 2}, {"a", "c"}),
        # Unlabelled nodes form one group: b and c (no label) beside a alone on ib0.
        ([("a", 8, "H100", "ib0"), ("b", 8, "H100", None), ("c", 8, "H100", None)], {"count": 8, "nodes": 2}, {"b", "c"}),
        # Cost decides between groups: per part 4 A100 at 2.20 = 8.80/h vs 4 H100 at 4.00 = 16.00/h
        # (speed 1 each): the A100 pair's parts cost less per unit of work.
        ([("a", 4, "H100", None), ("b", 4, "H100", None), ("c", 4, "A100", None), ("d", 4, "A100", None)],
         {"count": 4, "nodes": 2}, {"c", "d"}),
        # Speed turns it: 2.5x on H100 -> 16.00 / 2.5 = 6.40 per unit of work, below the A100's 8.80.
        ([("a", 4, "H100", None), ("b", 4, "H100", None), ("c", 4, "A100", None), ("d", 4, "A100", None)],
         {"count": 4, "nodes": 2, "accept": [{"model": "H100", "speed": 2.5}, {"model": "A100", "speed": 1.0}]}, {"a", "b"}),
    ],
)
def test_gang_keeps_one_model_and_one_network_and_takes_the_best_group(nodes, resources, expected):
    settings = Settings.model_validate({"prices": {"H100": 4.0, "A100": 2.2}})
    builders = []
    for name, size, model, network in nodes:
        builder = make_node(name).gpus(size, model, nvlink=12)
        builders.append(builder.network(network) if network else builder)
    engine = engine_over(settings, *builders)
    decision = engine.place(request(**resources))
    assert isinstance(decision, Placement), decision.reason
    assert {engine.pool.node_name[choice.node] for choice in decision.choices} == expected
    assert len({choice.model for choice in decision.choices}) == 1


def test_each_part_gets_the_best_connected_set_of_its_node(settings):
    # Node a: 8 GPUs, NVLink only among the first 4 (the builder links all of one call);
    # node b likewise. A part of 4 takes the NVLinked four on each node (tier 0).
    a = make_node("a").gpus(4, "H100", nvlink=18).gpus(4, "H100")
    b = make_node("b").gpus(4, "H100", nvlink=18).gpus(4, "H100")
    engine = engine_over(settings, a, b)
    decision = engine.place(request(count=4, nodes=2))
    assert isinstance(decision, Placement)
    for choice in decision.choices:
        start = int(engine.pool.node_start[choice.node])
        assert choice.tier == 0 and sorted(d - start for d in choice.devices) == [0, 1, 2, 3]


def test_a_gang_too_wide_waits_naming_the_nodes_and_holds_nothing(settings):
    engine = engine_over(settings, make_node("a").gpus(8, "H100"), make_node("b").gpus(8, "H100"))
    decision = engine.place(request(count=8, nodes=3))
    assert isinstance(decision, Unplaceable)
    assert TOO_FEW_NODES in decision.rejections.counts
    assert "2 node(s) of one network and chip model can take a part of 8 devices now, 3 parts asked" in decision.reason
    assert engine.pool.holdings == {}


def test_apply_holds_every_part_and_release_gives_all_back(settings):
    engine = engine_over(settings, make_node("a").gpus(8, "H100"), make_node("b").gpus(8, "H100"))
    decision = engine.place(request(count=16, same_node=False, cpu_cores=4))
    holdings = engine.apply(decision)
    pool = engine.pool
    assert len(holdings) == 2 and pool.dev_free[: pool.n_devices].sum() == 0
    assert list(pool.node_cpu_held[:2]) == [4.0, 4.0]  # cpu_cores are per part, on each node
    with pytest.raises(ValueError, match="read Placement.holdings"):
        decision.holding
    assert len(pool.release(1)) == 2
    assert pool.dev_free[: pool.n_devices].sum() == 16 and list(pool.node_cpu_held[:2]) == [0.0, 0.0]


# ---- all or nothing ---------------------------------------------------------------------

pools = st.lists(st.tuples(st.sampled_from(["H100", "A100"]), st.integers(1, 8), st.sampled_from([None, "ib0", "ib1"])),
                 min_size=1, max_size=6)
gang_requests = st.lists(
    st.tuples(st.integers(1, 8), st.sampled_from([1, 2, 3, 4, "spread"]), st.sampled_from([0.0, 16.0])), min_size=1, max_size=12
)


@hyp_settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=pools, stream=gang_requests, seed=st.integers(0, 2**16))
def test_a_gang_is_all_or_nothing(shapes, stream, seed):
    """Each decision holds every part (count devices on each of its distinct nodes, one model,
    one network) or nothing at all; releasing a gang gives every node back."""
    settings = Settings()
    builders = []
    for i, (model, size, network) in enumerate(shapes):
        builder = make_node(f"n{i}", cpu_cores=32).gpus(size, model)
        builders.append(builder.network(network) if network else builder)
    engine = Engine(make_pool(settings, *builders), build_stack(), EngineOptions(seed=seed))
    pool = engine.pool
    for job_id, (count, gang, cpu) in enumerate(stream, start=1):
        wanted = PlacementRequest(job_id=job_id, count=count, kinds=frozenset({"gpu"}), cpu_cores=cpu,
                                  nodes=gang if isinstance(gang, int) else 1, same_node=gang != "spread")
        free_before = pool.dev_free[: pool.n_devices].copy()
        cpu_before = pool.node_cpu_held[: pool.n_nodes].copy()
        decision = engine.place(wanted)
        if isinstance(decision, Unplaceable):
            assert (pool.dev_free[: pool.n_devices] == free_before).all() and (pool.node_cpu_held[: pool.n_nodes] == cpu_before).all()
            continue
        holdings = engine.apply(decision)
        nodes = [h.node for h in holdings]
        assert len(set(nodes)) == len(nodes)
        sizes = {len(set(h.devices)) for h in holdings}
        assert len(sizes) == 1
        assert sizes.pop() * len(holdings) == (count * wanted.nodes if wanted.nodes > 1 else count)
        if wanted.nodes > 1:
            assert len(holdings) == wanted.nodes
        assert len({pool.model_name(d) for h in holdings for d in h.devices}) == 1
        assert len({int(pool.node_network[n]) for n in nodes}) == 1
        assert all(int(pool.dev_node[d]) == h.node for h in holdings for d in h.devices)
        freed = free_before - pool.dev_free[: pool.n_devices]
        assert freed.sum() == sum(len(h.devices) for h in holdings)  # exactly the parts' devices, nothing else
        if job_id % 3 == 0:
            pool.release(job_id)
            assert (pool.dev_free[: pool.n_devices] == free_before).all()


def test_the_worked_example_of_docs_jobs_md():
    """docs/jobs.md, Gangs: two H100 nodes on ib-a, one H100 and two A100 nodes on ib-b."""
    settings = Settings.model_validate({"prices": {"H100": 4.0, "A100": 2.2}})
    builders = [make_node("hgx-1", cpu_cores=64).gpus(8, "H100", nvlink=18).network("ib-a"),
                make_node("hgx-2", cpu_cores=64).gpus(8, "H100", nvlink=18).network("ib-a"),
                make_node("hgx-3", cpu_cores=64).gpus(8, "H100", nvlink=18).network("ib-b"),
                make_node("a100-1", cpu_cores=64).gpus(8, "A100", nvlink=12).network("ib-b"),
                make_node("a100-2", cpu_cores=64).gpus(8, "A100", nvlink=12).network("ib-b")]
    engine = engine_over(settings, *builders)
    wanted = request(count=8, nodes=2, interconnect="nvlink", cpu_cores=32, host_memory="512GiB",
                     accept=[{"model": "H100", "speed": 2.5}, {"model": "A100", "speed": 1.0}])
    decision = engine.place(wanted)
    # Per part 8 x 4.00 = 32.00/h, / 2.5 = 12.80 per unit of work, against 8 x 2.20 = 17.60 on A100.
    assert {engine.pool.node_name[c.node] for c in decision.choices} == {"hgx-1", "hgx-2"}
    assert decision.price_per_hour == 64.0 and decision.chosen.cost_per_work == pytest.approx(12.8)
    # hgx-2 busy: the H100s left are on two networks, so the A100 pair of ib-b takes it.
    pool = engine.pool
    hgx_2 = pool.node_by_id[2]
    pool.apply(Holding(99, hgx_2, tuple(pool.devices_of(hgx_2))[:1], 1.0, (0,), 0.0, 0))
    decision = engine.place(replace(wanted, job_id=2))
    assert {pool.node_name[c.node] for c in decision.choices} == {"a100-1", "a100-2"}
