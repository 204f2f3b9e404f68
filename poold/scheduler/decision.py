"""The engine's decisions: a :class:`Placement` (its :class:`Choice` per node, what it holds)
or an :class:`Unplaceable` with its reasons, read when first asked for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from poold.scheduler.candidates import TIER_NAMES
from poold.scheduler.framework import Rejections
from poold.scheduler.pool import ColumnarPool, Holding
from poold.scheduler.request import PlacementRequest


@dataclass
class Choice:
    """One candidate of a decision, with its scores (0..100 per scorer, and the weighted total)."""

    node: int
    devices: tuple[int, ...]
    model: str | None
    price_per_hour: float
    speed: float
    tier: int
    total: float
    # Builds ``parts`` when first read (a simulation never reads them).
    make_parts: Callable[[], dict[str, float | tuple[Callable[[np.ndarray], np.ndarray], float]]] = field(repr=False)

    @cached_property
    def parts(self) -> dict[str, float | tuple[Callable[[np.ndarray], np.ndarray], float]]:
        """Per scorer in the stack's order: its score (0..100), or, for a scorer that rated
        every candidate alike, its normalize and raw value here, scored only when asked for
        (``poold plan`` and a pass's breakdown read them; a simulation never does)."""
        return self.make_parts()

    @cached_property
    def scores(self) -> dict[str, float]:
        """0..100 per scorer."""
        return {name: _score(part) for name, part in self.parts.items()}

    @property
    def cost_per_work(self) -> float:
        return self.price_per_hour / self.speed


@dataclass
class Placement:
    """A decision. A gang (``poold.scheduler.gang``) has ``parts``, one choice per node in rank
    order (``chosen`` is the first); a one-node placement has none."""

    request: PlacementRequest
    chosen: Choice
    runner_up: Choice | None
    pool: ColumnarPool
    parts: tuple[Choice, ...] = ()

    @property
    def choices(self) -> tuple[Choice, ...]:
        """One choice per node the placement holds on, in rank order."""
        return self.parts or (self.chosen,)

    @cached_property
    def holdings(self) -> tuple[Holding, ...]:
        """What the placement holds, one holding per node in rank order (the pass applies them
        to the pool and proposes them to the store together)."""
        return tuple(self._holding(choice) for choice in self.choices)

    @property
    def holding(self) -> Holding:
        """What a one-node placement holds; a gang has several: :attr:`holdings`."""
        if len(self.choices) > 1:
            raise ValueError(f"job {self.request.job_id} is a gang over {len(self.choices)} nodes: read Placement.holdings")
        return self.holdings[0]

    @property
    def price_per_hour(self) -> float:
        return sum(choice.price_per_hour for choice in self.choices)

    def _holding(self, choice: Choice) -> Holding:
        devices = list(choice.devices)
        memory = self.request.memory_to_hold(self.pool.dev_mem_total[devices]).tolist() if devices else []
        return Holding(
            job_id=self.request.job_id,
            node=choice.node,
            devices=choice.devices,
            share=self.request.share,
            memory_mib=tuple(memory),
            cpu_cores=self.request.cpu_cores,
            host_memory_mib=self.request.host_memory_mib,
        )

    def summary(self, choice: Choice, scores: dict[str, float] | None = None) -> dict[str, Any]:
        """One choice as plain JSON data (what ``poold plan`` shows, and what a pass records in
        the ``job.placed`` event): node, model, device uuids, price per hour, speed, cost per
        unit of work, locality (several devices), and each scorer's 0..100 (``scores``, else
        ``choice.scores``) with the weighted ``total``."""
        pool = self.pool
        scores = choice.scores if scores is None else scores
        return {
            "node": str(pool.node_name[choice.node]),
            "model": None if choice.model is None else str(choice.model),
            "devices": [str(pool.dev_uuid[slot]) for slot in choice.devices],
            "price_per_hour": float(choice.price_per_hour),
            "speed": float(choice.speed),
            "cost_per_work": float(choice.cost_per_work),
            "locality": TIER_NAMES[choice.tier] if len(choice.devices) > 1 else None,
            "scores": {**{name: float(score) for name, score in scores.items()}, "total": float(choice.total)},
        }

    def breakdown(self) -> dict[str, Any]:
        """The score breakdown a pass records in the job's ``job.placed`` event (``poold why``
        reads it): ``chosen`` (:meth:`summary`), ``runners_up`` (the next best, on another
        model when there is one; empty when there was none) and, for a gang, ``parts`` by rank
        (``chosen`` is rank 0, each part its own decision).

        A pass pays for it on every placement, so the runner-up takes from the chosen the
        scores of scorers that rated every candidate of their decision alike: one normalize
        call for the two (the same function of the same raw value)."""
        chosen = self.chosen.scores
        record: dict[str, Any] = {"chosen": self.summary(self.chosen, chosen), "runners_up": []}
        if self.runner_up is not None:
            scores = {name: chosen[name] if _alike(self.chosen.parts.get(name), part) else _score(part)
                      for name, part in self.runner_up.parts.items()}
            record["runners_up"] = [self.summary(self.runner_up, scores)]
        if self.parts:
            record["parts"] = [self.summary(part) for part in self.parts]
        return record

    def describe(self, choice: Choice) -> str:
        pool = self.pool
        where = pool.node_name[choice.node]
        if not choice.devices:
            return f"{self.request.cpu_cores:g} CPU cores on {where}"
        first = choice.devices[0]
        profile = pool.profile_name(first)
        what = f"MIG {profile} of {choice.model}" if profile else choice.model
        share = f" ({self.request.share:g} of it)" if self.request.fractional else ""
        return (
            f"{len(choice.devices)}x {what}{share} on {where} at {choice.price_per_hour:.2f}/h, "
            f"speed {choice.speed:g} -> {choice.cost_per_work:.2f} per unit of work"
        )

    @property
    def reason(self) -> str:
        why = {"cost": "cheapest per unit of work", "time": "fastest", "pack": "tightest fit"}[self.request.objective]
        if self.request.count == 0:
            why = "CPU only"
        if len(self.choices) > 1:
            return f"{why}: a gang of {len(self.choices)} parts: " + "; ".join(
                f"rank {rank}: {self.describe(choice)}" for rank, choice in enumerate(self.choices)
            )
        text = f"{why}: {self.describe(self.chosen)}"
        if self.runner_up is not None:
            text += f"; next best: {self.describe(self.runner_up)}"
        return text


def _score(part: float | tuple[Callable[[np.ndarray], np.ndarray], float]) -> float:
    """A scorer's 0..100 from a choice's part: the score, or the lazy (normalize, raw) scored now."""
    return part if isinstance(part, float) else float(part[0](np.array([part[1]]))[0])


def _alike(one, other) -> bool:
    """Two lazy parts (normalize, raw) of one scorer in one decision with the same raw value."""
    return isinstance(one, tuple) and isinstance(other, tuple) and one[1] == other[1]


@dataclass
class Unplaceable:
    """A request that fits nowhere now. Its reasons are counted and written when first asked
    for (a simulation that only needs the verdict never pays for the sentences)."""

    request: PlacementRequest
    explain: Callable[[], Rejections]

    @cached_property
    def rejections(self) -> Rejections:
        return self.explain()

    @property
    def reason(self) -> str:
        return "no placement fits: " + self.rejections.summary()
