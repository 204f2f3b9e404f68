"""The node must have the CPU cores and host memory the job asks for, after what others hold."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.request import PlacementRequest


class NodeResources:
    name = "node_resources"
    codes = ("insufficient_cpu", "insufficient_host_memory")

    def check_nodes(self, request: PlacementRequest, ctx: Context, nodes: np.ndarray):
        pool = ctx.pool
        yield "insufficient_cpu", pool.node_cpu[nodes] - pool.node_cpu_held[nodes] + 1e-9 >= request.cpu_cores
        yield "insufficient_host_memory", pool.node_mem[nodes] - pool.node_mem_held[nodes] >= request.host_memory_mib

    def explain(self, code: str, request: PlacementRequest, ctx: Context, node: int) -> str:
        pool, name = ctx.pool, ctx.pool.node_name[node]
        if code == "insufficient_cpu":
            free = pool.node_cpu[node] - pool.node_cpu_held[node]
            return f"{free:g} CPU cores free on {name}, {request.cpu_cores:g} asked"
        free_mib = int(pool.node_mem[node] - pool.node_mem_held[node])
        return f"{free_mib} MiB host memory free on {name}, {request.host_memory_mib} MiB asked"
