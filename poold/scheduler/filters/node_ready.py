"""Nodes that are down (no heartbeat) or drained take no new jobs."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import NodeView


class NodeReady:
    name = "node_ready"

    def filter_node(self, request: PlacementRequest, node: NodeView) -> Status:
        if not node.ready:
            return Status("node_down", f"node {node.name} is down")
        if node.drained:
            return Status("node_drained", f"node {node.name} is drained")
        return OK
