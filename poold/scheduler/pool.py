"""The columnar pool: the scheduler's picture of every node and device as numpy arrays.

Each node owns a contiguous range of device slots, ``node_start[n]:node_end[n]``, in the
order (model, index, uuid), so everything about one node is a slice and everything about the
pool is one vector operation. The pool is updated in place, never rebuilt:

- ``upsert_node`` puts a node with its devices and what is held on them (from the store, or a
  simulation's node list); devices whose static facts did not change keep their slots;
- ``apply`` and ``release`` add and remove a placement's holdings (a gang holds on several
  nodes, one holding each; ``release`` gives back all of a job's).

Every change to a node bumps ``node_gen[n]``; caches keyed by node generation (the engine's)
recompute only the nodes that changed, the way Kubernetes' scheduler cache copies only nodes
whose generation moved. Changes to what devices exist or what they are (a node joining, a GPU
split into MIG slices) also bump ``layout``, which drops caches built over device slots.
Memory is MiB; shares are fractions of one device (0..1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from poold.scheduler.pool_specs import Codes, DeviceSpec, DeviceState, Holding, NodeSpec, cc_number  # named here too, where callers look

KINDS = ("gpu", "npu", "fpga")
# PCIe relation of two devices, closest first (the agent's names, from NVML's topology levels).
PCIE_LEVELS = ("same_board", "single_switch", "multiple_switches", "host_bridge", "same_numa", "system")
PCIE_UNKNOWN = len(PCIE_LEVELS)
EPSILON = 1e-9


_DEVICE_COLUMNS = {
    "dev_id": np.int64, "dev_node": np.int32, "dev_kind": np.int8, "dev_model": np.int16, "dev_index": np.int32,
    "dev_mem_total": np.int64, "dev_mem_held": np.int64, "dev_mem_outside": np.int64, "dev_free": np.float64,
    "dev_healthy": np.bool_, "dev_alive": np.bool_, "dev_allocatable": np.bool_, "dev_profile": np.int16,
    "dev_slices": np.int8, "dev_cc": np.int32, "dev_shell": np.int16, "dev_numa": np.int16, "dev_price": np.float64,
    "dev_parent": np.int32,
}
_NODE_COLUMNS = {
    "node_id": np.int64, "node_alive": np.bool_, "node_ready": np.bool_, "node_drained": np.bool_,
    "node_cpu": np.float64, "node_cpu_held": np.float64, "node_mem": np.int64, "node_mem_held": np.int64,
    "node_gen": np.int64, "node_start": np.int32, "node_end": np.int32, "node_network": np.int16,
    # Over the node's allocatable devices (MIG slices count, their split GPU does not): the
    # free share summed, and how many there are. Kept with every change to the node.
    "node_free_share": np.float64, "node_share_slots": np.float64,
}


@dataclass
class NodeTopology:
    """How the devices of one node connect, over its slot range (local positions 0..k-1)."""

    links: np.ndarray  # int16 [k, k]: NVLink links between two devices, 0 when none
    pcie: np.ndarray  # int8 [k, k]: PCIE_LEVELS position, PCIE_UNKNOWN when not reported
    key: tuple  # equal keys mean equal topology (for memoised gang searches)


@dataclass
class ColumnarPool:
    """Every node and device of the pool as arrays; see the module docstring."""

    models: Codes = field(default_factory=Codes)
    profiles: Codes = field(default_factory=Codes)
    shells: Codes = field(default_factory=Codes)
    networks: Codes = field(default_factory=Codes)
    layout: int = 0
    # Moves whenever capacity may have been given back (a release, a node that came or came
    # back, devices freed, healthy again, undrained): a request that failed before it may fit.
    gains: int = 0
    n_devices: int = 0  # slots used (alive or not)
    n_nodes: int = 0

    def __post_init__(self) -> None:
        for name, dtype in _DEVICE_COLUMNS.items():
            setattr(self, name, np.zeros(64, dtype=dtype))
        for name, dtype in _NODE_COLUMNS.items():
            setattr(self, name, np.zeros(16, dtype=dtype))
        self.dev_uuid: list[str] = []
        self.dev_health_reason: list[str | None] = []
        self.node_name: list[str] = []
        self.node_topology: list[NodeTopology | None] = []
        self.node_specs: list[tuple[NodeSpec, tuple[DeviceSpec, ...]] | None] = []
        self.node_by_id: dict[int, int] = {}
        self.device_by_id: dict[int, int] = {}
        # What the pass (or a simulation) applied, per job: one holding per node it holds on.
        self.holdings: dict[int, tuple[Holding, ...]] = {}
        self._jobs_on: dict[int, set[int]] = {}  # node slot -> ids of the jobs with a holding there
        self._dead_slots = 0
        self._labels: tuple[int, list[tuple[str, str | None, int]]] = (-1, [])

    # ---- reading -------------------------------------------------------------------------

    def devices_of(self, node: int) -> range:
        return range(int(self.node_start[node]), int(self.node_end[node]))

    def node_cpu_free(self) -> np.ndarray:
        return self.node_cpu[: self.n_nodes] - self.node_cpu_held[: self.n_nodes]

    def node_mem_free(self) -> np.ndarray:
        return self.node_mem[: self.n_nodes] - self.node_mem_held[: self.n_nodes]

    def dev_mem_free(self, count_outside: bool = True) -> np.ndarray:
        """Device memory free (MiB) for a new allocation; -1 where the device does not report memory."""
        n = self.n_devices
        free = self.dev_mem_total[:n] - self.dev_mem_held[:n]
        if count_outside:
            free = free - self.dev_mem_outside[:n]
        return np.where(self.dev_mem_total[:n] < 0, -1, np.maximum(free, 0))

    def model_name(self, slot: int) -> str:
        return self.models.names[int(self.dev_model[slot])]

    def device_labels(self) -> list[tuple[str, str | None, int]]:
        """Per device slot, as plain values: its model's name in lower case, its kind's name
        (None when unknown) and its MIG slices (0 for a whole device); worked out once per
        layout (what a slot holds changes only with it), for code that reads them per holding."""
        if self._labels[0] != self.layout:
            n = self.n_devices
            kinds, slices = self.dev_kind[:n].tolist(), self.dev_slices[:n].tolist()
            labels = [
                (self.model_name(slot).lower(), KINDS[kind] if 0 <= kind < len(KINDS) else None, count)
                for slot, (kind, count) in enumerate(zip(kinds, slices))
            ]
            self._labels = (self.layout, labels)
        return self._labels[1]

    def profile_name(self, slot: int) -> str | None:
        code = int(self.dev_profile[slot])
        return None if code < 0 else self.profiles.names[code]

    def alive_nodes(self) -> np.ndarray:
        return np.flatnonzero(self.node_alive[: self.n_nodes])

    # ---- writing -------------------------------------------------------------------------

    def upsert_node(
        self,
        node: NodeSpec,
        devices: Iterable[DeviceSpec],
        states: Mapping[int, DeviceState] | None = None,
        cpu_held: float = 0.0,
        memory_held_mib: int = 0,
    ) -> int:
        """Put ``node`` with exactly ``devices`` (by device id) and their states; returns its slot.

        Holdings recorded with :meth:`apply` on this node are dropped: the states given here
        are the whole truth about what is held (the store's active allocations).
        """
        ordered = tuple(sorted(devices, key=lambda d: (d.model.lower(), -1 if d.index is None else d.index, d.parent_id or 0, d.uuid)))
        slot = self.node_by_id.get(node.id)
        if slot is None:
            slot = self._new_node_slot(node.id)
        previous = self.node_specs[slot]
        before = self._capacity_of(slot) if previous is not None else None
        if previous is None or previous[1] != ordered:
            self._place_devices(slot, ordered)
            before = None
        self.node_specs[slot] = (node, ordered)
        self.node_name[slot] = node.name
        self.node_ready[slot], self.node_drained[slot] = node.ready, node.drained
        network = -1 if node.network is None else self.networks.code(node.network)
        if previous is not None and network != self.node_network[slot]:
            before = None  # another network: a gang that waited may fit now
        self.node_network[slot] = network
        self.node_cpu[slot], self.node_mem[slot] = node.cpu_cores, node.memory_total_mib
        self.node_cpu_held[slot], self.node_mem_held[slot] = cpu_held, memory_held_mib
        states = states or {}
        for position, spec in enumerate(ordered):
            device = int(self.node_start[slot]) + position
            state = states.get(spec.id, DeviceState())
            self.dev_healthy[device] = state.healthy
            self.dev_health_reason[device] = state.health_reason
            self.dev_mem_outside[device] = max(0, state.memory_outside_mib)
            self.dev_free[device] = max(0.0, 1.0 - state.held_share)
            self.dev_mem_held[device] = state.held_memory_mib
        for job_id in self._jobs_on.pop(slot, ()):
            kept = tuple(h for h in self.holdings.get(job_id, ()) if h.node != slot)
            if kept:
                self.holdings[job_id] = kept
            else:
                self.holdings.pop(job_id, None)
        self._share_totals(slot)
        self.node_gen[slot] += 1
        if before is None or self._gained(before, self._capacity_of(slot)):
            self.gains += 1
        return slot

    def _capacity_of(self, slot: int) -> tuple:
        """What a node offers now: up and undrained, CPU and memory free, per device free share,
        free memory and health (compared by :meth:`_gained`)."""
        span = slice(int(self.node_start[slot]), int(self.node_end[slot]))
        return (
            bool(self.node_ready[slot] and not self.node_drained[slot]),
            float(self.node_cpu[slot] - self.node_cpu_held[slot]),
            int(self.node_mem[slot] - self.node_mem_held[slot]),
            self.dev_free[span].copy(),
            (self.dev_mem_total[span] - self.dev_mem_held[span] - self.dev_mem_outside[span]).copy(),
            self.dev_healthy[span].copy(),
        )

    @staticmethod
    def _gained(before: tuple, after: tuple) -> bool:
        up, cpu, mem, free, mem_free, healthy = before
        up2, cpu2, mem2, free2, mem_free2, healthy2 = after
        return (
            (up2 and not up) or cpu2 > cpu + 1e-9 or mem2 > mem
            or bool((free2 > free + EPSILON).any()) or bool((mem_free2 > mem_free).any()) or bool((healthy2 & ~healthy).any())
        )

    def remove_node(self, node_id: int) -> None:
        slot = self.node_by_id.pop(node_id, None)
        if slot is None:
            return
        self._kill_devices(slot)
        self.node_alive[slot] = False
        self.node_specs[slot] = None
        self.node_gen[slot] += 1
        self.layout += 1

    def apply(self, holding: Holding) -> None:
        """Hold a placement's resources on one node (a simulation's or the pass's own, before the
        store has them). A gang applies one holding per node; a job holds at most one per node."""
        held = self.holdings.get(holding.job_id, ())
        if any(h.node == holding.node for h in held):
            raise ValueError(f"job {holding.job_id} already holds resources on node {self.node_name[holding.node]} in the pool")
        for device, memory in zip(holding.devices, holding.memory_mib):
            self.dev_free[device] = max(0.0, self.dev_free[device] - holding.share)
            self.dev_mem_held[device] += memory
        if holding.devices:
            self._share_totals(holding.node)
        self.node_cpu_held[holding.node] += holding.cpu_cores
        self.node_mem_held[holding.node] += holding.host_memory_mib
        self.node_gen[holding.node] += 1
        self.holdings[holding.job_id] = (*held, holding)
        self._jobs_on.setdefault(holding.node, set()).add(holding.job_id)

    def adopt(self, holding: Holding) -> None:
        """Know ``holding`` as a job's on its node without holding it again: the node was just
        loaded with what the job holds counted in (``poold.scheduler.snapshot``). ``release``
        then gives it back like one :meth:`apply` held."""
        held = self.holdings.get(holding.job_id, ())
        self.holdings[holding.job_id] = (*(h for h in held if h.node != holding.node), holding)
        self._jobs_on.setdefault(holding.node, set()).add(holding.job_id)

    def release(self, job_id: int) -> tuple[Holding, ...]:
        """Give back everything :meth:`apply` held for ``job_id``, on every node; empty when it
        holds nothing here."""
        held = self.holdings.pop(job_id, ())
        for holding in held:
            self._jobs_on.get(holding.node, set()).discard(job_id)
            for device, memory in zip(holding.devices, holding.memory_mib):
                self.dev_free[device] = min(1.0, self.dev_free[device] + holding.share)
                self.dev_mem_held[device] -= memory
            if holding.devices:
                self._share_totals(holding.node)
            self.node_cpu_held[holding.node] -= holding.cpu_cores
            self.node_mem_held[holding.node] -= holding.host_memory_mib
            self.node_gen[holding.node] += 1
        if held:
            self.gains += 1
        return held

    def _share_totals(self, slot: int) -> None:
        span = slice(int(self.node_start[slot]), int(self.node_end[slot]))
        usable = self.dev_allocatable[span] & self.dev_alive[span]
        self.node_free_share[slot] = self.dev_free[span][usable].sum()
        self.node_share_slots[slot] = np.count_nonzero(usable)

    # ---- slots ---------------------------------------------------------------------------

    def _new_node_slot(self, node_id: int) -> int:
        slot = self.n_nodes
        if slot == len(self.node_id):
            for name in _NODE_COLUMNS:
                setattr(self, name, _grown(getattr(self, name), 2 * slot))
        self.n_nodes += 1
        self.node_id[slot] = node_id
        self.node_alive[slot] = True
        self.node_start[slot] = self.node_end[slot] = 0
        self.node_gen[slot] = 0
        self.node_name.append("")
        self.node_topology.append(None)
        self.node_specs.append(None)
        self.node_by_id[node_id] = slot
        return slot

    def _place_devices(self, slot: int, ordered: tuple[DeviceSpec, ...]) -> None:
        """Write the node's devices into slots: its old range when the count is unchanged, else new ones."""
        self.layout += 1
        count = len(ordered)
        start, end = int(self.node_start[slot]), int(self.node_end[slot])
        for device in range(start, end):
            self.device_by_id.pop(int(self.dev_id[device]), None)
        if end - start != count:
            self._kill_devices(slot)
            if self._dead_slots > 1024 and self._dead_slots > self.n_devices // 2:
                self._compact()
            start = self._alloc_devices(count)
            self.node_start[slot], self.node_end[slot] = start, start + count
        local_of = {spec.id: i for i, spec in enumerate(ordered)}
        uuid_position = {spec.uuid: i for i, spec in enumerate(ordered)}
        for i, spec in enumerate(ordered):
            device = start + i
            self.device_by_id[spec.id] = device
            self.dev_id[device] = spec.id
            self.dev_node[device] = slot
            self.dev_kind[device] = KINDS.index(spec.kind) if spec.kind in KINDS else -1
            self.dev_model[device] = self.models.code(spec.model)
            self.dev_index[device] = -1 if spec.index is None else spec.index
            self.dev_mem_total[device] = -1 if spec.memory_total_mib is None else spec.memory_total_mib
            self.dev_alive[device] = True
            self.dev_profile[device] = -1 if spec.mig_profile is None else self.profiles.code(spec.mig_profile)
            self.dev_slices[device] = spec.mig_slices
            self.dev_cc[device] = cc_number(spec.compute_capability)
            self.dev_shell[device] = -1 if spec.fpga_shell is None else self.shells.code(spec.fpga_shell)
            self.dev_numa[device] = -1 if spec.numa_node is None else spec.numa_node
            self.dev_price[device] = spec.price_per_hour
            # Node-local position of the whole GPU (stable when slots are renumbered).
            self.dev_parent[device] = local_of.get(spec.parent_id, -1) if spec.parent_id is not None else -1
            self.dev_uuid[device] = spec.uuid
        parents = {spec.parent_id for spec in ordered if spec.parent_id is not None}
        for i, spec in enumerate(ordered):
            self.dev_allocatable[start + i] = spec.id not in parents
        self.node_topology[slot] = _topology(ordered, uuid_position)

    def _alloc_devices(self, count: int) -> int:
        start = self.n_devices
        if start + count > len(self.dev_id):
            size = max(2 * len(self.dev_id), start + count)
            for name in _DEVICE_COLUMNS:
                setattr(self, name, _grown(getattr(self, name), size))
        self.dev_uuid.extend([""] * count)
        self.dev_health_reason.extend([None] * count)
        self.n_devices += count
        return start

    def _kill_devices(self, slot: int) -> None:
        start, end = int(self.node_start[slot]), int(self.node_end[slot])
        for device in range(start, end):
            self.device_by_id.pop(int(self.dev_id[device]), None)
        self.dev_alive[start:end] = False
        self._dead_slots += end - start
        self.node_start[slot] = self.node_end[slot] = start

    def _compact(self) -> None:
        """Renumber device slots without the dead ones (holdings are re-pointed)."""
        alive_nodes = self.alive_nodes()
        order = np.concatenate([np.arange(self.node_start[n], self.node_end[n]) for n in alive_nodes] or [np.zeros(0, np.int64)])
        new_of_old = np.full(self.n_devices, -1, dtype=np.int64)
        new_of_old[order] = np.arange(len(order))
        for name in _DEVICE_COLUMNS:
            column = getattr(self, name)
            setattr(self, name, _grown(column[order], max(64, len(self.dev_id))))
        self.dev_uuid = [self.dev_uuid[i] for i in order]
        self.dev_health_reason = [self.dev_health_reason[i] for i in order]
        cursor = 0
        for n in alive_nodes:
            count = int(self.node_end[n] - self.node_start[n])
            self.node_start[n], self.node_end[n] = cursor, cursor + count
            cursor += count
        self.device_by_id = {int(self.dev_id[i]): i for i in range(len(order))}
        self.holdings = {
            job: tuple(
                Holding(h.job_id, h.node, tuple(int(new_of_old[d]) for d in h.devices), h.share, h.memory_mib, h.cpu_cores, h.host_memory_mib)
                for h in held
            )
            for job, held in self.holdings.items()
        }
        self.n_devices = len(order)
        self._dead_slots = 0
        self.layout += 1


