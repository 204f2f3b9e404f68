"""The ``poold`` policy under replay: the daemon's own engine, stack and default settings.

Each node of the trace becomes a node of a columnar pool with its GPUs (every model priced
alike, memory unknown); each task becomes the job file a user would write for it (``count``
GPUs, a ``share`` for a fraction, ``cpu_cores``, ``host_memory``, the allowed models as an
accept list, the default objective) and is counted into the job mix as the daemon counts a
submitted job, then placed by ``Engine.place`` and held with ``Engine.apply``.
"""

from __future__ import annotations

from poold.jobspec import JobSpec
from poold.scheduler.engine import Engine, Unplaceable
from poold.scheduler.loop import engine_options
from poold.scheduler.mix import JobMix
from poold.scheduler.pool import ColumnarPool, DeviceSpec, NodeSpec
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack
from poold.settings import Settings

from .harness import Assignment
from .trace import MILLI_PER_GPU, NodeSpec as TraceNode, Task


def job_file(task: Task) -> dict:
    """The job file (as the store keeps it) a user would write for ``task``."""
    resources: dict = {"count": task.num_gpu, "cpu_cores": task.cpu_milli / 1000, "host_memory": task.memory_mib}
    if task.num_gpu == 0:
        resources["kind"] = "cpu"
    elif task.num_gpu == 1 and task.gpu_milli < MILLI_PER_GPU:
        resources["share"] = task.gpu_milli / MILLI_PER_GPU
    if task.models:
        resources["accept"] = [{"model": model} for model in sorted(task.models)]
    return JobSpec.model_validate({"name": "task", "command": ["true"], "resources": resources}).model_dump(mode="json")


class PooldPolicy:
    name = "poold"

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()

    def start(self, nodes: list[TraceNode], trace: list[Task], seed: int) -> None:
        self.pool = ColumnarPool()
        device_id = 0
        for slot, node in enumerate(nodes):
            devices = []
            for index in range(node.gpus):
                device_id += 1
                devices.append(DeviceSpec(id=device_id, uuid=f"{node.name}/gpu{index}", kind="gpu", model=node.model, index=index,
                                          price_per_hour=self.settings.price_of(node.model)))
            self.pool.upsert_node(NodeSpec(id=slot, name=node.name, cpu_cores=node.cpu_milli / 1000, memory_total_mib=node.memory_mib), devices)
        self.mix = JobMix(half_life_jobs=self.settings.scheduler.mix_half_life_jobs)
        self.engine = Engine(self.pool, build_stack(), engine_options(self.settings, seed=seed), self.mix)
        self._files: dict[tuple, dict] = {}
        self._jobs = 0

    def place(self, task: Task) -> Assignment | None:
        key = (task.cpu_milli, task.memory_mib, task.num_gpu, task.gpu_milli, task.models)
        spec = self._files.get(key)
        if spec is None:
            spec = self._files[key] = job_file(task)
        self._jobs += 1
        request = PlacementRequest.from_spec(self._jobs, spec)
        self.mix.observe(request)
        decision = self.engine.place(request)
        if isinstance(decision, Unplaceable):
            return None
        [holding] = self.engine.apply(decision)  # one-node jobs: one holding
        gpus = {int(self.pool.dev_index[slot]): task.gpu_milli for slot in holding.devices}
        return Assignment(node=int(self.pool.node_id[holding.node]), gpu_milli=gpus)
