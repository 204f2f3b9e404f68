"""The node must have the CPU cores and host memory the job asks for, after what others hold."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import NodeView


class NodeResources:
    name = "node_resources"

    def filter_node(self, request: PlacementRequest, node: NodeView) -> Status:
        if request.cpu_cores > node.cpu_free + 1e-9:
            return Status("insufficient_cpu", f"{node.cpu_free:g} CPU cores free on {node.name}, {request.cpu_cores:g} asked")
        if request.host_memory_mib > node.memory_free_mib:
            return Status(
                "insufficient_host_memory",
                f"{node.memory_free_mib} MiB host memory free on {node.name}, {request.host_memory_mib} MiB asked",
            )
        return OK