def node_runs(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The node of each run of equal values in ``nodes`` and the run lengths, so that
    ``np.repeat(per_run, lengths)`` lines up with ``nodes`` again. Candidates come grouped by
    node, so this is their distinct nodes without sorting (``np.unique`` costs more)."""
    if len(nodes) <= 1 or nodes[0] == nodes[-1]:  # grouped: first and last equal means one node
        return nodes[:1], np.array([len(nodes)], dtype=np.int64) if len(nodes) else np.ones(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], nodes[1:] != nodes[:-1]]))
    return nodes[starts], np.diff(np.append(starts, len(nodes)))


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])``, without the loop."""
    if len(starts) == 1:
        return np.arange(int(starts[0]), int(ends[0]), dtype=np.int64)
    lengths = (ends - starts).astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts.astype(np.int64) - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total)


def _grown(column: np.ndarray, size: int) -> np.ndarray:
    grown = np.zeros(size, dtype=column.dtype)
    grown[: min(len(column), size)] = column[:size]
    return grown


def _topology(ordered: tuple[DeviceSpec, ...], position: dict[str, int]) -> NodeTopology:
    count = len(ordered)
    links = np.zeros((count, count), dtype=np.int16)
    pcie = np.full((count, count), PCIE_UNKNOWN, dtype=np.int8)
    for i, spec in enumerate(ordered):
        for peer, n in spec.nvlink:
            j = position.get(peer)
            if j is not None and j != i:
                links[i, j] = links[j, i] = max(links[i, j], n)
        for peer, relation in spec.pcie:
            j = position.get(peer)
            if j is not None and j != i and relation in PCIE_LEVELS:
                pcie[i, j] = pcie[j, i] = min(pcie[i, j], PCIE_LEVELS.index(relation))
    numa = tuple(-1 if spec.numa_node is None else spec.numa_node for spec in ordered)
    return NodeTopology(links=links, pcie=pcie, key=(links.tobytes(), pcie.tobytes(), numa))
