"""The one place that assembles the placement policy, stage by stage."""

from __future__ import annotations

from dataclasses import dataclass

from poold.scheduler.filters.accept_list import AcceptList
from poold.scheduler.filters.compute_capability import ComputeCapability
from poold.scheduler.filters.device_free import DeviceFree
from poold.scheduler.filters.device_health import DeviceHealth
from poold.scheduler.filters.device_kind import DeviceKind
from poold.scheduler.filters.device_memory import DeviceMemory
from poold.scheduler.filters.fpga_shell import FpgaShell
from poold.scheduler.filters.interconnect import Interconnect
from poold.scheduler.filters.max_price import MaxPrice
from poold.scheduler.filters.mig_profile import MigProfile
from poold.scheduler.filters.node_ready import NodeReady
from poold.scheduler.filters.node_resources import NodeResources
from poold.scheduler.framework import CandidateFilter, DeviceFilter, NodeFilter, Scorer
from poold.scheduler.scorers.best_fit import BestFit
from poold.scheduler.scorers.cost_per_work import CostPerWork
from poold.scheduler.scorers.locality import Locality
from poold.scheduler.scorers.speed import Speed

# Weights per objective. The leading scorer decides; the small ones only break its ties.
OBJECTIVE_WEIGHTS: dict[str, dict[str, float]] = {
    "cost": {"cost_per_work": 1.0, "locality": 0.05, "best_fit": 0.01, "speed": 0.001},
    "time": {"speed": 1.0, "locality": 0.05, "cost_per_work": 0.01, "best_fit": 0.001},
    "pack": {"best_fit": 1.0, "locality": 0.05, "cost_per_work": 0.01, "speed": 0.001},
}


@dataclass(frozen=True)
class Stack:
    node_filters: tuple[NodeFilter, ...]
    device_filters: tuple[DeviceFilter, ...]
    candidate_filters: tuple[CandidateFilter, ...]
    scorers: tuple[Scorer, ...]

    def weights(self, objective: str) -> dict[str, float]:
        return OBJECTIVE_WEIGHTS[objective]


def build_stack() -> Stack:
    return Stack(
        # Whole nodes first: down or drained nodes, then CPU cores and host memory.
        node_filters=(NodeReady(), NodeResources()),
        # Per device, cheapest and most selective first: kind, chip model, health,
        # MIG slice rules, free share, memory, then capability and FPGA shell.
        device_filters=(
            DeviceKind(),
            AcceptList(),
            DeviceHealth(),
            MigProfile(),
            DeviceFree(),
            DeviceMemory(),
            ComputeCapability(),
            FpgaShell(),
        ),
        # Per candidate device set: interconnect wishes, then the job's price ceiling.
        candidate_filters=(Interconnect(), MaxPrice()),
        # Rankers, normalised to 0..100 and weighted by the job's objective.
        scorers=(CostPerWork(), Speed(), BestFit(), Locality()),
    )
