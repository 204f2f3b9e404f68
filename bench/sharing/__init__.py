"""The simulator of time for the sharing policy (``bench/placement.py simulate``)."""

from .report import PolicyResult, format_table
from .sim import POLICY_OPTIONS, Simulation
from .workload import SimQueue, TimedTask, compress, default_queues, load_queues, load_timed_tasks, pick_nodes

__all__ = [
    "POLICY_OPTIONS", "PolicyResult", "SimQueue", "Simulation", "TimedTask", "compress", "default_queues", "format_table",
    "load_queues", "load_timed_tasks", "pick_nodes",
]
