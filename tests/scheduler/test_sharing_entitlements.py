"""Entitlement arithmetic: usage per model, per kind and in cost; guarantees, limits, queue
order, entitled shares. Prices from the settings fixture: H100 4.0, A100 2.2, L4 0.8 per hour."""

from __future__ import annotations

import pytest

from poold.scheduler.pool import Holding
from poold.scheduler.sharing import QueueEntitlement
from poold.scheduler.sharing.entitlements import (
    deficit, entitled_costs, guarantee_cost, held_amounts, over_limit, queue_order_key, under_guarantee_keys, within_guarantee,
)
from tests.builders import make_node, make_pool


def slots(pool, node: int, model: str, n: int, mig: bool = False) -> tuple[int, ...]:
    found = [d for d in pool.devices_of(node) if pool.model_name(d) == model and (pool.dev_profile[d] >= 0) == mig]
    return tuple(found[:n])


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        # two whole H100: 2 devices of model h100 and kind gpu; cost as given (2 x 4.0)
        ("two-h100", {"h100": 2.0, "gpu": 2.0, "cost": 8.0}),
        # half of one L4: 0.5 device; cost 0.5 x 0.8 = 0.4
        ("half-l4", {"l4": 0.5, "gpu": 0.5, "cost": 0.4}),
        # a 3g.40gb slice of an A100: 3 of 7 slices = 0.428571 of a device
        ("mig-3g", {"a100": 3 / 7, "gpu": 3 / 7, "cost": 1.0}),
        # three NPUs: kind npu, model 910b
        ("three-npu", {"910b": 3.0, "npu": 3.0, "cost": 4.8}),
    ],
)
def test_held_amounts_per_model_kind_and_cost(settings, what, expected):
    pool = make_pool(settings, make_node("h").gpus(2, "H100"), make_node("l").gpus(1, "L4"),
                     make_node("a").gpus(1, "A100").mig(0, ["3g.40gb"]), make_node("n").npus(4))
    holding = {
        "two-h100": Holding(1, 0, slots(pool, 0, "H100", 2), 1.0, (0, 0), 0, 0),
        "half-l4": Holding(1, 1, slots(pool, 1, "L4", 1), 0.5, (0,), 0, 0),
        "mig-3g": Holding(1, 2, slots(pool, 2, "A100", 1, mig=True), 1.0, (0,), 0, 0),
        "three-npu": Holding(1, 3, slots(pool, 3, "910B", 3), 1.0, (0, 0, 0), 0, 0),
    }[what]
    assert held_amounts(pool, (holding,), expected["cost"]) == pytest.approx(expected)


QUEUE = QueueEntitlement("research", weight=2, guarantee={"H100": 16, "cost": 40.0}, limit={"gpu": 24, "cost": 100.0})


@pytest.mark.parametrize(
    ("usage", "short", "under"),
    [
        # h100 12 of 16 -> 4/16 = 0.25; cost 36 of 40 -> 4/40 = 0.10; the larger: 0.25
        ({"h100": 12, "cost": 36.0}, 0.25, {"h100", "cost"}),
        # h100 16 of 16 -> 0; cost 30 of 40 -> 10/40 = 0.25
        ({"h100": 16, "cost": 30.0}, 0.25, {"cost"}),
        # at or above both: 0
        ({"h100": 20, "cost": 80.0}, 0.0, set()),
        # nothing held: (16 - 0)/16 = 1.0
        ({}, 1.0, {"h100", "cost"}),
    ],
)
def test_deficit_is_the_largest_fraction_short_of_a_guarantee_key(usage, short, under):
    assert deficit(usage, QUEUE) == pytest.approx(short)
    assert under_guarantee_keys(usage, QUEUE) == under


def test_keys_are_case_insensitive():
    assert QueueEntitlement("q", guarantee={"H100": 2, "Cost": 3}).guarantee == {"h100": 2.0, "cost": 3.0}


