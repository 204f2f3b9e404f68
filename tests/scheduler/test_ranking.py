"""The ranking scorers other than packing, table-driven, arithmetic in comments: cost per work
(with its tolerance band), speed, locality; and how the objective's weights order them."""

from __future__ import annotations

import numpy as np
import pytest

from poold.scheduler.engine import Engine, Placement
from poold.scheduler.framework import Candidates, Context, EngineOptions
from poold.scheduler.mix import JobMix
from poold.scheduler.request import PlacementRequest
from poold.scheduler.scorers.cost_per_work import CostPerWork
from poold.scheduler.scorers.locality import Locality
from poold.scheduler.scorers.speed import Speed
from poold.scheduler.stack import OBJECTIVE_WEIGHTS, build_stack
from tests.builders import job, make_node, make_pool


def candidates(price, speed, tier=None) -> Candidates:
    rows = len(price)
    return Candidates(node=np.zeros(rows, np.int64), devices=np.zeros((rows, 1), np.int64), model=np.zeros(rows, np.int64),
                      price=np.array(price, float), speed=np.array(speed, float),
                      tier=np.array(tier or [0] * rows, np.int8), links=np.zeros(rows, np.int64))


def scores(scorer, cands, tolerance=0.05):
    ctx = Context(pool=None, mix=JobMix(), options=EngineOptions(cost_tolerance=tolerance))
    request = PlacementRequest(job_id=1, count=1, kinds=frozenset({"gpu"}))
    return scorer.normalize(request, ctx, scorer.raw(request, ctx, cands)).round(1).tolist()


@pytest.mark.parametrize(
    ("price", "speed", "tolerance", "expected"),
    [
        # H100 4.00/2.5 = 1.60 per unit, A100 2.20/1.0 = 2.20: 100 and 100 x 1.60/2.20 = 72.7
        ([4.0, 2.2], [2.5, 1.0], 0.05, [100.0, 72.7]),
        # 1.60 and 1.66 (within 5 % of 1.60, up to 1.68): both 100; 2.00 is not: 100 x 1.60/2.00 = 80
        ([1.6, 1.66, 2.0], [1, 1, 1], 0.05, [100.0, 100.0, 80.0]),
        # no band: 100 x 1.60/1.66 = 96.4
        ([1.6, 1.66], [1, 1], 0.0, [100.0, 96.4]),
        # a pool priced alike scores 100 everywhere
        ([0.8, 0.8], [1, 1], 0.05, [100.0, 100.0]),
        # free devices (price 0) are the cheapest; anything priced scores 0
        ([0.0, 1.0], [1, 1], 0.05, [100.0, 0.0]),
    ],
)
def test_cost_per_work(price, speed, tolerance, expected):
    assert scores(CostPerWork(), candidates(price, speed), tolerance) == expected


def test_speed_and_locality():
    # speed: 100 x 2.5/2.5 = 100, 100 x 1.0/2.5 = 40
    assert scores(Speed(), candidates([1, 1], [2.5, 1.0])) == [100.0, 40.0]
    # tiers: NVLink 100, one PCIe switch 70, one NUMA node 40, spread 0 (absolute, not relative)
    assert scores(Locality(), candidates([1] * 4, [1] * 4, tier=[0, 1, 2, 3])) == [100.0, 70.0, 40.0, 0.0]


def test_under_objective_cost_each_step_outweighs_everything_after_it():
    """Cost per work first: the smallest step out of the 5 % band (100 - 100/1.05 = 4.76
    points) outweighs the whole range of every scorer after it; locality's step (30 points
    between tiers) outweighs the whole range of the packing scorers after it."""
    weights = OBJECTIVE_WEIGHTS["cost"]
    after_cost = sum(weight * 100 for name, weight in weights.items() if name != "cost_per_work")
    assert weights["cost_per_work"] * (100 - 100 / 1.05) > after_cost
    after_locality = sum(weight * 100 for name, weight in weights.items() if name not in ("cost_per_work", "locality"))
    assert weights["locality"] * 30 > after_locality


def test_locality_beats_packing_for_a_gang_of_equal_cost(settings):
    """Two nodes of 4 A100 at one price, one with NVLink between all GPUs and one without: a
    2-GPU gang costs the same on both, and goes where its GPUs are joined by NVLink."""
    nvl = make_node("nvl").gpus(4, "A100", nvlink=12)
    pcie = make_node("pcie").gpus(4, "A100")
    pool = make_pool(settings, pcie, nvl)
    decision = Engine(pool, build_stack()).place(PlacementRequest.from_spec(1, job(count=2)))
    assert isinstance(decision, Placement)
    assert pool.node_name[decision.chosen.node] == "nvl" and decision.chosen.tier == 0
