"""The placement framework: the plugin interfaces, candidates as columns, rejections as data.

A filter answers for many nodes, devices or candidates at once with boolean masks, one per
reason code (``yield code, ok``); the engine keeps, for every node, device and candidate, the
first code that turned it down, so counting the reasons is one ``bincount``. The sentence a
person reads (``explain``) is written only for the summary of a job that waits, or for
``poold plan``. A scorer gives each candidate a raw measure (its own units, documented in its
docstring) and maps this decision's raw values to 0..100 (higher is better) itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from poold.scheduler.pool import ColumnarPool
from poold.scheduler.request import PlacementRequest

if TYPE_CHECKING:
    from poold.scheduler.mix import JobMix

Check = tuple[str, np.ndarray]


@dataclass
class EngineOptions:
    """The engine's settings (from ``[scheduler]`` in the daemon's config)."""

    count_outside_memory: bool = True
    cost_tolerance: float = 0.05
    seed: int = 0


@dataclass
class Context:
    """What plugins may read besides the request: the pool, the job mix, the options."""

    pool: ColumnarPool
    mix: "JobMix"
    options: EngineOptions
    cache: dict = field(default_factory=dict)  # plugins' own caches, by plugin name
    # Device slots that pass the static filters for a request (the engine's, cached).
    static_devices: Callable[[PlacementRequest], np.ndarray] = lambda request: np.zeros(0, dtype=np.int64)


@dataclass
class Candidates:
    """Ways to place one request, as columns: ``devices[i]`` (``count`` device slots, none for
    CPU-only jobs) on ``node[i]``, their total price per hour, the job's speed on their model,
    and how well the devices connect (``tier`` 0 is best; see ``candidates.gang_tier``)."""

    node: np.ndarray
    devices: np.ndarray
    model: np.ndarray
    price: np.ndarray
    speed: np.ndarray
    tier: np.ndarray
    links: np.ndarray

    def __len__(self) -> int:
        return len(self.node)

    def take(self, rows: np.ndarray) -> "Candidates":
        return Candidates(*(getattr(self, name)[rows] for name in _CANDIDATE_COLUMNS))

    @property
    def cost_per_work(self) -> np.ndarray:
        return self.price / self.speed


_CANDIDATE_COLUMNS = ("node", "devices", "model", "price", "speed", "tier", "links")


class NodeFilter(Protocol):
    name: str
    codes: tuple[str, ...]

    def check_nodes(self, request: PlacementRequest, ctx: Context, nodes: np.ndarray) -> Iterator[Check]: ...

    def explain(self, code: str, request: PlacementRequest, ctx: Context, node: int) -> str: ...


class DeviceFilter(Protocol):
    """``static`` filters read only what a device is (kind, model, profile), never what is
    held on it, so their verdicts are kept until the pool's layout changes."""

    name: str
    codes: tuple[str, ...]
    static: bool

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray) -> Iterator[Check]: ...

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str: ...


class CandidateFilter(Protocol):
    name: str
    codes: tuple[str, ...]

    def check_candidates(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> Iterator[Check]: ...

    def explain(self, code: str, request: PlacementRequest, ctx: Context, candidates: Candidates, row: int) -> str: ...


class Scorer(Protocol):
    """``raw`` is oriented so that higher is better. It is cached per node generation, so it
    must depend only on the request, the candidate's node and devices, and (for a scorer that
    sets ``reads_mix = True``, rescored when the mix changes) the job mix. ``normalize`` may
    be handed the engine's cached raw scores themselves: it must not write into them."""

    name: str

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray: ...

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray: ...


def min_max(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Map ``values`` onto 0..100 linearly (the best 100, the worst 0); all equal gives 100."""
    if len(values) == 0:
        return values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.full(len(values), 100.0)
    scaled = (values - low) / (high - low)
    return 100.0 * (scaled if higher_is_better else 1.0 - scaled)


@dataclass
class Rejections:
    """Why candidates were turned down: a count per reason code and one sentence each.

    ``stage`` ranks each code by how far into the pipeline it turned candidates down (node
    filters first, then device filters, candidate generation, candidate filters): the later,
    the nearer a miss, so summaries lead with the near misses."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    stage: dict[str, int] = field(default_factory=dict)

    def ranked(self) -> list[tuple[str, int]]:
        """(code, count), nearest misses first, then by count."""
        return sorted(self.counts.items(), key=lambda item: (-self.stage.get(item[0], 0), -item[1], item[0]))

    def summary(self, limit: int = 4) -> str:
        ranked = self.ranked()
        parts = [f"{code} x{count} (e.g. {self.examples[code]})" for code, count in ranked[:limit]]
        if len(ranked) > limit:
            parts.append(f"and {len(ranked) - limit} more reasons")
        return "; ".join(parts) if parts else "the pool has no nodes"
