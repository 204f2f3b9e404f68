"""Properties of the engine over random pools and random streams of jobs (hypothesis):

- nothing is ever held beyond capacity: device share, device memory (less what is used
  outside poold), node CPU cores and host memory;
- a job never lands on a chip model its accept list leaves out, nor on the wrong kind;
- a gang is all or nothing: a placement holds exactly ``count`` devices on each of its nodes
  (one node, or ``nodes`` distinct ones of one network and one chip model; with
  ``same_node = false``, equal parts adding up to ``count``), and a job that cannot be placed
  changes nothing;
- releasing every placement gives the pool back exactly as it was.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poold.scheduler.engine import Engine, Placement
from poold.scheduler.framework import EngineOptions
from poold.scheduler.pool import KINDS, ColumnarPool, DeviceSpec, DeviceState, NodeSpec
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack

MODELS = {"gpu": ["H100", "A100", "L4"], "npu": ["910B"], "fpga": ["U250"]}
MEMORY = {"H100": 81559, "A100": 81920, "L4": 23034, "910B": 65536, "U250": None}

node_shapes = st.lists(
    st.tuples(
        st.sampled_from([("gpu", m) for m in MODELS["gpu"]] + [("npu", "910B"), ("fpga", "U250")]),
        st.integers(1, 8),  # devices
        st.integers(1, 64),  # cpu cores
        st.integers(1, 256),  # host memory GiB
        st.integers(0, 30),  # GiB used outside poold on device 0
        st.sampled_from([None, None, "ib0", "ib1"]),  # network label
    ),
    min_size=1,
    max_size=6,
)
requests = st.lists(
    st.fixed_dictionaries(
        {
            "count": st.integers(0, 5),
            "kind": st.sampled_from(["gpu", "npu", "fpga", "any"]),
            "share": st.sampled_from([1.0, 1.0, 0.5, 0.3, 0.25]),
            "memory": st.sampled_from([None, 4096, 20000, 40000]),
            "cpu": st.sampled_from([0.0, 1.0, 8.0, 30.0]),
            "host": st.sampled_from([0, 1024, 64 * 1024]),
            "accept": st.lists(st.sampled_from(["H100", "A100", "L4", "910B", "U250"]), max_size=3, unique=True),
            "objective": st.sampled_from(["cost", "time", "pack"]),
            "gang": st.sampled_from([None, None, None, 2, 3, "spread"]),  # nodes = 2 or 3, or same_node = false
        }
    ),
    min_size=1,
    max_size=25,
)


def build(shapes) -> ColumnarPool:
    pool = ColumnarPool()
    device_id = 0
    for n, ((kind, model), count, cores, host_gib, outside_gib, network) in enumerate(shapes):
        devices, states = [], {}
        for index in range(count):
            device_id += 1
            devices.append(DeviceSpec(id=device_id, uuid=f"{model}-{n}-{index}", kind=kind, model=model, index=index,
                                      memory_total_mib=MEMORY[model], numa_node=index % 2, price_per_hour=1.0 + index % 3))
            states[device_id] = DeviceState(memory_outside_mib=outside_gib * 1024 if index == 0 and MEMORY[model] else 0)
        node = NodeSpec(id=n, name=f"n{n}", cpu_cores=cores, memory_total_mib=host_gib * 1024, network=network)
        pool.upsert_node(node, devices, states)
    return pool


def request_of(job_id: int, r: dict) -> PlacementRequest:
    count = r["count"]
    gang = r.get("gang") if count else None
    share = r["share"] if count == 1 and gang is None else 1.0
    return PlacementRequest(
        job_id=job_id,
        count=count,
        kinds=frozenset() if count == 0 else (frozenset(MODELS) if r["kind"] == "any" else frozenset({r["kind"]})),
        memory_per_device_mib=r["memory"] if count else None,
        share=share,
        cpu_cores=r["cpu"],
        host_memory_mib=r["host"],
        accept=tuple((model.lower(), 1.0 + i) for i, model in enumerate(r["accept"])) if count else (),
        objective=r["objective"],
        nodes=gang if isinstance(gang, int) else 1,
        same_node=gang != "spread",
    )


def snapshot(pool: ColumnarPool) -> tuple:
    n, d = pool.n_nodes, pool.n_devices
    return (pool.dev_free[:d].round(9).tobytes(), pool.dev_mem_held[:d].tobytes(),
            pool.node_cpu_held[:n].round(9).tobytes(), pool.node_mem_held[:n].tobytes())


def assert_within_capacity(pool: ColumnarPool) -> None:
    n, d = pool.n_nodes, pool.n_devices
    # Summed from the holdings themselves: the pool clamps free shares at 0 and would hide it.
    held = np.zeros(d)
    for holdings in pool.holdings.values():
        for holding in holdings:
            held[list(holding.devices)] += holding.share
    assert (held <= 1 + 1e-9).all(), held
    total, booked, outside = pool.dev_mem_total[:d], pool.dev_mem_held[:d], pool.dev_mem_outside[:d]
    known = total >= 0
    # Bookings never exceed the device; with what runs outside poold they exceed it by at most
    # the slack a job without a memory ask is given (5 % of the device).
    assert (~known | (booked <= total)).all()
    assert (~known | (booked == 0) | (booked + outside <= total + 0.05 * total)).all()
    assert (pool.node_cpu_held[:n] <= pool.node_cpu[:n] + 1e-9).all()
    assert (pool.node_mem_held[:n] <= pool.node_mem[:n]).all()


def assert_whole_gang(pool: ColumnarPool, request: PlacementRequest, holdings) -> None:
    """Every part there, each whole on its own node; a gang's parts on one model and network."""
    nodes = [holding.node for holding in holdings]
    assert len(set(nodes)) == len(nodes)
    if request.nodes > 1:
        assert len(holdings) == request.nodes
        assert all(len(set(h.devices)) == len(h.devices) == request.count for h in holdings)
    else:
        sizes = {len(set(h.devices)) for h in holdings}
        assert len(sizes) == 1 and sizes.pop() * len(holdings) == request.count
    for holding in holdings:
        assert all(int(pool.dev_node[d]) == holding.node for d in holding.devices)
    if len(holdings) > 1:
        assert len({pool.model_name(d) for h in holdings for d in h.devices}) == 1
        assert len({int(pool.node_network[n]) for n in nodes}) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=node_shapes, stream=requests, seed=st.integers(0, 2**16))
def test_engine_never_over_commits_never_leaves_the_accept_list_and_gangs_are_whole(shapes, stream, seed):
    pool = build(shapes)
    engine = Engine(pool, build_stack(), EngineOptions(seed=seed))
    empty = snapshot(pool)
    placed = []
    for job_id, raw in enumerate(stream, start=1):
        request = request_of(job_id, raw)
        engine.ctx.mix.observe(request)
        before = snapshot(pool)
        decision = engine.place(request)
        if not isinstance(decision, Placement):
            assert snapshot(pool) == before  # nothing held for a job that waits
            continue
        holdings = engine.apply(decision)
        placed.append(job_id)
        assert_whole_gang(pool, request, holdings)
        for holding in holdings:
            for device in holding.devices:
                assert KINDS[pool.dev_kind[device]] in request.kinds
                assert pool.dev_allocatable[device]
                if request.accept:
                    assert pool.model_name(device).lower() in {model for model, _ in request.accept}
        assert_within_capacity(pool)
    for job_id in reversed(placed):
        pool.release(job_id)
    assert snapshot(pool) == empty
