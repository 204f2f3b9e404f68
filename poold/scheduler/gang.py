"""Gangs: one job over several nodes, every part placed at once or none.

A request with ``nodes`` above 1 has that many parts of ``count`` devices each (Slurm's
``--nodes`` with ``--gpus-per-node``). One with ``same_node = false`` has ``count`` devices in
all, split by :func:`splits` into the fewest equal parts that a node of one chip model can
hold (16 GPUs over 8-GPU nodes: 2 parts of 8; 12 GPUs over 8-GPU nodes: 2 parts of 6); the
first split that can be placed now wins, so a job that fits on one node stays a one-node job.

Each part is a one-node request (``count`` devices, the job's CPU cores and host memory on
its node) decided by the engine's own per-node work: the same filters, for each node and chip
model the best-connected set of devices (``candidates.gangs``), the same scores. Then:

1. the units that can take a part (one per node and model, with its best set) are grouped by
   the node's network label and the model: a gang never mixes chip models and never spans
   networks (nodes without a label form one group of their own);
2. each group with at least as many units as parts offers its best ones, by total score
   (ties: the engine's seeded node order);
3. the group whose offered parts sum to the highest total wins (equal sums: the group whose
   best node comes first in the node order). Ranks follow the score: rank 0, whose node is
   ``MASTER_ADDR``, is the best part.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from poold.scheduler.engine import _OK, TOO_FEW, TOO_FEW_NODES, Engine, Placement, Unplaceable
from poold.scheduler.framework import Rejections
from poold.scheduler.request import PlacementRequest
from poold.scheduler.scorers.first_fit import node_order


def splits(engine: Engine, request: PlacementRequest) -> list[tuple[int, int]]:
    """The ways to cut ``request`` into parts, as (devices per part, parts), fewest parts first.

    ``nodes = N``: one way, N parts of ``count``. ``same_node = false``: every p dividing
    ``count`` with ``count / p`` no more than the most devices of one model that pass the
    request's static filters on one node (``count`` itself when none do: it cannot fit)."""
    if request.nodes > 1:
        return [(request.count, request.nodes)]
    pool = engine.pool
    static = engine.ctx.static_devices(request)
    if not len(static):
        return [(request.count, 1)]
    keys = pool.dev_node[static].astype(np.int64) * (len(pool.models.names) + 1) + pool.dev_model[static]
    largest = int(np.unique(keys, return_counts=True)[1].max())
    ways = [(request.count // p, p) for p in range(1, request.count + 1) if request.count % p == 0 and request.count // p <= largest]
    return ways or [(request.count, 1)]


def place_gang(engine: Engine, request: PlacementRequest) -> Placement | Unplaceable:
    """Place every part of ``request`` or none (see the module docstring)."""
    tried: list[tuple[PlacementRequest, object, int, int]] = []
    for per_part, parts in splits(engine, request):
        part = replace(request, count=per_part, nodes=1, same_node=True)
        if parts == 1:
            decision = engine.place(part)
            if isinstance(decision, Placement):
                return Placement(request, decision.chosen, decision.runner_up, engine.pool)
            tried.append((part, engine._entry(part), 0, parts))
            continue
        entry = engine._entry(part)
        valid = np.flatnonzero(entry.unit_code == _OK)
        picked, have = _best_group(engine, part, entry, valid, parts)
        if picked is None:
            tried.append((part, entry, have, parts))
            continue
        normalized, raw, total = engine.totals(part, entry, valid)
        choices = tuple(engine.choice(part, entry, valid, int(i), normalized, raw, total) for i in picked)
        return Placement(request, choices[0], None, engine.pool, parts=choices)
    return Unplaceable(request, _explainer(engine, request, tried))


def _best_group(engine: Engine, part: PlacementRequest, entry, valid: np.ndarray, parts: int) -> tuple[np.ndarray | None, int]:
    """Positions (into ``valid``) of the best ``parts`` units of the best (network, model)
    group, in rank order, or None; and the size of the largest group."""
    if len(valid) == 0:
        return None, 0
    _, _, total = engine.totals(part, entry, valid)
    pool = engine.pool
    nodes = entry.unit_node[valid]
    order = node_order(engine.ctx)[nodes]
    groups = pool.node_network[nodes].astype(np.int64) * (len(pool.models.names) + 1) + entry.rows.model[valid]
    ranked = np.lexsort((order, -total))  # best first; equal totals in the node order
    best, best_key, largest = None, None, 0
    for group in np.unique(groups):
        members = ranked[groups[ranked] == group]
        largest = max(largest, len(members))
        if len(members) < parts:
            continue
        top = members[:parts]
        key = (-round(float(total[top].sum()), 6), float(order[top[0]]))
        if best_key is None or key < best_key:
            best, best_key = top, key
    return best, largest


def _explainer(engine: Engine, request: PlacementRequest, tried: list):
    """Why no split could be placed: the reasons of the fewest-parts split's part, and how many
    nodes of one network and model could take such a part."""
    part, entry, have, parts = tried[0]
    explain_part = engine.explainer(part, entry)
    code = TOO_FEW_NODES if request.nodes > 1 else TOO_FEW

    def explain() -> Rejections:
        rejections = explain_part()
        if parts > 1:
            rejections.counts[code] = rejections.counts.get(code, 0) + 1
            rejections.examples[code] = (
                f"{have} node(s) of one network and chip model can take a part of {part.count} devices now, "
                f"{parts} parts asked ({request.count * request.nodes if request.nodes > 1 else request.count} devices in all)"
            )
        return rejections

    return explain
