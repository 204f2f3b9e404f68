"""Each filter on its own, table-driven: what it lets through and the reason code it gives.

``verdicts`` runs one plugin over every subject and returns, per subject, the first code that
turned it down or "ok", exactly as the engine records it.
"""

from __future__ import annotations

import numpy as np
import pytest

from poold.scheduler.engine import Engine
from poold.scheduler.filters.accept_list import AcceptList
from poold.scheduler.filters.compute_capability import ComputeCapability
from poold.scheduler.filters.device_free import DeviceFree
from poold.scheduler.filters.device_health import DeviceHealth
from poold.scheduler.filters.device_kind import DeviceKind
from poold.scheduler.filters.device_memory import DeviceMemory
from poold.scheduler.filters.fpga_shell import FpgaShell
from poold.scheduler.filters.interconnect import Interconnect
from poold.scheduler.filters.max_price import MaxPrice
from poold.scheduler.filters.mig_profile import MigProfile
from poold.scheduler.filters.node_ready import NodeReady
from poold.scheduler.filters.node_resources import NodeResources
from poold.scheduler.framework import Candidates, Context, EngineOptions
from poold.scheduler.mix import JobMix
from poold.scheduler.pool import Holding
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack
from tests.builders import job, make_node, make_pool


def context(pool, count_outside_memory: bool = True) -> Context:
    return Context(pool=pool, mix=JobMix(), options=EngineOptions(count_outside_memory=count_outside_memory))


def verdicts(checks, size: int) -> list[str]:
    out = ["ok"] * size
    for code, ok in checks:
        for i in np.flatnonzero(~np.asarray(ok)):
            if out[i] == "ok":
                out[i] = code
    return out


def request(**resources) -> PlacementRequest:
    return PlacementRequest.from_spec(1, job(**resources))


def device_verdicts(plugin, pool, req, count_outside_memory=True) -> list[str]:
    slots = np.arange(pool.n_devices)
    return verdicts(plugin.check_devices(req, context(pool, count_outside_memory), slots), len(slots))


def mixed_pool(settings):
    return make_pool(
        settings,
        make_node("gpu").gpus(2, "A100").gpus(1, "T4").mig(0, ["3g.40gb", "1g.10gb"]),
        make_node("npu").npus(1),
        make_node("fpga").fpgas(1),
    )


@pytest.mark.parametrize(
    ("plugin", "resources", "expected"),
    [
        # slots, by (model, index) within a node: A100 0 (split), its MIG 3g.40gb and 1g.10gb
        # slices, A100 1, T4 | 910B | U250
        (DeviceKind(), {}, ["ok"] * 5 + ["wrong_kind", "wrong_kind"]),
        (DeviceKind(), {"kind": "npu"}, ["wrong_kind"] * 5 + ["ok", "wrong_kind"]),
        (DeviceKind(), {"kind": "any"}, ["ok"] * 7),
        # only A100 (and its slices, which are A100s) are accepted
        (AcceptList(), {"accept": [{"model": "A100"}]}, ["ok"] * 4 + ["model_not_accepted"] * 3),
        (AcceptList(), {}, ["ok"] * 7),
        # no profile asked: the split A100 and both slices are out, whole GPUs are fine
        (MigProfile(), {}, ["split_into_slices", "mig_slice_not_asked", "mig_slice_not_asked", "ok", "ok", "ok", "ok"]),
        (MigProfile(), {"mig_profile": "1g.10gb"},
         ["split_into_slices", "wrong_mig_profile", "ok", "not_a_mig_slice", "not_a_mig_slice", "not_a_mig_slice", "not_a_mig_slice"]),
        # A100 8.0, T4 7.5; NPUs and FPGAs have none
        (ComputeCapability(), {"compute_capability": "8.0"}, ["ok"] * 4 + ["compute_capability_too_low", "no_compute_capability", "no_compute_capability"]),
        (ComputeCapability(), {"compute_capability": "7.5"}, ["ok"] * 5 + ["no_compute_capability"] * 2),
        # only FPGAs are judged by shell
        (FpgaShell(), {"kind": "any", "fpga_shell": "xilinx_u250_gen3x16_xdma_shell_4_1"}, ["ok"] * 7),
        (FpgaShell(), {"kind": "any", "fpga_shell": "other_shell"}, ["ok"] * 6 + ["wrong_fpga_shell"]),
    ],
)
def test_static_device_filters(settings, plugin, resources, expected):
    pool = mixed_pool(settings)
    assert plugin.static
    assert device_verdicts(plugin, pool, request(**resources)) == expected


