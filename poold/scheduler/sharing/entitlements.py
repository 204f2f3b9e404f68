"""Entitlement arithmetic: what a queue holds (per model, per kind, in cost), whether it is
under its guarantee or would go over a limit, the order queues are served in, and the share
of the pool each is entitled to.

An amount is a ``dict`` from key to number: lower-cased model names and kinds count devices
(a share counts its fraction, a MIG slice its slices out of 7), ``"cost"`` is money per hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from poold.scheduler.pool import KINDS, ColumnarPool, Holding
from poold.scheduler.sharing.model import COST, QueueEntitlement

Amounts = dict[str, float]
EPSILON = 1e-9
MIG_SLICES_PER_GPU = 7


def held_amounts(pool: ColumnarPool, holdings: Iterable[Holding], price_per_hour: float) -> Amounts:
    """What a job's holdings (one per node it holds on) count for: devices per model and per
    kind, and its price per hour.

    Two H100 whole: {"h100": 2, "gpu": 2, "cost": price}; half of one L4: {"l4": 0.5, "gpu": 0.5, ...};
    a 3g.40gb slice of an A100: {"a100": 3/7, "gpu": 3/7, ...}."""
    amounts: Amounts = {COST: float(price_per_hour)}
    labels = pool.device_labels()
    for holding in holdings:
        for device in holding.devices:
            model, kind, slices = labels[device]
            amount = holding.share * (slices / MIG_SLICES_PER_GPU if slices else 1.0)
            amounts[model] = amounts.get(model, 0.0) + amount
            if kind is not None:
                amounts[kind] = amounts.get(kind, 0.0) + amount
    return amounts


def add(total: Amounts, part: Mapping[str, float], sign: float = 1.0) -> None:
    for key, amount in part.items():
        total[key] = total.get(key, 0.0) + sign * amount


def deficit(usage: Mapping[str, float], queue: QueueEntitlement) -> float:
    """How far under its guarantee a queue is: the largest (guarantee - usage) / guarantee over
    its guarantee's keys, 0 when it holds all of it. Guarantee {h100: 16, cost: 40}, usage
    {h100: 12, cost: 36}: max(4/16, 4/40) = 0.25."""
    worst = 0.0
    for key, guaranteed in queue.guarantee.items():
        if guaranteed > 0:
            worst = max(worst, (guaranteed - usage.get(key, 0.0)) / guaranteed)
    return worst


def under_guarantee_keys(usage: Mapping[str, float], queue: QueueEntitlement) -> set[str]:
    return {key for key, guaranteed in queue.guarantee.items() if usage.get(key, 0.0) < guaranteed - EPSILON}


def over_limit(usage: Mapping[str, float], adding: Mapping[str, float], queue: QueueEntitlement) -> str | None:
    """Why holding ``adding`` more would take the queue over a limit, or None. Limit {h100: 16},
    usage {h100: 14}, adding {h100: 4}: 18 > 16, refused."""
    for key, limit in queue.limit.items():
        after = usage.get(key, 0.0) + adding.get(key, 0.0)
        if adding.get(key, 0.0) > 0 and after > limit + EPSILON:
            unit = "per hour" if key == COST else key
            return f"queue {queue.name} would hold {after:g} {unit} over its limit of {limit:g} {unit}"
    return None


def within_guarantee(usage: Mapping[str, float], part: Mapping[str, float], queue: QueueEntitlement) -> bool:
    """Whether ``part`` of what the queue holds is work within its guarantee: taking it away
    would leave the queue under its guarantee in a key it counts for. Guarantee {cost: 40},
    usage {cost: 50}: a part of cost 8 leaves 42 >= 40, not within; a part of cost 12 leaves
    38 < 40, within."""
    for key, guaranteed in queue.guarantee.items():
        amount = part.get(key, 0.0)
        if amount > 0 and usage.get(key, 0.0) - amount < guaranteed - EPSILON:
            return True
    return False


def queue_order_key(usage: Mapping[str, float], queue: QueueEntitlement) -> tuple:
    """Queues are served lowest key first: those under their guarantee, furthest under first;
    then by queue priority (highest first); then weighted fair share over cost, the lowest
    cost per hour per unit of weight first (usage 30/h at weight 2 = 15 goes before 20/h at 1)."""
    short = deficit(usage, queue)
    if short > EPSILON:
        return (0, -short, 0.0, queue.name)
    return (1, -queue.priority, usage.get(COST, 0.0) / queue.weight, queue.name)


def entitled_costs(total: float, queues: Iterable[QueueEntitlement], guaranteed_cost: Mapping[str, float]) -> dict[str, float]:
    """Each queue's entitled cost per hour when all want more than ``total`` can give: water-filling,
    as the order above serves them. A queue gets max(its guarantee, its weighted share of what the
    queues without a larger guarantee share); guarantees beyond ``total`` are cut to what is left,
    furthest above its weighted share served first, so the entitlements sum to ``total``.

    total 100, A weight 1 guarantee 40, B weight 1, C weight 2: weighted shares 25/25/50; A's 40
    is more than 25, so A gets 40 and B, C share 60 by weight: B 20, C 40."""
    queues = list(queues)
    fixed: dict[str, float] = {}
    while True:
        free = [q for q in queues if q.name not in fixed]
        left = max(0.0, total - sum(fixed.values()))
        weights = sum(q.weight for q in free)
        if not free:
            return fixed
        over = [q for q in free if guaranteed_cost.get(q.name, 0.0) > left * q.weight / weights + EPSILON]
        if not over:
            return {**fixed, **{q.name: left * q.weight / weights for q in free}}
        # The guarantee furthest above its weighted share is fixed first, at most what is left.
        first = max(over, key=lambda q: guaranteed_cost.get(q.name, 0.0) - left * q.weight / weights)
        fixed[first.name] = min(guaranteed_cost.get(first.name, 0.0), left)


def guarantee_cost(queue: QueueEntitlement, price_of_key: Mapping[str, float]) -> float:
    """A guarantee in money per hour: its ``cost`` key, or its device keys priced at
    ``price_of_key`` (the mean price per device of a model or kind), whichever is larger.
    {h100: 16} at 4.0 per H100-hour: 64.0."""
    devices = sum(amount * price_of_key.get(key, 0.0) for key, amount in queue.guarantee.items() if key != COST)
    return max(queue.guarantee.get(COST, 0.0), devices)


def price_per_key(pool: ColumnarPool) -> dict[str, float]:
    """The mean price per hour of one device of each model and each kind in the pool (lower-cased
    keys), to price a guarantee given in devices."""
    totals: dict[str, list[float]] = {}
    for device in range(pool.n_devices):
        if not (pool.dev_alive[device] and pool.dev_allocatable[device]):
            continue
        price = float(pool.dev_price[device])
        kind = int(pool.dev_kind[device])
        keys = [pool.model_name(device).lower()] + ([KINDS[kind]] if 0 <= kind < len(KINDS) else [])
        for key in keys:
            found = totals.setdefault(key, [0.0, 0.0])
            found[0] += price
            found[1] += 1
    return {key: total / count for key, (total, count) in totals.items()}


def widest_gap(costs: Mapping[str, float], deserved: Mapping[str, float], names: Iterable[str]) -> float:
    """The largest |cost held - cost deserved| per hour among ``names``: how far from fair they are.
    Held {a: 10, b: 30}, deserved {a: 20, b: 20}: 10."""
    return max((abs(costs.get(name, 0.0) - deserved.get(name, 0.0)) for name in names), default=0.0)
