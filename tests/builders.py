"""Builders that make test cases read as sentences: ``make_node("a").gpus(4, "A100", nvlink=12)``."""

from __future__ import annotations

from itertools import count
from typing import Any

from sqlalchemy.orm import Session

from poold.db.models import NodeModel
from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.pool import ColumnarPool, NodeSpec
from poold.scheduler.snapshot import device_spec, device_state
from poold.services import jobs, nodes
from poold.settings import Settings
from poold_wire.records import DeviceRecord, HostRecord

GPU_MEMORY_MIB = {"H100": 81559, "A100": 81920, "L4": 23034, "T4": 15360}
CAPABILITY = {"H100": "9.0", "A100": "8.0", "L4": "8.9", "T4": "7.5"}
MIG_SLICES = {"1g.10gb": (1, 9984), "2g.20gb": (2, 20096), "3g.40gb": (3, 40448), "4g.40gb": (4, 40448), "7g.80gb": (7, 81152)}
_serial = count()


class NodeBuilder:
    def __init__(self, name: str, cpu_cores: int = 64, memory_mib: int = 512 * 1024):
        self.name = name
        self.host = HostRecord(hostname=name, cpu_cores=cpu_cores, memory_total_mib=memory_mib)
        self.devices: list[DeviceRecord] = []

    def gpus(self, n: int, model: str, *, nvlink: int = 0, memory_mib: int | None = None, health: str = "ok") -> "NodeBuilder":
        new = []
        for i in range(n):
            new.append(
                DeviceRecord(
                    uuid=f"GPU-{self.name}-{model}-{next(_serial)}",
                    vendor="nvidia",
                    kind="gpu",
                    model=model,
                    name=f"NVIDIA {model}",
                    index=len(self.devices) + i,
                    memory_total_mib=memory_mib or GPU_MEMORY_MIB.get(model, 16384),
                    compute_capability=CAPABILITY.get(model, "8.0"),
                    numa_node=0 if i < max(1, n // 2) else 1,
                    health=health,  # type: ignore[arg-type]
                    health_reason=None if health == "ok" else "XID 79: fell off the bus",
                )
            )
        if nvlink:
            for device in new:
                device.attributes["nvlink"] = {other.uuid: nvlink for other in new if other is not device}
        self.devices.extend(new)
        return self

    def mig(self, gpu_index: int, profiles: list[str]) -> "NodeBuilder":
        """Split the GPU at ``gpu_index`` into slices of ``profiles``."""
        parent = next(d for d in self.devices if d.index == gpu_index)
        parent.attributes["mig_mode"] = True
        for i, profile in enumerate(profiles):
            slices, memory = MIG_SLICES[profile]
            self.devices.append(
                DeviceRecord(
                    uuid=f"MIG-{self.name}-{next(_serial)}",
                    vendor="nvidia",
                    kind="gpu",
                    model=parent.model,
                    name=parent.name,
                    index=parent.index,
                    parent_uuid=parent.uuid,
                    memory_total_mib=memory,
                    compute_capability=parent.compute_capability,
                    attributes={"mig_profile": profile, "mig_slices": slices, "mig_gi_id": i + 1, "mig_ci_id": 0},
                )
            )
        return self

    def npus(self, n: int, model: str = "910B") -> "NodeBuilder":
        for i in range(n):
            self.devices.append(
                DeviceRecord(uuid=f"NPU-{self.name}-{i}", vendor="huawei", kind="npu", model=model, index=i, memory_total_mib=65536, attributes={"npu_chip": "910B2C"})
            )
        return self

    def fpgas(self, n: int, shell: str = "xilinx_u250_gen3x16_xdma_shell_4_1", model: str = "U250") -> "NodeBuilder":
        for i in range(n):
            self.devices.append(
                DeviceRecord(uuid=f"FPGA-{self.name}-{i}", vendor="xilinx", kind="fpga", model=model, index=i, bus_id=f"0000:0{i + 3}:00.1", attributes={"fpga_shell": shell})
            )
        return self

    def network(self, label: str) -> "NodeBuilder":
        """The node's agent reports this network label (gangs keep to one)."""
        self.host = self.host.model_copy(update={"network": label})
        return self

    def register(self, session: Session) -> NodeModel:
        return nodes.register(session, self.name, self.host, self.devices, "test")

    def add_to(self, pool: ColumnarPool, settings: Settings, node_id: int) -> int:
        """Put the node into ``pool`` as the store would (device ids are made up); returns its slot."""
        ids = {record.uuid: node_id * 1000 + i for i, record in enumerate(self.devices)}
        specs = [
            device_spec(record, id=ids[record.uuid], parent_id=ids.get(record.parent_uuid) if record.parent_uuid else None, settings=settings)
            for record in self.devices
        ]
        states = {ids[record.uuid]: device_state(record) for record in self.devices}
        node = NodeSpec(id=node_id, name=self.name, cpu_cores=self.host.cpu_cores, memory_total_mib=self.host.memory_total_mib,
                        network=self.host.network)
        return pool.upsert_node(node, specs, states)


def make_node(name: str, **kwargs: Any) -> NodeBuilder:
    return NodeBuilder(name, **kwargs)


def make_pool(settings: Settings, *builders: NodeBuilder) -> ColumnarPool:
    pool = ColumnarPool()
    for i, builder in enumerate(builders):
        builder.add_to(pool, settings, i + 1)
    return pool


def job(**resources: Any) -> JobSpec:
    """A job spec with these resources: ``job(count=2, accept=[{"model": "A100"}])``."""
    return JobSpec.model_validate({"name": "t", "command": ["true"], "resources": resources})


def register_nodes(store, *builders: NodeBuilder) -> None:
    """Put the nodes into ``store`` (a fixture's ``pool`` or ``store``), as their agents register them."""
    with transaction(store.factory) as session:
        for builder in builders:
            builder.register(session)


def submit_job(store, **resources: Any) -> int:
    """Submit ``job(**resources)`` to ``store``; its id."""
    with transaction(store.factory) as session:
        return jobs.submit(session, job(**resources)).id