def test_device_health_and_free_share(settings):
    pool = make_pool(settings, make_node("l4").gpus(3, "L4").npus(1))
    # slots are sorted by model within a node: 910B, L4 0, L4 1, L4 2
    assert [pool.model_name(d) for d in range(4)] == ["910B", "L4", "L4", "L4"]
    pool.apply(Holding(7, 0, (1,), 0.25, (0,), 0.0, 0))  # L4 0: 0.75 free
    pool.apply(Holding(8, 0, (3,), 1.0, (0,), 0.0, 0))  # L4 2: nothing free
    pool.dev_healthy[2] = False  # L4 1: idle but unhealthy
    assert device_verdicts(DeviceHealth(), pool, request()) == ["ok", "ok", "device_unhealthy", "ok"]
    # whole jobs need an idle device
    assert device_verdicts(DeviceFree(), pool, request()) == ["ok", "device_busy", "ok", "device_busy"]
    # a fraction fits in what is left (0.5 <= 0.75), on GPUs only
    assert device_verdicts(DeviceFree(), pool, request(share=0.5)) == ["not_shareable", "ok", "ok", "insufficient_share"]
    # 0.8 > 0.75 left on L4 0
    assert device_verdicts(DeviceFree(), pool, request(share=0.8)) == ["not_shareable", "insufficient_share", "ok", "insufficient_share"]


@pytest.mark.parametrize(
    ("resources", "count_outside", "expected"),
    [
        # an L4 of 23,034 MiB; 6 GiB held by another job, 10 GiB used outside poold
        # free = 23034 - 6144 - 10240 = 6650 MiB: 6 GiB (6144) fits, 8 GiB (8192) does not
        ({"memory_per_device": "6GiB"}, True, "ok"),
        ({"memory_per_device": "8GiB"}, True, "insufficient_memory"),
        # not counting outside use: 23034 - 6144 = 16890 MiB free, 8 GiB fits
        ({"memory_per_device": "8GiB"}, False, "ok"),
        # without a memory ask a share needs its part of the memory less 5 % of the device:
        # half: 11517 - 1151 = 10366 > 6650; a quarter: 5758 - 1151 = 4607 <= 6650
        ({"share": 0.5}, True, "insufficient_memory"),
        ({"share": 0.25}, True, "ok"),
        # a whole GPU needs 23034 - 1151 = 21883 free: far more than the 6650 left
        ({}, True, "insufficient_memory"),
    ],
)
def test_device_memory_counts_what_others_hold_and_what_runs_outside_poold(settings, resources, count_outside, expected):
    builder = make_node("l4").gpus(1, "L4")
    builder.devices[0].memory_outside_mib = 10240
    pool = make_pool(settings, builder)
    pool.apply(Holding(7, 0, (0,), 0.25, (6144,), 0.0, 0))
    assert device_verdicts(DeviceMemory(), pool, request(**resources), count_outside) == [expected]


def test_a_whole_gpu_job_ignores_driver_sized_outside_use_but_not_a_foreign_workload(settings):
    builder = make_node("h100").gpus(2, "H100")
    builder.devices[0].memory_outside_mib = 512  # the driver's context: under 5 % of 81559
    builder.devices[1].memory_outside_mib = 64512  # a process outside poold fills it (the demo's GPU 1)
    pool = make_pool(settings, builder)
    # whole GPU, no ask: needs 81559 - 4077 = 77482 free; 81559 - 512 = 81047 ok; 81559 - 64512 = 17047 not
    assert device_verdicts(DeviceMemory(), pool, request()) == ["ok", "insufficient_memory"]
    assert device_verdicts(DeviceMemory(), pool, request(memory_per_device="20GiB")) == ["ok", "insufficient_memory"]
    assert device_verdicts(DeviceMemory(), pool, request(memory_per_device="20GiB"), count_outside_memory=False) == ["ok", "ok"]


