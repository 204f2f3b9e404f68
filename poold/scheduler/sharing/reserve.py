"""Reservations for backfill: the earliest time a waiting job's placement fits, and keeping
reserved devices from jobs that would still run when the reservation starts.

``earliest_start`` asks the real engine: running jobs are released in order of their expected
end (placed + max_runtime; a job without max_runtime never ends for this purpose) until the
request fits; fitting is monotone in what is released (freeing more never turns a fit away),
so the shortest prefix is found by bisection, about log2(running) decisions. Everything
released is applied back before it returns.

``Phantoms`` holds a reservation in the pool while a pass plans: one holding per reserved
device, of the reserved share clipped to what is free on the device now (memory, CPU cores
and host memory likewise), so no later decision of the pass can take it. Because a phantom
never holds more than is free, releasing it gives back exactly what it took; a question that
releases running jobs lifts the phantoms of their nodes, holds them again over what that frees
(a reserved device stays reserved when its holder ends), and puts the very same ones back.
"""

from __future__ import annotations

from collections.abc import Iterable

from poold.scheduler.engine import Engine, Placement
from poold.scheduler.pool import Holding
from poold.scheduler.request import PlacementRequest


class Phantoms:
    """Reservations held in the engine's pool under negative job ids; see the module docstring."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._next = -1
        self._reserved: dict[int, tuple[Holding, ...]] = {}
        self._held: dict[int, list[Holding]] = {}

    def hold(self, job_id: int, holdings: tuple[Holding, ...]) -> None:
        """Keep what ``holdings`` (a placement's, one per node) would take, as far as it is free
        now, for ``job_id``."""
        self.drop(job_id)
        self._reserved[job_id] = holdings
        self._held[job_id] = [part for holding in holdings for part in self._apply(holding)]

    def drop(self, job_id: int) -> None:
        """Give back and forget ``job_id``'s reservation."""
        self._reserved.pop(job_id, None)
        for part in self._held.pop(job_id, ()):
            self.engine.pool.release(part.job_id)

    def drop_all(self) -> None:
        for job_id in list(self._reserved):
            self.drop(job_id)

    def reserved(self) -> dict[int, tuple[Holding, ...]]:
        return dict(self._reserved)

    def lift(self, nodes: set[int]) -> dict[int, list[Holding]]:
        """Give back the phantoms on ``nodes``, keeping the reservations; returns what they held
        (``put_back`` holds exactly that again)."""
        lifted = {job_id: parts for job_id, parts in self._held.items() if any(h.node in nodes for h in self._reserved[job_id])}
        for job_id, parts in lifted.items():
            for part in parts:
                self.engine.pool.release(part.job_id)
            del self._held[job_id]
        return lifted

    def widen(self, nodes: set[int]) -> None:
        """Hold the lifted reservations on ``nodes`` again, over what is free now."""
        for job_id, holdings in self._reserved.items():
            if job_id not in self._held and any(h.node in nodes for h in holdings):
                self._held[job_id] = [part for holding in holdings for part in self._apply(holding)]

    def put_back(self, lifted: dict[int, list[Holding]]) -> None:
        for job_id, parts in lifted.items():
            for part in parts:
                self.engine.pool.apply(part)
            self._held[job_id] = parts

    def _apply(self, holding: Holding) -> list[Holding]:
        pool = self.engine.pool
        parts: list[Holding] = []
        cpu = min(holding.cpu_cores, max(0.0, float(pool.node_cpu[holding.node] - pool.node_cpu_held[holding.node])))
        memory = min(holding.host_memory_mib, max(0, int(pool.node_mem[holding.node] - pool.node_mem_held[holding.node])))
        for position, device in enumerate(holding.devices or (None,)):
            share = 0.0 if device is None else min(holding.share, float(pool.dev_free[device]))
            device_memory = 0
            if device is not None and pool.dev_mem_total[device] >= 0:
                free_memory = int(pool.dev_mem_total[device] - pool.dev_mem_held[device])
                device_memory = max(0, min(holding.memory_mib[position], free_memory))
            part_cpu, part_memory = (cpu, memory) if position == 0 else (0.0, 0)
            if share <= 0 and device_memory == 0 and part_cpu <= 0 and part_memory == 0:
                continue
            devices = () if device is None else (device,)
            part = Holding(self._next, holding.node, devices, share, (device_memory,) if devices else (), part_cpu, part_memory)
            self._next -= 1
            pool.apply(part)
            parts.append(part)
        return parts


def place_without(engine: Engine, request: PlacementRequest, released: Iterable[int], phantoms: Phantoms) -> Placement | None:
    """The engine's placement of ``request`` with the jobs ``released`` given back for the
    question only, the reservations of ``phantoms`` held over what that frees too (a reserved
    device stays reserved when its holder ends). The pool is as it was when this returns."""
    pool = engine.pool
    nodes = {holding.node for job_id in released for holding in pool.holdings.get(job_id, ())}
    before = phantoms.lift(nodes)
    taken = [holding for job_id in released for holding in pool.release(job_id)]
    phantoms.widen(nodes)
    try:
        decision = engine.place(request)
    finally:
        phantoms.lift(nodes)
        for holding in reversed(taken):
            pool.apply(holding)
        phantoms.put_back(before)
    return decision if isinstance(decision, Placement) else None


def earliest_start(
    engine: Engine, request: PlacementRequest, ends: list[tuple[float, int]], now_s: float, phantoms: Phantoms
) -> tuple[float, Placement] | None:
    """The earliest time ``request`` fits as running jobs end, and the placement then.

    ``ends``: (expected end, job id) of the jobs that end, in any order. None when it does not
    fit even once all of them ended (jobs without an end hold what it needs)."""
    ordered = sorted(ends)
    jobs = [job_id for _, job_id in ordered]
    if place_without(engine, request, jobs, phantoms) is None:
        return None
    low, high = 0, len(jobs)  # the request does not fit with ``low`` ended (0: it waits), fits with ``high``
    while high - low > 1:
        middle = (low + high) // 2
        if place_without(engine, request, jobs[:middle], phantoms) is not None:
            high = middle
        else:
            low = middle
    placement = place_without(engine, request, jobs[:high], phantoms)
    assert placement is not None  # fitting is monotone in what is released
    return max(now_s, ordered[high - 1][0]) if high else now_s, placement
