"""Trace replay of the FGD paper's protocol, and the paper's baseline placement policies.

`POLICIES` maps a name to a policy factory: `poold` (the daemon's own engine) and the four
baselines are registered here, and other modules add theirs with `register(name, factory)`.
"""

from .baselines import BestFitPolicy, DotProductPolicy, RandomPolicy
from .fgd import FgdPolicy
from .harness import POLICIES, Assignment, InvalidPlacement, Ledger, Policy, SeedResult, register, run
from .poold_policy import PooldPolicy
from .trace import NodeSpec, Task, TraceError, arrival_order, cluster_gpus, load_nodes, load_tasks, node_order

for _name, _factory in {"poold": PooldPolicy, "random": RandomPolicy, "dotprod": DotProductPolicy,
                        "bestfit": BestFitPolicy, "fgd": FgdPolicy}.items():
    register(_name, _factory)

__all__ = [
    "POLICIES", "Assignment", "BestFitPolicy", "DotProductPolicy", "FgdPolicy", "InvalidPlacement", "Ledger",
    "NodeSpec", "Policy", "PooldPolicy", "RandomPolicy", "SeedResult", "Task", "TraceError", "arrival_order", "cluster_gpus",
    "load_nodes", "load_tasks", "node_order", "register", "run",
]
