"""What a job asks of the pool, in the engine's terms (not the job file, not the API)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

import numpy as np

from poold.jobspec import JobSpec

DEVICE_KINDS = frozenset({"gpu", "npu", "fpga"})
# A job that asks no device memory needs its share of the device's memory free, less this
# fraction of the device: what drivers and idle contexts take, which NVML counts as used.
IMPLICIT_MEMORY_SLACK = 0.05


@dataclass(frozen=True)
class PlacementRequest:
    """One job's request. ``count`` 0 takes no devices (CPU cores and host memory only).
    Memory is MiB; ``share`` is the fraction of each device (1 for whole devices).

    A gang: ``nodes`` above 1 asks ``count`` devices (and ``cpu_cores``, ``host_memory_mib``)
    on each of that many nodes; ``same_node`` false lets the engine split ``count`` devices
    into equal parts over the fewest nodes that hold them (``poold.scheduler.gang``)."""

    job_id: int
    count: int
    kinds: frozenset[str]
    memory_per_device_mib: int | None = None
    share: float = 1.0
    cpu_cores: float = 0.0
    host_memory_mib: int = 0
    mig_profile: str | None = None
    compute_capability: str | None = None
    fpga_shell: str | None = None
    interconnect: str = "any"
    accept: tuple[tuple[str, float], ...] = ()
    objective: str = "cost"
    max_price_per_hour: float | None = None
    # Per accept entry, the seconds the job must have waited before that model is acceptable
    # (its ``after``; 0 for the entries open from the start). Empty: every entry is open.
    # Placement never reads it: the sharing planner places the request ``narrowed`` to the
    # entries open after the job's wait.
    accept_after_s: tuple[float, ...] = ()
    nodes: int = 1
    same_node: bool = True

    @classmethod
    def from_spec(cls, job_id: int, spec: JobSpec | dict[str, Any]) -> "PlacementRequest":
        """From a job file, or the job file as the store keeps it (``JobSpec.model_dump(mode="json")``)."""
        res = spec.resources.model_dump(mode="json") if isinstance(spec, JobSpec) else spec["resources"]
        count = int(res["count"])
        if count == 0:
            kinds: frozenset[str] = frozenset()
        else:
            kinds = DEVICE_KINDS if res["kind"] == "any" else frozenset({res["kind"]})
        share = res.get("share")
        profile = res.get("mig_profile")
        return cls(
            job_id=job_id,
            count=count,
            kinds=kinds,
            memory_per_device_mib=res.get("memory_per_device"),
            share=float(share) if share is not None else 1.0,
            cpu_cores=float(res.get("cpu_cores", 0)),
            host_memory_mib=int(res.get("host_memory", 0)),
            mig_profile=profile.lower() if profile else None,
            compute_capability=res.get("compute_capability"),
            fpga_shell=res.get("fpga_shell"),
            interconnect=res.get("interconnect", "any"),
            accept=tuple((entry["model"].lower(), float(entry.get("speed", 1.0))) for entry in res.get("accept") or ()),
            accept_after_s=_waits(res.get("accept") or ()),
            objective=res.get("objective", "cost"),
            max_price_per_hour=res.get("max_price_per_hour"),
            nodes=int(res.get("nodes") or 1),
            same_node=bool(res.get("same_node", True)),
        )

    @cached_property
    def signature(self) -> tuple:
        """Everything placement reads: jobs with equal signatures are placed alike."""
        return tuple(getattr(self, name) for name in _SIGNATURE_FIELDS)

    @cached_property
    def static_key(self) -> tuple:
        """What the static device filters read (kind, model, MIG profile, capability, shell)."""
        return (self.count > 0, self.kinds, self.mig_profile, self.compute_capability, self.fpga_shell, tuple(m for m, _ in self.accept))

    @cached_property
    def shape(self) -> tuple:
        """The request's shape for the job mix: the signature without objective and price cap."""
        return (self.count, self.kinds, self.memory_per_device_mib, self.share, self.cpu_cores, self.host_memory_mib,
                self.mig_profile, self.compute_capability, self.fpga_shell, self.interconnect, tuple(m for m, _ in self.accept))

    @property
    def multi_node(self) -> bool:
        """Whether the request may span several nodes (a gang of parts, one per node)."""
        return self.nodes > 1 or (not self.same_node and self.count > 1)

    @property
    def fractional(self) -> bool:
        return self.share < 1

    def opens_at_s(self) -> tuple[tuple[str, float], ...]:
        """(model, seconds of waiting after which it is acceptable) for each accept entry with
        an ``after``, in list order: what ``poold why`` shows of a job that waits to fall back."""
        return tuple((model, after) for (model, _), after in zip(self.accept, self.accept_after_s) if after > 0)

    def narrowed(self, waited_s: float) -> "PlacementRequest":
        """The request with only the accept entries open once the job has waited ``waited_s``
        seconds (itself when all are). Its signature and static key differ from the full
        request's whenever entries are left out, so the engine caches them apart."""
        if not self.accept_after_s or all(after <= waited_s for after in self.accept_after_s):
            return self
        open_entries = tuple(entry for entry, after in zip(self.accept, self.accept_after_s) if after <= waited_s)
        # The first entry never has an ``after`` (the job file refuses one), so this is never empty.
        return replace(self, accept=open_entries, accept_after_s=())

    def speed_on(self, model: str) -> float | None:
        """Relative speed on ``model``; None when the accept list leaves it out."""
        if not self.accept:
            return 1.0
        lowered = model.lower()
        for name, speed in self.accept:
            if name == lowered:
                return speed
        return None

    def memory_to_hold(self, memory_total_mib: np.ndarray) -> np.ndarray:
        """Device memory (MiB) an allocation holds on devices of these totals (-1 = unknown):
        the asked minimum, else the share of the device's memory (0 where unknown)."""
        if self.memory_per_device_mib is not None:
            return np.full(memory_total_mib.shape, self.memory_per_device_mib, dtype=np.int64)
        return np.where(memory_total_mib < 0, 0, (memory_total_mib * self.share).astype(np.int64))

    def memory_needed(self, memory_total_mib: np.ndarray) -> np.ndarray:
        """Device memory (MiB) that must be free on devices of these totals to place the job:
        the asked minimum, else its share less ``IMPLICIT_MEMORY_SLACK`` of the device."""
        if self.memory_per_device_mib is not None:
            return self.memory_to_hold(memory_total_mib)
        slack = (memory_total_mib * IMPLICIT_MEMORY_SLACK).astype(np.int64)
        return np.maximum(self.memory_to_hold(memory_total_mib) - slack, 0)


def _waits(accept) -> tuple[float, ...]:
    """Per accept entry its ``after`` in seconds (0 where none); empty when no entry has one."""
    waits = tuple(float(entry.get("after") or 0.0) for entry in accept)
    return waits if any(waits) else ()


_SIGNATURE_FIELDS = tuple(f.name for f in fields(PlacementRequest) if f.name not in ("job_id", "accept_after_s"))
