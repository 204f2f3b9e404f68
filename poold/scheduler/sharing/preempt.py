"""Victim choice: the cheapest set of running jobs whose devices, once given back, let a
waiting job be placed.

Cheapest is, in this order: fewest jobs, least work lost (devices x seconds run), lowest
priority (the highest priority among the victims, lower is cheaper). The search asks the real
engine, node by node: only nodes where what is free plus what the candidates hold could hold
the request are tried (at most ``max_nodes`` of them, those with the cheapest candidates
first). On a node, each candidate alone is tried first, cheapest first; if none suffices,
candidates are released cheapest first until the request fits, then each is given back again,
dearest first, wherever the request still fits without it. What remains is a set from which
no job can be spared. The engine is asked only about sets whose devices and CPU cores could
hold the request. The pool is as it was when the search returns.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from poold.scheduler.engine import Engine, Placement
from poold.scheduler.request import PlacementRequest
from poold.scheduler.sharing.reserve import Phantoms, place_without

MAX_SINGLES_PER_NODE = 16


@dataclass(frozen=True)
class Candidate:
    """A running job that may be taken for the waiting one; ``work_lost`` is devices x seconds run."""

    job_id: int
    priority: int
    work_lost: float

    @property
    def cost(self) -> tuple[float, int, int]:
        return (self.work_lost, self.priority, self.job_id)


@dataclass(frozen=True)
class VictimSet:
    victims: tuple[Candidate, ...]
    placement: Placement

    @property
    def cost(self) -> tuple[int, float, int]:
        """(jobs, work lost, highest victim priority): compared in this order, lower is cheaper."""
        return (len(self.victims), sum(v.work_lost for v in self.victims), max(v.priority for v in self.victims))


def cheapest_victims(
    engine: Engine, request: PlacementRequest, candidates: list[Candidate], phantoms: Phantoms, max_nodes: int
) -> VictimSet | None:
    """The cheapest set of ``candidates`` that frees a placement of ``request``; None when none does."""
    pool = engine.pool
    by_node: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        for holding in pool.holdings.get(candidate.job_id, ()):
            by_node[holding.node].append(candidate)
    nodes = [node for node, found in by_node.items() if _could_fit(engine, request, node, found)]
    nodes.sort(key=lambda node: min(c.cost for c in by_node[node]))
    best: VictimSet | None = None
    for node in nodes[:max_nodes]:
        found = _on_node(engine, request, node, sorted(by_node[node], key=lambda c: c.cost), phantoms)
        if found is not None and (best is None or found.cost < best.cost):
            best = found
            if len(best.victims) == 1 and best.victims[0].work_lost == 0:
                break  # nothing can be cheaper
    return best


def _could_fit(engine: Engine, request: PlacementRequest, node: int, candidates: list[Candidate]) -> bool:
    """Whether free plus candidate-held capacity on ``node`` could hold the request (devices
    and CPU cores; the engine decides the rest)."""
    pool = engine.pool
    cpu = float(pool.node_cpu[node] - pool.node_cpu_held[node])
    span = pool.devices_of(node)
    freeable = pool.dev_free[span.start : span.stop].copy()
    for candidate in candidates:
        for holding in pool.holdings[candidate.job_id]:
            if holding.node != node:
                continue  # a gang's part elsewhere: released with it, but not room here
            cpu += holding.cpu_cores
            for device in holding.devices:
                freeable[device - span.start] += holding.share
    if cpu + 1e-9 < request.cpu_cores:
        return False
    usable = pool.dev_alive[span.start : span.stop] & pool.dev_allocatable[span.start : span.stop]
    return int(np.count_nonzero(usable & (freeable + 1e-9 >= request.share))) >= request.count


def _on_node(engine: Engine, request: PlacementRequest, node: int, ordered: list[Candidate], phantoms: Phantoms) -> VictimSet | None:
    singles = [c for c in ordered[:MAX_SINGLES_PER_NODE] if _could_fit(engine, request, node, [c])]
    for candidate in singles:
        placement = place_without(engine, request, [candidate.job_id], phantoms)
        if placement is not None:
            return VictimSet((candidate,), placement)
    # The shortest cheapest-first prefix that could hold the request is where asking starts.
    first = next((n for n in range(1, len(ordered) + 1) if _could_fit(engine, request, node, ordered[:n])), None)
    if first is None:
        return None
    taken: list[Candidate] = list(ordered[: first - 1])
    for candidate in ordered[first - 1 :]:
        taken.append(candidate)
        if place_without(engine, request, [c.job_id for c in taken], phantoms) is not None:
            break
    else:
        return None
    for candidate in sorted(taken, key=lambda c: c.cost, reverse=True):
        rest = [c for c in taken if c is not candidate]
        if rest and _could_fit(engine, request, node, rest) and place_without(engine, request, [c.job_id for c in rest], phantoms) is not None:
            taken = rest
    placement = place_without(engine, request, [c.job_id for c in taken], phantoms)
    assert placement is not None  # the set kept is one the request fits without
    return VictimSet(tuple(sorted(taken, key=lambda c: c.cost)), placement)
