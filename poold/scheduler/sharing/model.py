"""What the sharing planner reads and returns: queues with entitlements, the jobs that wait
and the jobs that hold devices, and the plan of one pass. Plain data, no store, no pool.

Keys of a guarantee or limit (``QueueEntitlement.guarantee``/``limit``): a device model as the
pool names it (``"H100"``, case-insensitive), a device kind (``"gpu"``, ``"npu"``, ``"fpga"``),
or ``"cost"`` (money per hour, in the unit of the configured prices). Model and kind amounts
are devices, counting a share as its fraction and a MIG slice as its slices out of 7.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poold.entitlements import COST_KEY
from poold.scheduler.engine import Placement
from poold.scheduler.pool import Holding
from poold.scheduler.request import PlacementRequest

COST = COST_KEY  # one spelling for the config, the API and the planner


@dataclass(frozen=True)
class QueueEntitlement:
    """One queue's share of the pool: ``weight`` (> 0) shares what is left after guarantees,
    ``guarantee`` is served before any weighted share, ``limit`` is never exceeded. ``priority``
    orders queues that are all at or above their guarantee before weights do."""

    name: str
    priority: int = 0
    weight: float = 1.0
    guarantee: dict[str, float] = field(default_factory=dict)
    limit: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"queue {self.name}: weight must be above 0, got {self.weight}")
        for what, amounts in (("guarantee", self.guarantee), ("limit", self.limit)):
            for key, amount in amounts.items():
                if amount < 0:
                    raise ValueError(f"queue {self.name}: {what} {key} must not be negative, got {amount}")
        # Keys compare case-insensitively: the pool's model names are matched lower-cased.
        object.__setattr__(self, "guarantee", {key.lower(): float(v) for key, v in self.guarantee.items()})
        object.__setattr__(self, "limit", {key.lower(): float(v) for key, v in self.limit.items()})


@dataclass(frozen=True)
class Waiting:
    """A pending job. ``submitted_s`` and every other time are seconds on one clock (the
    daemon's: epoch seconds; the simulator's: simulated seconds)."""

    job_id: int
    queue: str
    priority: int
    submitted_s: float
    request: PlacementRequest
    max_runtime_s: float | None = None
    preemptible: bool = True


@dataclass(frozen=True)
class Holder:
    """A job that holds devices now; what it holds is ``pool.holdings[job_id]`` of the engine's
    pool. ``price_per_hour`` is what it costs (its allocation's price). ``stopping``: it has been
    asked to stop (preempted, cancelled) and will release soon; ``preempted_for`` names the job
    its devices were taken for, when it was preempted."""

    job_id: int
    queue: str
    priority: int
    placed_s: float
    max_runtime_s: float | None
    preemptible: bool
    price_per_hour: float
    stopping: bool = False
    preempted_for: int | None = None
    # False for a job that cannot be stopped for another yet, whatever its queue holds: a
    # multi-node gang (its parts are stopped together only when one fails or is cancelled).
    movable: bool = True

    @property
    def expected_end_s(self) -> float | None:
        """When it ends at the latest (placed + max_runtime); None when it may run for ever."""
        return None if self.max_runtime_s is None else self.placed_s + self.max_runtime_s


@dataclass(frozen=True)
class Preemption:
    victim_job_id: int
    for_job_id: int
    reason: str


@dataclass(frozen=True)
class Reservation:
    """Devices kept for a waiting job from ``start_s`` on: what its placement would hold then
    (node slot, device slots of the engine's pool). Only jobs that end by ``start_s`` may use
    them before."""

    job_id: int
    start_s: float
    holdings: tuple[Holding, ...]
    why: str

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(device for holding in self.holdings for device in holding.devices)


@dataclass
class PassPlan:
    """One pass's decisions. ``placements`` are in the order they were decided, each decided
    on the pool with the earlier ones applied; the pool itself is left as it was found, so the
    caller applies them in this order (``engine.apply``) and commits. ``waiting`` says why each
    job that was not placed waits; ``fallbacks`` when each model held back by an ``after`` opens
    (seconds on the plan's clock) for jobs still waiting on one; ``failed`` the jobs the
    engine raised on (set aside for this pass; the others were decided all the same)."""

    placements: list[Placement] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    reservations: dict[int, Reservation] = field(default_factory=dict)
    waiting: dict[int, str] = field(default_factory=dict)
    fallbacks: dict[int, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    failed: dict[int, Exception] = field(default_factory=dict)


@dataclass(frozen=True)
class SharingOptions:
    """``fair_share`` off: one order for all jobs (queue priority, job priority, age), no
    guarantees or weights. ``backfill`` off: a queue whose first job cannot be placed places
    nothing more this pass. ``share_tolerance``: what is lent is taken back only from queues
    holding more than (1 + it) x what they deserve, for queues holding less than (1 - it) x;
    within it, shares settle as jobs end, without preemption. ``grace_s``: how long a preempted job takes to stop, for a
    reservation made by preemption. ``explain`` off: a job that fits nowhere is said to wait
    without the engine's counted reasons (a simulation never reads them). The caps bound one
    pass's work."""

    fair_share: bool = True
    preemption: bool = True
    backfill: bool = True
    share_tolerance: float = 0.05
    grace_s: float = 30.0
    explain: bool = True
    max_decisions: int = 2000
    max_preemption_searches: int = 32
    max_victim_nodes: int = 8
