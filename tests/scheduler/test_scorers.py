"""The packing scorers on their own, table-driven, with the arithmetic in comments; then the
preference they give the engine on tiny pools.

``scored`` runs one scorer over candidates the test names (node slot, device index) and
returns raw values and scores exactly as the engine computes them.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from poold.scheduler import candidates as generate
from poold.scheduler.engine import Engine, Placement
from poold.scheduler.framework import Context, EngineOptions
from poold.scheduler.mix import JobMix
from poold.scheduler.pool import Holding
from poold.scheduler.request import PlacementRequest
from poold.scheduler.scorers.first_fit import FirstFit, place_in_order
from poold.scheduler.scorers.fragmentation import Fragmentation, fragmentation_by_model
from poold.scheduler.scorers.sum_of_squares import CLOSED, NO_GAP, SumOfSquares, gap_classes
from poold.scheduler.stack import build_stack
from tests.builders import job, make_node, make_pool

STACK = build_stack()


def request(job_id: int = 1, **resources) -> PlacementRequest:
    return PlacementRequest.from_spec(job_id, job(**resources))


def mix_of(*shapes: tuple[dict, int]) -> JobMix:
    """A job mix that has seen ``n`` jobs of each shape (no decay to speak of)."""
    mix = JobMix(half_life_jobs=1e9, refresh_every=1)
    for resources, n in shapes:
        for _ in range(n):
            mix.observe(request(**resources))
    return mix


def hold(pool, node: int, index: int, share: float, job_id: int, cpu: float = 0.0) -> None:
    device = next(d for d in pool.devices_of(node) if pool.dev_index[d] == index)
    pool.apply(Holding(job_id, node, (device,), share, (0,), cpu, 0))


def scored(scorer, engine: Engine, req: PlacementRequest, where: list[tuple[int, int | None]]):
    """Raw values and scores of ``scorer`` for candidates at (node slot, device index or None)."""
    ctx, pool = engine.ctx, engine.pool
    if req.count == 0:
        candidates = generate.cpu_only(req, ctx, np.array([node for node, _ in where], dtype=np.int64))
    else:
        devices = np.array([next(d for d in pool.devices_of(n) if pool.dev_index[d] == i) for n, i in where], dtype=np.int64)
        candidates = generate.single_devices(req, ctx, devices, generate.speed_by_model(req, ctx))
    raw = scorer.raw(req, ctx, candidates)
    return raw, scorer.normalize(req, ctx, raw)


# ---- first fit ---------------------------------------------------------------------------


def test_place_in_order_is_fixed_per_node_and_seed():
    ids = np.arange(1, 2001)
    first = place_in_order(ids, seed=7)
    assert ((first >= 0) & (first < 1)).all()
    assert np.array_equal(first, place_in_order(ids, seed=7))
    # a node keeps its place when others join: the first 10 ids read alike alone
    assert np.array_equal(first[:10], place_in_order(ids[:10], seed=7))
    # another seed, another order (two daemons reach for different nodes first)
    assert np.corrcoef(first, place_in_order(ids, seed=8))[0, 1] < 0.1
    # near-uniform: each tenth of [0, 1) holds 200 ± 60 of the 2000 nodes
    assert (np.abs(np.histogram(first, bins=10, range=(0, 1))[0] - 200) < 60).all()


@pytest.mark.parametrize(
    ("nodes", "place", "score"),
    [
        (1000, 0.10, 90.0),  # 100 − 0.10 × min(1000, 1000) / 10
        (1000, 0.85, 15.0),  # 100 − 0.85 × 1000 / 10
        (5000, 0.85, 15.0),  # any pool of 1,000 nodes or more: one point per hundredth of it
        (300, 0.50, 85.0),  # 100 − 0.50 × 300 / 10: 150 nodes ahead, one point per ten
        (10, 0.50, 99.5),  # 100 − 0.50 × 10 / 10
        (5, 0.85, 99.7875),  # under 10 nodes the span shrinks by nodes / 10: 100 − 0.85 × 0.5 × 0.5
    ],
)
def test_first_fit_score(nodes, place, score):
    ctx = Context(pool=SimpleNamespace(n_nodes=nodes), mix=JobMix(), options=EngineOptions())  # only the size is read
    assert FirstFit().normalize(request(), ctx, np.array([-place]))[0] == pytest.approx(score)


def test_first_fit_fills_one_node_before_opening_the_next(settings):
    # No job mix yet (fragmentation rates everything alike): whole-GPU jobs go to the node that
    # comes first in the seeded order until it is full, then to the next. (In a pool this small
    # best fit outweighs first fit; it agrees here: the node in use is the fullest.)
    pool = make_pool(settings, *(make_node(f"n{i}").gpus(2, "L4") for i in range(4)))
    engine = Engine(pool, STACK, EngineOptions(seed=3))
    order = np.argsort(place_in_order(pool.node_id[:4], 3))
    chosen = []
    for job_id in range(1, 5):
        decision = engine.place(request(job_id))
        assert isinstance(decision, Placement)
        engine.apply(decision)
        chosen.append(decision.chosen.node)
    assert chosen == [order[0], order[0], order[1], order[1]]


# ---- fragmentation -----------------------------------------------------------------------


def test_fragmentation_half_used_gpu_before_an_idle_one(settings):
    # Mix: "half a GPU" and "one GPU", p = 0.5 each; Φ = Σ p × copies.
    # GPU 0 idle, GPU 1 half used. A half on GPU 1: half-copies 1 -> 0, whole copies 0 -> 0:
    #   raw = 0.5 × −1 = −0.5. On GPU 0: half-copies 2 -> 1, whole copies 1 -> 0: raw = −1.0.
    # Scores: 100 for the best, 100 − 100 × (−0.5 − −1.0) = 50 for the idle GPU.
    pool = make_pool(settings, make_node("l4").gpus(2, "L4"))
    hold(pool, 0, 1, 0.5, job_id=90)
    engine = Engine(pool, STACK, mix=mix_of(({"share": 0.5}, 10), ({}, 10)))
    raw, score = scored(Fragmentation(), engine, request(share=0.5), [(0, 1), (0, 0)])
    assert raw.tolist() == pytest.approx([-0.5, -1.0])
    assert score.tolist() == pytest.approx([100.0, 50.0])


def test_fragmentation_by_model_is_the_free_capacity_the_mix_cannot_use(settings):
    # Mix: "one GPU" (p = 0.5) and "two GPUs on one node" (p = 0.5).
    # L4 node a: GPU 0 idle, GPU 1 half used -> free 1 + 0.5 = 1.5 GPUs.
    #   one GPU: GPU 0 takes it (usable), GPU 1 cannot (stranded 0.5);
    #   two GPUs: the node holds no copy (one whole GPU free): all 1.5 stranded.
    #   (0.5 × 0.5 + 0.5 × 1.5) / (0.5 × 1.5 + 0.5 × 1.5) = 1.0 / 1.5 = 2/3.
    # A100 node b, both idle: every shape fits, nothing stranded: 0.
    # The mix accepts any GPU, so an FPGA model is left out (nothing in the mix takes it).
    pool = make_pool(settings, make_node("a").gpus(2, "L4"), make_node("b").gpus(2, "A100"), make_node("c").fpgas(1))
    hold(pool, 0, 1, 0.5, job_id=90)
    engine = Engine(pool, STACK, mix=mix_of(({"kind": "gpu"}, 10), ({"kind": "gpu", "count": 2}, 10)))
    assert fragmentation_by_model(engine.ctx) == pytest.approx({"L4": 2 / 3, "A100": 0.0})


def test_fragmentation_by_model_is_empty_without_a_mix(settings):
    engine = Engine(make_pool(settings, make_node("a").gpus(2, "L4")), STACK)
    assert fragmentation_by_model(engine.ctx) == {}


@pytest.mark.parametrize(
    ("lost", "score"),
    [
        (0.0, 100.0),
        (0.25, 75.0),  # 100 − 100 × 0.25
        (1.0, 0.0),  # one job copy lost beyond the best: the floor
        (3.0, 0.0),
    ],
)
def test_fragmentation_score_is_100_points_per_copy_lost_beyond_the_best(settings, lost, score):
    engine = Engine(make_pool(settings, make_node("a").gpus(1, "L4")), STACK)
    assert Fragmentation().normalize(request(), engine.ctx, np.array([-1.0, -1.0 - lost]))[1] == pytest.approx(score)


def test_fragmentation_sends_a_cpu_only_job_where_cores_are_least_needed(settings):
    # Mix: one shape, "1 GPU + 6 cores". Node lean: 1 GPU, 8 cores; node rich: 1 GPU, 64 cores.
    # A CPU-only job of 4 cores on lean: copies min(1 GPU, ⌊8 / 6⌋ = 1) = 1 -> ⌊4 / 6⌋ = 0:
    #   raw = −1. On rich: ⌊64 / 6⌋ = 10 -> ⌊60 / 6⌋ = 10, still limited to 1 by the GPU: raw 0.
    pool = make_pool(settings, make_node("lean", cpu_cores=8).gpus(1, "L4"), make_node("rich", cpu_cores=64).gpus(1, "L4"))
    engine = Engine(pool, STACK, mix=mix_of(({"cpu_cores": 6}, 10)))
    cpu_job = request(count=0, kind="cpu", cpu_cores=4)
    raw, score = scored(Fragmentation(), engine, cpu_job, [(0, None), (1, None)])
    assert raw.tolist() == pytest.approx([-1.0, 0.0])
    assert score.tolist() == pytest.approx([0.0, 100.0])
    decision = engine.place(cpu_job)
    assert pool.node_name[decision.chosen.node] == "rich"


def test_fragmentation_keeps_a_whole_node_for_the_8_gpu_jobs(settings):
    # Mix: "8 GPUs" and "1 GPU", p = 0.5 each. Node whole: 8 idle; node used: 1 of 8 taken.
    # A 1-GPU job on whole: 8-GPU copies 1 -> 0, 1-GPU copies 8 -> 7: raw = −0.5 − 0.5 = −1.0.
    # On used: 8-GPU copies 0 -> 0, 1-GPU copies 7 -> 6: raw = −0.5. used 100, whole 50.
    pool = make_pool(settings, make_node("whole").gpus(8, "A100"), make_node("used").gpus(8, "A100"))
    hold(pool, 1, 0, 1.0, job_id=90)
    engine = Engine(pool, STACK, mix=mix_of(({"count": 8}, 10), ({}, 10)))
    one_gpu = request()
    raw, score = scored(Fragmentation(), engine, one_gpu, [(0, 0), (1, 1)])
    assert raw.tolist() == pytest.approx([-1.0, -0.5])
    assert score.tolist() == pytest.approx([50.0, 100.0])
    decision = engine.place(one_gpu)
    assert pool.node_name[decision.chosen.node] == "used"


# ---- sum of squares ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (1.00, NO_GAP),  # an idle device is no gap
        (0.68, 650),  # fits 0.65 (and less): the class of 0.65
        (0.53, 470),
        (0.35, 320),
        (0.32, 320),  # exactly one 0.32 fits
        (0.21, 1210),  # under s_min = 0.32 but at least 0.16: dead, its own class (1000 + 210)
        (0.16, 1160),
        (0.15, CLOSED),  # under s_min / 2: closed, as if full
        (0.03, CLOSED),
        (0.00, CLOSED),
    ],
)
def test_gap_classes(gap, expected):
    classes = gap_classes([0.32, 0.47, 0.65])
    assert classes[int(round(gap * 1000))] == expected


def pool_with_gaps(settings, gaps: dict[float, int], idle: int):
    """One node per gap size with that many GPUs holding the rest, and a node of idle GPUs."""
    builders = [make_node(f"gap{g}").gpus(n, "A100") for g, n in gaps.items()] + [make_node("idle").gpus(idle, "A100")]
    pool = make_pool(settings, *builders)
    job_id = 100
    for node, (g, n) in enumerate(gaps.items()):
        for index in range(n):
            job_id += 1
            hold(pool, node, index, round(1.0 - g, 3), job_id)
    return pool


def test_sum_of_squares_worked_example(settings):
    # The docstring's example. Mix shares 0.32, 0.47, 0.65; the pool has 40 gaps of 0.35 (class
    # 0.32), 90 of 0.53 (class 0.47), 5 of 0.68 (class 0.65) and idle GPUs. A 0.32 job:
    #   into a 0.35 gap, 0.03 left (closed):        Δ = 0 − 40      = −40
    #   into a 0.53 gap, 0.21 left (dead, none yet): Δ = 0 + 1 − 90 = −89
    #   on an idle GPU, 0.68 left:                   Δ = 5 + 1 − 0  = 6
    # −Δ = 40, 89, −6 -> min-max: 100 × (40 + 6) / 95 = 48.4, 100, 0.
    pool = pool_with_gaps(settings, {0.35: 40, 0.53: 90, 0.68: 5}, idle=2)
    engine = Engine(pool, STACK, mix=mix_of(({"share": 0.32}, 10), ({"share": 0.47}, 10), ({"share": 0.65}, 10)))
    raw, score = scored(SumOfSquares(), engine, request(share=0.32), [(0, 0), (1, 0), (3, 0)])
    assert raw.tolist() == [-350, -530, -1000]
    assert score.tolist() == pytest.approx([48.42, 100.0, 0.0], abs=0.01)


def test_sum_of_squares_census_follows_placements(settings):
    # After two more 0.53 gaps are filled to 0.06 (closed), N(class 0.47) is 88: Δ for the 0.53
    # gap becomes 1 − 88 = −87, still the most crowded class; the 0.35 gap still −40.
    pool = pool_with_gaps(settings, {0.35: 40, 0.53: 90, 0.68: 5}, idle=2)
    engine = Engine(pool, STACK, mix=mix_of(({"share": 0.32}, 10), ({"share": 0.47}, 10), ({"share": 0.65}, 10)))
    scored(SumOfSquares(), engine, request(share=0.32), [(0, 0)])  # the census is built
    hold(pool, 1, 0, 0.47, job_id=900)
    hold(pool, 1, 1, 0.47, job_id=901)
    _, score = scored(SumOfSquares(), engine, request(share=0.32), [(0, 0), (1, 2), (3, 0)])
    # −Δ = 40, 87, −6 -> 100 × 46 / 93 = 49.46, 100, 0
    assert score.tolist() == pytest.approx([49.46, 100.0, 0.0], abs=0.01)


def test_sum_of_squares_leaves_whole_device_jobs_alone(settings):
    pool = pool_with_gaps(settings, {0.53: 3}, idle=2)
    engine = Engine(pool, STACK, mix=mix_of(({"share": 0.47}, 10)))
    _, score = scored(SumOfSquares(), engine, request(), [(1, 0), (1, 1)])
    assert score.tolist() == [100.0, 100.0]


def test_packing_fills_the_sliver_a_small_job_fits(settings):
    # A tiny pool: node "a" has an idle GPU, node "b" a GPU holding 0.81 (a sliver of 0.19).
    # Mix: 0.81 jobs (p = 30/35) and 0.16 jobs (p = 5/35). A 0.16 job:
    # - fragmentation: into the sliver, 0.16-copies 1 -> 0: raw = −5/35; on the idle GPU the
    #   0.81 copy stays (0.84 left) and 0.16-copies go 6 -> 5: raw = −5/35 too, a tie;
    # - sum of squares (classes 0.16 and 0.81; gaps under 0.08 closed): the sliver (N(0.16)
    #   = 1) is given up and 0.03 is closed: Δ = −1; the idle GPU opens a gap of 0.84 (class
    #   0.81, none yet): Δ = +1. The sliver scores 100, the idle GPU 0;
    # - first fit: "a" comes first in the order (seed 0), but in a two-node pool its pull is
    #   at most 0.2 points × 0.005 = 0.001 against 100 × 0.14 × 0.005 = 0.07 (best fit, at
    #   most 0.005, prefers "b" too).
    pool = make_pool(settings, make_node("a").gpus(1, "L4"), make_node("b").gpus(1, "L4"))
    assert place_in_order(pool.node_id[:2], 0)[0] < place_in_order(pool.node_id[:2], 0)[1]
    hold(pool, 1, 0, 0.81, job_id=90)
    engine = Engine(pool, STACK, mix=mix_of(({"share": 0.81}, 30), ({"share": 0.16}, 5)))
    small = request(share=0.16)
    raw, _ = scored(Fragmentation(), engine, small, [(0, 0), (1, 0)])
    assert raw[0] == pytest.approx(raw[1])
    _, score = scored(SumOfSquares(), engine, small, [(0, 0), (1, 0)])
    assert score.tolist() == [0.0, 100.0]
    decision = engine.place(small)
    assert isinstance(decision, Placement)
    assert pool.node_name[decision.chosen.node] == "b"
