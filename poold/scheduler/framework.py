"""The placement framework: requests, statuses with reasons, and the plugin interfaces.

A rejection is data, not an exception: a filter returns a :class:`Status` whose ``code``
groups like rejections and whose ``reason`` tells a person what was short. The engine
counts them per job so ``poold job ID`` can say why a job waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from poold.jobspec import JobSpec
from poold.scheduler.view import DeviceView, NodeView


class Status:
    """A filter's verdict: ``ok``, or a reason code and a sentence for people."""

    __slots__ = ("code", "reason", "ok")

    def __init__(self, code: str = "ok", reason: str = ""):
        self.code = code
        self.reason = reason
        self.ok = code == "ok"

    def __repr__(self) -> str:
        return f"Status({self.code!r}, {self.reason!r})"


OK = Status()


@dataclass(frozen=True)
class PlacementRequest:
    """What a job asks of the pool, in the engine's terms. Memory is MiB."""

    job_id: int
    count: int
    kinds: frozenset[str]
    memory_per_device_mib: int | None
    share: float
    cpu_cores: float
    host_memory_mib: int
    mig_profile: str | None
    compute_capability: str | None
    fpga_shell: str | None
    interconnect: str
    accept: tuple[tuple[str, float], ...]
    objective: str
    max_price_per_hour: float | None

    @classmethod
    def from_spec(cls, job_id: int, spec: JobSpec) -> "PlacementRequest":
        res = spec.resources
        kinds = frozenset({"gpu", "npu", "fpga"}) if res.kind == "any" else frozenset({res.kind})
        return cls(
            job_id=job_id,
            count=res.count,
            kinds=kinds,
            memory_per_device_mib=res.memory_per_device,
            share=res.share if res.share is not None else 1.0,
            cpu_cores=res.cpu_cores,
            host_memory_mib=res.host_memory,
            mig_profile=res.mig_profile,
            compute_capability=res.compute_capability,
            fpga_shell=res.fpga_shell,
            interconnect=res.interconnect,
            accept=tuple((entry.model.lower(), entry.speed) for entry in res.accept),
            objective=res.objective,
            max_price_per_hour=res.max_price_per_hour,
        )

    def speed_on(self, model: str) -> float | None:
        """Relative speed on ``model``; None when the accept list leaves it out."""
        if not self.accept:
            return 1.0
        lowered = model.lower()
        for name, speed in self.accept:
            if name == lowered:
                return speed
        return None

    @property
    def fractional(self) -> bool:
        return self.share < 1

    def memory_to_hold(self, device: DeviceView) -> int | None:
        """Device memory (MiB) the allocation holds: the asked minimum, else the share of the total."""
        if self.memory_per_device_mib is not None:
            return self.memory_per_device_mib
        if device.memory_total_mib is None:
            return None
        return int(device.memory_total_mib * self.share)


@dataclass
class Candidate:
    """A way to place a job: devices on one node, with what they cost and how fast the job runs."""

    node: NodeView
    devices: list[DeviceView]
    speed: float
    price_per_hour: float
    scores: dict[str, float] = field(default_factory=dict)
    total: float = 0.0

    @property
    def cost_per_work(self) -> float:
        return self.price_per_hour / self.speed


class NodeFilter(Protocol):
    name: str

    def filter_node(self, request: PlacementRequest, node: NodeView) -> Status: ...


class DeviceFilter(Protocol):
    name: str

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status: ...


class CandidateFilter(Protocol):
    name: str

    def filter_candidate(self, request: PlacementRequest, candidate: Candidate) -> Status: ...


@dataclass(frozen=True)
class ScoreContext:
    """Facts about all of a job's candidates, computed once per decision, for normalising."""

    cheapest_cost_per_work: float
    fastest_speed: float

    @classmethod
    def of(cls, candidates: list[Candidate]) -> "ScoreContext":
        return cls(
            cheapest_cost_per_work=min(c.cost_per_work for c in candidates),
            fastest_speed=max(c.speed for c in candidates),
        )


class Scorer(Protocol):
    """Scores a candidate in 0..100 (higher is better)."""

    name: str

    def score(self, request: PlacementRequest, candidate: Candidate, context: ScoreContext) -> float: ...