def test_device_memory_refuses_an_ask_on_a_device_that_does_not_report_memory(settings):
    pool = make_pool(settings, make_node("alveo").fpgas(1))
    assert device_verdicts(DeviceMemory(), pool, request(kind="fpga", memory_per_device="1GiB")) == ["memory_unknown"]
    assert device_verdicts(DeviceMemory(), pool, request(kind="fpga")) == ["ok"]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        # node a: 16 cores, 64 GiB, 10 cores and 16 GiB held; node b: down; node c: drained
        ({"cpu_cores": 6, "host_memory": "48GiB"}, ["ok", "node_lost", "node_drained"]),
        ({"cpu_cores": 6.5}, ["insufficient_cpu", "node_lost", "node_drained"]),  # 16 - 10 = 6 < 6.5
        ({"host_memory": "49GiB"}, ["insufficient_host_memory", "node_lost", "node_drained"]),  # 64 - 16 = 48
    ],
)
def test_node_filters(settings, resources, expected):
    pool = make_pool(settings, *(make_node(n, cpu_cores=16, memory_mib=64 * 1024).gpus(1, "L4") for n in "abc"))
    pool.apply(Holding(7, 0, (), 1.0, (), 10.0, 16 * 1024))
    pool.node_ready[1] = False
    pool.node_drained[2] = True
    req, nodes = request(**resources), np.arange(3)
    checks = [*NodeReady().check_nodes(req, context(pool), nodes), *NodeResources().check_nodes(req, context(pool), nodes)]
    assert verdicts(checks, 3) == expected


def candidates(price, tier) -> Candidates:
    rows = len(price)
    return Candidates(node=np.zeros(rows, np.int64), devices=np.zeros((rows, 2), np.int64), model=np.zeros(rows, np.int64),
                      price=np.array(price, float), speed=np.ones(rows), tier=np.array(tier, np.int8), links=np.zeros(rows, np.int64))


@pytest.mark.parametrize(
    ("plugin", "resources", "price", "tier", "expected"),
    [
        # nvlink wanted: only tier 0 (every pair on NVLink) passes
        (Interconnect(), {"count": 2, "interconnect": "nvlink"}, [1, 1, 1], [0, 1, 3], ["ok", "no_nvlink", "no_nvlink"]),
        (Interconnect(), {"count": 2}, [1, 1], [0, 3], ["ok", "ok"]),
        # at most 5.00/h: 4.40 passes, 8.80 does not
        (MaxPrice(), {"count": 2, "max_price_per_hour": 5.0}, [4.4, 8.8], [0, 0], ["ok", "too_expensive"]),
        (MaxPrice(), {"count": 2}, [4.4, 8.8], [0, 0], ["ok", "ok"]),
    ],
)
def test_candidate_filters(settings, plugin, resources, price, tier, expected):
    pool = make_pool(settings, make_node("a").gpus(2, "A100"))
    req = request(**resources)
    assert verdicts(plugin.check_candidates(req, context(pool), candidates(price, tier)), len(price)) == expected


def test_every_code_is_explained_in_a_sentence(settings):
    """The engine writes one sentence per code for the summary; none may fail or be empty."""
    pool = mixed_pool(settings)
    engine = Engine(pool, build_stack())
    for resources in ({"kind": "npu", "count": 4, "cpu_cores": 1000}, {"mig_profile": "2g.20gb"}, {"accept": [{"model": "B200"}]},
                      {"compute_capability": "9.0"}, {"kind": "fpga", "fpga_shell": "nope"}, {"memory_per_device": "1TiB"}):
        rejections = engine.rejections(request(**resources))
        assert rejections.counts and all(rejections.examples[code] for code in rejections.counts)
