"""The sharing planner's decisions: queue order, limits, priority within a queue, preemption
and victim choice. Prices: H100 4.0, A100 2.2, L4 0.8 per device-hour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings
from hypothesis import strategies as st

from poold.scheduler.sharing import Holder, QueueEntitlement
from tests.builders import make_node
from tests.scheduler.sharing_cases import Site, wants


def placed_ids(plan) -> list[int]:
    return [p.request.job_id for p in plan.placements]


@pytest.mark.parametrize(
    ("queues", "held", "expected"),
    [
        # No entitlements, nobody holds anything: equal keys, so by name: a before x.
        ([], [], [1]),
        # x has a guarantee of 1.6/h and holds nothing: under it by 100 %, served first.
        ([QueueEntitlement("x", guarantee={"cost": 1.6})], [], [2]),
        # x guaranteed 2 L4 (by model) and holds none: first.
        ([QueueEntitlement("x", guarantee={"L4": 2})], [], [2]),
        # Both hold one L4 (0.8/h): a at weight 1 -> 0.8, x at weight 2 -> 0.4: x is further below its share.
        ([QueueEntitlement("x", weight=2)], [("a", "l4"), ("x", "l4")], [2]),
        # Same, weights equal: 0.8 = 0.8, by name: a.
        ([], [("a", "l4"), ("x", "l4")], [1]),
        # x's priority 1 goes before a (both at or above their guarantee of nothing).
        ([QueueEntitlement("x", priority=1)], [], [2]),
    ],
)
def test_queue_order(settings, queues, held, expected):
    site = Site(settings, make_node("l4").gpus(2 + len(held), "L4"), queues=queues)
    for n, (queue, node) in enumerate(held):
        site.run(100 + n, node, 1, queue=queue)
    # Two jobs that each want both L4 left: only the one served first fits.
    plan = site.plan(10.0, wants(1, queue="a", count=2), wants(2, queue="x", count=2, submitted=5.0))
    assert placed_ids(plan) == expected


def test_fair_share_updates_usage_as_the_pass_places(settings):
    # 4 L4 free, queues a and b weight 1, three one-L4 jobs each. Serving lowest cost per weight
    # first alternates: a (0 -> 0.8), b (0 -> 0.8), a (0.8 -> 1.6), b: four placed, two of each.
    site = Site(settings, make_node("l4").gpus(4, "L4"))
    jobs = [wants(i, queue=q, count=1, submitted=float(i)) for i, q in enumerate("aaabbb", start=1)]
    plan = site.plan(10.0, *jobs)
    assert placed_ids(plan) == [1, 4, 2, 5]


@pytest.mark.parametrize(
    ("limit", "waits_with"),
    [
        # holds 1 L4, the job adds 1: 2 > 1.
        ({"L4": 1}, "queue a would hold 2 l4 over its limit of 1 l4"),
        # by kind: 2 > 1 gpu.
        ({"gpu": 1}, "queue a would hold 2 gpu over its limit of 1 gpu"),
        # in cost: 0.8 + 0.8 = 1.6 > 1.0 per hour.
        ({"cost": 1.0}, "queue a would hold 1.6 per hour over its limit of 1 per hour"),
    ],
)
def test_a_job_that_would_pass_a_limit_waits_and_others_go_on(settings, limit, waits_with):
    site = Site(settings, make_node("l4").gpus(4, "L4"), queues=[QueueEntitlement("a", limit=limit)])
    site.run(100, "l4", 1, queue="a")
    plan = site.plan(10.0, wants(1, queue="a", count=1), wants(2, queue="b", count=1, submitted=5.0))
    assert placed_ids(plan) == [2]
    assert plan.waiting[1] == waits_with


def test_without_a_limit_both_are_placed(settings):
    site = Site(settings, make_node("l4").gpus(4, "L4"), queues=[QueueEntitlement("a", limit={"L4": 2})])
    site.run(100, "l4", 1, queue="a")
    plan = site.plan(10.0, wants(1, queue="a", count=1), wants(2, queue="b", count=1, submitted=5.0))
    # b holds nothing (0/h) and goes first; a at 0.8/h next.
    assert placed_ids(plan) == [2, 1]


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        # priority first: job 2 (priority 5) although younger
        ([(1, 0, 0.0), (2, 5, 9.0)], 2),
        # equal priority: the older one (submitted 3.0)
        ([(1, 0, 7.0), (2, 0, 3.0)], 2),
    ],
)
def test_priority_then_age_within_a_queue(settings, jobs, expected):
    site = Site(settings, make_node("l4").gpus(1, "L4"))
    plan = site.plan(10.0, *(wants(i, priority=p, submitted=s, count=1) for i, p, s in jobs))
    assert placed_ids(plan) == [expected]


def test_the_pool_is_left_as_found_and_placements_apply_in_order(settings):
    site = Site(settings, make_node("h").gpus(4, "H100"), make_node("l4").gpus(2, "L4"))
    site.run(100, "h", 3, max_runtime=100.0)
    before = site.pool.dev_free[: site.pool.n_devices].copy(), dict(site.pool.holdings)
    plan = site.plan(0.0, wants(1, count=4, max_runtime=50.0), wants(2, count=1, max_runtime=10.0),
                     wants(3, count=2, accept=[{"model": "L4"}]))
    assert np.array_equal(site.pool.dev_free[: site.pool.n_devices], before[0])
    assert site.pool.holdings == before[1]
    for placement in plan.placements:
        site.engine.apply(placement)  # raises if a placement overlaps what is held
    assert (site.pool.dev_free[: site.pool.n_devices] >= -1e-9).all()


# ---- preemption ------------------------------------------------------------------------------------

def victims(plan) -> list[int]:
    return sorted(p.victim_job_id for p in plan.preemptions)


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        # (job, GPUs, priority, placed at); now 1000; the waiting job (priority 0) needs 2 of 4 H100, none free.
        # Fewest jobs: {10} (1 job, 2 GPUs x 1000 s = 2000) beats {11, 12} (2 jobs, 2 x 1 x 100 s = 200).
        ([(10, 2, -1, 0.0), (11, 1, -1, 900.0), (12, 1, -1, 900.0)], [10]),
        # Least work lost: 10 lost 2 x 1000 = 2000, 11 lost 2 x 500 = 1000.
        ([(10, 2, -1, 0.0), (11, 2, -1, 500.0)], [11]),
        # Equal work (2 x 500 each): the lower priority, 11 (-2).
        ([(10, 2, -1, 500.0), (11, 2, -2, 500.0)], [11]),
        # Equal or higher priority is never taken within a queue: nothing to take.
        ([(10, 2, 0, 0.0), (11, 2, 3, 0.0)], []),
    ],
)
def test_victim_choice_within_a_queue(settings, running, expected):
    site = Site(settings, make_node("h").gpus(4, "H100"))
    for job_id, gpus, priority, placed in running:
        site.run(job_id, "h", gpus, priority=priority, placed=placed)
    plan = site.plan(1000.0, wants(1, count=2))
    assert victims(plan) == expected
    assert plan.placements == []
    if expected:
        assert 1 in plan.reservations and plan.waiting[1].startswith("preempting job(s)")


@pytest.mark.parametrize(
    ("guarantee", "expected"),
    [
        # Queue a holds 4 H100 = 16/h. Job 10 (not preemptible) lost 2 x 100 = 200; job 11 lost 2 x 900 = 1800.
        # Guarantee 8/h: without job 10 the queue holds 16 - 8 = 8 >= 8, so 10 is above the guarantee and
        # its preemptible = false does not protect it: the cheaper, 10.
        (8.0, [10]),
        # Guarantee 12/h: 16 - 8 = 8 < 12, job 10 is within it and protected: 11.
        (12.0, [11]),
    ],
)
def test_preemptible_false_protects_only_work_within_the_guarantee(settings, guarantee, expected):
    site = Site(settings, make_node("h").gpus(4, "H100"), queues=[QueueEntitlement("a", guarantee={"cost": guarantee})])
    site.run(10, "h", 2, priority=-1, placed=900.0, preemptible=False)
    site.run(11, "h", 2, priority=-1, placed=100.0)
    plan = site.plan(1000.0, wants(1, count=2))
    assert victims(plan) == expected


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        # Queue b holds 4 H100 (16/h) in jobs 20 (placed at 0) and 21 (at 900), both preemptible = false;
        # queue a holds nothing and wants 2 H100 (8/h).
        # a guaranteed 8/h: under it; b has no guarantee, so all it holds is above it and its
        # preemptible = false protects nothing. Cheapest of b's: 21 (2 x 100 s).
        ([QueueEntitlement("a", guarantee={"cost": 8.0})], [21]),
        # a guaranteed 2 H100 by model: under, and the job's H100s count towards it.
        ([QueueEntitlement("a", guarantee={"H100": 2})], [21]),
        # b's guarantee 16/h covers all it holds: nothing above it to take.
        ([QueueEntitlement("a", guarantee={"cost": 8.0}), QueueEntitlement("b", guarantee={"cost": 16.0})], []),
        # No guarantees, weights 1:1: of the 16/h held a deserves 8, b 8. a holds 0 < 8, b 16 > 8: what b
        # was lent is taken back; after: a 8, b 8, widest gap 8 -> 0.
        ([], [21]),
        # a guaranteed 2 A100 (H100s count nothing towards it), but as above it deserves 8/h by weight.
        ([QueueEntitlement("a", guarantee={"A100": 2})], [21]),
        # Weights a 1 : b 3: a deserves 16/4 = 4, b 12. Taking 8/h from b leaves a 8, b 8: gaps
        # |8 - 4| = 4 and |8 - 12| = 4, no narrower than before (|0 - 4|, |16 - 12|): refused.
        ([QueueEntitlement("b", weight=3)], []),
    ],
)
def test_preemption_across_queues(settings, queues, expected):
    site = Site(settings, make_node("h").gpus(4, "H100"), queues=queues)
    site.run(20, "h", 2, queue="b", placed=0.0, preemptible=False)
    site.run(21, "h", 2, queue="b", placed=900.0, preemptible=False)
    plan = site.plan(1000.0, wants(1, queue="a", count=2))
    assert victims(plan) == expected


def test_fair_share_off_never_preempts_across_queues(settings):
    site = Site(settings, make_node("h").gpus(4, "H100"), queues=[QueueEntitlement("a", guarantee={"cost": 8.0})],
                fair_share=False)
    site.run(20, "h", 4, queue="b")
    assert site.plan(1000.0, wants(1, queue="a", count=2)).preemptions == []


def test_a_job_waits_for_its_stopping_victims_without_choosing_more(settings):
    site = Site(settings, make_node("h").gpus(4, "H100"))
    site.run(10, "h", 2, priority=-1, stopping=True, preempted_for=1)
    site.run(11, "h", 2, priority=-1)
    plan = site.plan(1000.0, wants(1, count=2))
    assert plan.preemptions == []
    assert plan.waiting[1] == "waiting for preempted job(s) 10 to stop"
    [held] = site.pool.holdings[10]
    assert plan.reservations[1].devices == held.devices


def test_devices_freed_by_preemption_go_to_the_job_they_were_taken_for(settings):
    queues = [QueueEntitlement("a", guarantee={"cost": 8.0}), QueueEntitlement("c", guarantee={"cost": 100.0})]
    site = Site(settings, make_node("h").gpus(4, "H100"), make_node("l4").gpus(1, "L4"), queues=queues)
    site.run(30, "l4", 1, queue="a", max_runtime=10_000.0)
    site.run(20, "h", 2, queue="b", placed=900.0)
    site.run(21, "h", 2, queue="b", placed=0.0, max_runtime=10_000.0)
    first = site.plan(1000.0, wants(1, queue="a", count=2))
    assert victims(first) == [20]
    # The victim stopped. Queue c is further under its guarantee (100 % short) than a
    # ((8 - 0.8) / 8 = 90 %), so its job comes first in the next pass and would fit on the
    # freed H100s, but they are kept for job 1.
    site.pool.release(20)
    site.holders = [h for h in site.holders if h.job_id != 20]
    second = site.plan(1040.0, wants(3, queue="c", count=2, submitted=1030.0), wants(1, queue="a", count=2))
    assert placed_ids(second) == [1]


# A pass's holders, as (job id, queue, price per hour, stopping): ids 1-12, two queues.
_holder_sets = st.lists(
    st.dictionaries(st.integers(1, 12), st.tuples(st.sampled_from("ab"), st.sampled_from([0.8, 2.2, 4.0]), st.booleans())),
    min_size=1, max_size=12,
)


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(passes=_holder_sets)
def test_what_each_queue_holds_kept_from_pass_to_pass_equals_adding_it_up_afresh(settings, passes):
    """``held_by_queue`` adds and takes away only the holders that came, went, stopped or were
    repriced since the last pass; after every pass its sums per queue equal a fresh sum over
    the holders not stopping."""
    planner = Site(settings, make_node("l4").gpus(1, "L4")).planner
    for holders in passes:
        listed = [Holder(job_id, queue, 0, 0.0, None, True, price, stopping) for job_id, (queue, price, stopping) in holders.items()]
        parts, held = planner.held_by_queue(listed)
        fresh: dict[str, float] = {}
        for h in listed:
            assert parts[h.job_id] == {"cost": h.price_per_hour}
            if not h.stopping:
                fresh[h.queue] = fresh.get(h.queue, 0.0) + h.price_per_hour
        assert {name: total["cost"] for name, total in held.items() if name in fresh} == pytest.approx(fresh)
        assert all(abs(total["cost"]) < 1e-9 for name, total in held.items() if name not in fresh)
