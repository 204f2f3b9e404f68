"""Nodes that are lost (no heartbeat within ``nodes.timeout_s``) or drained take no new jobs."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.request import PlacementRequest


class NodeReady:
    name = "node_ready"
    codes = ("node_lost", "node_drained")

    def check_nodes(self, request: PlacementRequest, ctx: Context, nodes: np.ndarray):
        pool = ctx.pool
        yield "node_lost", pool.node_ready[nodes]
        yield "node_drained", ~pool.node_drained[nodes]

    def explain(self, code: str, request: PlacementRequest, ctx: Context, node: int) -> str:
        state = "lost (no heartbeat)" if code == "node_lost" else "drained"
        return f"node {ctx.pool.node_name[node]} is {state}"
