"""The fake NVIDIA devices a fixture describes: GPUs, MIG slices, profiles and placement.

Values follow ``/work/shared/reference/devices.md``: memory per MIG profile as NVML
reports it, profile ids, the eight memory slots and where each profile may start. A
fixture whose MIG layout breaks those rules is refused with a clear error, so a fixture
can never describe a GPU that real hardware could not be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.fake.fixture_file import FixtureError, device_list


@dataclass(frozen=True)
class ProfileSpec:
    """One GPU-instance profile as ``nvmlDeviceGetGpuInstanceProfileInfo`` reports it."""

    index: int  # NVML_GPU_INSTANCE_PROFILE_* index, not the profile id
    profile_id: int
    name: str  # "1g.10gb"
    slices: int  # compute slices out of 7
    instance_count: int
    sm_count: int
    memory_mib: int
    memory_slots: int  # of the 8 memory slots
    starts: tuple[int, ...]


def _profiles(rows: list[tuple]) -> dict[str, ProfileSpec]:
    return {row[2]: ProfileSpec(*row) for row in rows}


_ANY_SLOT = (0, 1, 2, 3, 4, 5, 6)
# (index, id, name, slices, instances, SMs, memory MiB, memory slots, may start at)
PROFILE_SETS: dict[str, dict[str, ProfileSpec]] = {
    "h100-80gb": _profiles([
        (0, 19, "1g.10gb", 1, 7, 16, 9984, 1, _ANY_SLOT),
        (1, 14, "2g.20gb", 2, 3, 32, 20096, 2, (0, 2, 4)),
        (2, 9, "3g.40gb", 3, 2, 60, 40448, 4, (0, 4)),
        (3, 5, "4g.40gb", 4, 1, 64, 40448, 4, (0,)),
        (4, 0, "7g.80gb", 7, 1, 132, 81152, 8, (0,)),
        (7, 20, "1g.10gb+me", 1, 1, 16, 9984, 1, _ANY_SLOT),
        (9, 15, "1g.20gb", 1, 4, 26, 20096, 2, (0, 2, 4, 6)),
    ]),
    "a100-80gb": _profiles([
        (0, 19, "1g.10gb", 1, 7, 14, 9728, 1, _ANY_SLOT),
        (1, 14, "2g.20gb", 2, 3, 28, 19968, 2, (0, 2, 4)),
        (2, 9, "3g.40gb", 3, 2, 42, 40192, 4, (0, 4)),
        (3, 5, "4g.40gb", 4, 1, 56, 40192, 4, (0,)),
        (4, 0, "7g.80gb", 7, 1, 98, 81152, 8, (0,)),
        (7, 20, "1g.10gb+me", 1, 1, 14, 9728, 1, _ANY_SLOT),
        (9, 15, "1g.20gb", 1, 4, 14, 19968, 2, (0, 2, 4, 6)),
    ]),
    "a100-40gb": _profiles([
        (0, 19, "1g.5gb", 1, 7, 14, 4864, 1, _ANY_SLOT),
        (1, 14, "2g.10gb", 2, 3, 28, 9984, 2, (0, 2, 4)),
        (2, 9, "3g.20gb", 3, 2, 42, 20096, 4, (0, 4)),
        (3, 5, "4g.20gb", 4, 1, 56, 20096, 4, (0,)),
        (4, 0, "7g.40gb", 7, 1, 98, 40192, 8, (0,)),
        (7, 20, "1g.5gb+me", 1, 1, 14, 4864, 1, _ANY_SLOT),
        (9, 15, "1g.10gb", 1, 4, 14, 9984, 2, (0, 2, 4, 6)),
    ]),
}

MEMORY_SLOTS = 8
MAX_MIG_DEVICES = 7


@dataclass
class FakeMigSlice:
    """A MIG device: one compute instance inside one GPU instance."""

    uuid: str
    profile: ProfileSpec
    start: int
    gi_id: int
    ci_id: int
    parent: "FakeGpu" = field(repr=False)


@dataclass
class FakeGpu:
    """One physical GPU of a fixture; also the handle the fake NVML hands out."""

    index: int
    uuid: str
    name: str
    bus_id: str
    pci_device_id: int
    memory_mib: int
    memory_used_mib: int
    compute_capability: tuple[int, int]
    architecture: int
    power_w: float
    power_limit_w: float
    temperature_c: int
    utilization_pct: int
    numa_node: int | None
    pcie_switch: int | None
    nvlink_links: int
    serial: str | None
    ecc: bool
    ecc_errors: dict[str, int]
    remapped_rows: tuple[int, int, int, int] | None
    mig_capable: bool
    mig_enabled: bool
    profile_set: dict[str, ProfileSpec]
    slices: list[FakeMigSlice] = field(default_factory=list)
    lost: str | None = None  # None, "queries" (static identity still answers) or "handle"


def _profile_set(entry: dict[str, Any], where: str) -> dict[str, ProfileSpec]:
    key = entry.get("mig_profiles")
    if key is None:
        key = "a100-40gb" if entry["memory_mib"] < 50000 else ("h100-80gb" if "H100" in entry["name"] else "a100-80gb")
    if key not in PROFILE_SETS:
        raise FixtureError(f"{where}: unknown mig_profiles {key!r} (known: {', '.join(PROFILE_SETS)})")
    return PROFILE_SETS[key]


def _slices(gpu: FakeGpu, layout: list[dict[str, Any]], where: str) -> list[FakeMigSlice]:
    """Check a MIG layout against the slot rules and build its slices."""
    used = [False] * MEMORY_SLOTS
    counts: dict[str, int] = {}
    slices = []
    for number, item in enumerate(layout):
        here = f"{where}.mig[{number}]"
        name = item.get("profile")
        if name not in gpu.profile_set:
            raise FixtureError(f"{here}: profile {name!r} does not exist on {gpu.name}")
        spec = gpu.profile_set[name]
        start = item.get("start")
        if start not in spec.starts:
            raise FixtureError(f"{here}: {name} may start at slots {list(spec.starts)}, not {start!r}")
        span = range(start, start + spec.memory_slots)
        if span.stop > MEMORY_SLOTS or any(used[s] for s in span):
            raise FixtureError(f"{here}: {name} at slot {start} overlaps another slice or the end of the GPU")
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > spec.instance_count:
            raise FixtureError(f"{here}: at most {spec.instance_count} {name} fit on one GPU")
        for s in span:
            used[s] = True
        uuid = item.get("uuid")
        if not isinstance(uuid, str) or not uuid.startswith("MIG-"):
            raise FixtureError(f"{here}: uuid must be a 'MIG-…' string")
        slices.append(FakeMigSlice(uuid, spec, start, int(item.get("gi", number + 1)), int(item.get("ci", 0)), gpu))
    if sum(s.profile.slices for s in slices) > MAX_MIG_DEVICES:
        raise FixtureError(f"{where}: the MIG layout uses more than 7 compute slices")
    return slices


def build_gpus(data: dict[str, Any]) -> list[FakeGpu]:
    """The fixture's ``[[nvidia.gpus]]`` (over ``[nvidia.defaults]``) as fake GPUs."""
    gpus = []
    lost = {int(item["gpu"]): item.get("stage", "queries") for item in (data.get("faults") or {}).get("lost", [])}
    for index, entry in enumerate(device_list(data, "nvidia", "gpus")):
        where = f"nvidia.gpus[{index}]"
        missing = [k for k in ("uuid", "name", "bus_id", "memory_mib") if k not in entry]
        if missing:
            raise FixtureError(f"{where}: missing {', '.join(missing)}")
        major, minor = (int(x) for x in str(entry.get("compute_capability", "0.0")).split("."))
        remap = entry.get("remapped_rows")
        gpu = FakeGpu(
            index=index,
            uuid=entry["uuid"],
            name=entry["name"],
            bus_id=entry["bus_id"],
            pci_device_id=int(entry.get("pci_device_id", 0)),
            memory_mib=int(entry["memory_mib"]),
            memory_used_mib=int(entry.get("memory_used_mib", 0)),
            compute_capability=(major, minor),
            architecture=int(entry.get("architecture", 0)),
            power_w=float(entry.get("power_w", 0.0)),
            power_limit_w=float(entry.get("power_limit_w", 0.0)),
            temperature_c=int(entry.get("temperature_c", 30)),
            utilization_pct=int(entry.get("utilization_pct", 0)),
            numa_node=entry.get("numa_node"),
            pcie_switch=entry.get("pcie_switch"),
            nvlink_links=int(entry.get("nvlink_links", 0)),
            serial=entry.get("serial"),
            ecc=bool(entry.get("ecc", True)),
            ecc_errors={k: int(v) for k, v in (entry.get("ecc_errors") or {}).items()},
            remapped_rows=tuple(int(remap[k]) for k in ("corrected", "uncorrected", "pending", "failure"))
            if isinstance(remap, dict) else None,
            mig_capable=bool(entry.get("mig_capable", False)),
            mig_enabled=bool(entry.get("mig")),
            profile_set={},
            lost=lost.get(index),
        )
        if gpu.mig_enabled and not gpu.mig_capable:
            raise FixtureError(f"{where}: has a MIG layout but mig_capable is false")
        if gpu.mig_capable:
            gpu.profile_set = _profile_set(entry, where)
            gpu.slices = _slices(gpu, entry.get("mig") or [], where)
        gpus.append(gpu)
    if any(index >= len(gpus) for index in lost):
        raise FixtureError("faults.lost names a GPU index the node does not have")
    if any(stage not in ("queries", "handle") for stage in lost.values()):
        raise FixtureError("faults.lost: stage must be 'queries' or 'handle'")
    uuids = [g.uuid for g in gpus] + [s.uuid for g in gpus for s in g.slices]
    if len(set(uuids)) != len(uuids):
        raise FixtureError("nvidia: two devices share a uuid")
    return gpus