@pytest.mark.parametrize(
    ("usage", "adding", "refused"),
    [
        # gpu 20 + 4 = 24 <= 24: allowed
        ({"gpu": 20, "cost": 50.0}, {"gpu": 4, "cost": 16.0}, None),
        # gpu 22 + 4 = 26 > 24: refused, the sentence names the key and both numbers
        ({"gpu": 22, "cost": 50.0}, {"gpu": 4, "cost": 16.0}, "queue research would hold 26 gpu over its limit of 24 gpu"),
        # cost 90 + 16 = 106 > 100 per hour
        ({"gpu": 2, "cost": 90.0}, {"gpu": 4, "cost": 16.0}, "queue research would hold 106 per hour over its limit of 100 per hour"),
        # already over (a limit lowered), but this job adds no gpu and no cost: allowed
        ({"gpu": 30, "cost": 50.0}, {"npu": 1}, None),
    ],
)
def test_limits(usage, adding, refused):
    assert over_limit(usage, adding, QUEUE) == refused


@pytest.mark.parametrize(
    ("usage", "part", "within"),
    [
        # cost 50 - 8 = 42 >= 40 and h100 20 - 2 = 18 >= 16: above the guarantee, not protected
        ({"h100": 20, "cost": 50.0}, {"h100": 2, "cost": 8.0}, False),
        # cost 50 - 12 = 38 < 40: within
        ({"h100": 20, "cost": 50.0}, {"h100": 2, "cost": 12.0}, True),
        # h100 17 - 2 = 15 < 16: within, though the cost stays above
        ({"h100": 17, "cost": 90.0}, {"h100": 2, "cost": 8.0}, True),
        # an A100 job counts nothing towards the H100 key; cost 90 - 2.2 >= 40: not protected
        ({"h100": 16, "cost": 90.0}, {"a100": 1, "cost": 2.2}, False),
    ],
)
def test_within_guarantee(usage, part, within):
    assert within_guarantee(usage, part, QUEUE) is within


def test_queue_order_under_guarantee_first_then_priority_then_cost_per_weight():
    a = QueueEntitlement("a", weight=1, guarantee={"cost": 40.0})
    b = QueueEntitlement("b", weight=2)
    c = QueueEntitlement("c", weight=1)
    d = QueueEntitlement("d", weight=1, priority=5)
    keys = {
        # a: cost 30 of 40 -> under by 10/40 = 0.25: first
        "a": queue_order_key({"cost": 30.0}, a),
        # b: 30 per hour / weight 2 = 15
        "b": queue_order_key({"cost": 30.0}, b),
        # c: 20 / 1 = 20: after b although it holds less
        "c": queue_order_key({"cost": 20.0}, c),
        # d: priority 5 goes before b and c whatever it holds
        "d": queue_order_key({"cost": 90.0}, d),
    }
    assert sorted(keys, key=keys.get) == ["a", "d", "b", "c"]


@pytest.mark.parametrize(
    ("total", "guarantees", "expected"),
    [
        # weights 1/1/2 of 100: 25/25/50
        (100.0, {}, {"a": 25.0, "b": 25.0, "c": 50.0}),
        # a's guarantee 40 > its 25: a 40, b and c share 60 by 1:2 -> 20, 40
        (100.0, {"a": 40.0}, {"a": 40.0, "b": 20.0, "c": 40.0}),
        # a guarantee below its weighted share changes nothing
        (100.0, {"a": 10.0}, {"a": 25.0, "b": 25.0, "c": 50.0}),
        # guarantees 70 + 30 of 80 (more than there is): a is 70 - 20 = 50 above its weighted 20, fixed first at 70;
        # of the 10 left b (weight 1 of 3) would share 3.3 < 30: b gets all that is left, 10; c nothing.
        (80.0, {"a": 70.0, "b": 30.0}, {"a": 70.0, "b": 10.0, "c": 0.0}),
        # a guarantee above all there is: cut to the total.
        (50.0, {"a": 70.0}, {"a": 50.0, "b": 0.0, "c": 0.0}),
    ],
)
def test_entitled_costs_water_fill(total, guarantees, expected):
    queues = [QueueEntitlement("a"), QueueEntitlement("b"), QueueEntitlement("c", weight=2)]
    assert entitled_costs(total, queues, guarantees) == pytest.approx(expected)


def test_guarantee_in_devices_is_priced():
    # 16 H100 at 4.0 = 64.0, more than its cost key 40.0; 2 gpu at mean 3.1 = 6.2 less than 40
    assert guarantee_cost(QueueEntitlement("q", guarantee={"H100": 16, "cost": 40.0}), {"h100": 4.0}) == 64.0
    assert guarantee_cost(QueueEntitlement("q", guarantee={"gpu": 2, "cost": 40.0}), {"gpu": 3.1}) == 40.0
