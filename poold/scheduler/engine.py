"""Place one job over the pool view: filter, group devices into candidates, score, pick.

Pure: it reads the view and returns a decision; :mod:`poold.scheduler.loop` commits it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from poold.scheduler.framework import Candidate, PlacementRequest, Status
from poold.scheduler.stack import Stack
from poold.scheduler.view import DeviceView, NodeView, PoolView


@dataclass
class Rejections:
    """Why candidates were turned down: per reason code, a count and one example."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, status: Status, times: int = 1) -> None:
        self.counts[status.code] += times
        self.examples.setdefault(status.code, status.reason)

    def summary(self, limit: int = 4) -> str:
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        parts = [f"{code} x{count} (e.g. {self.examples[code]})" for code, count in ranked[:limit]]
        if len(ranked) > limit:
            parts.append(f"and {len(ranked) - limit} more reasons")
        return "; ".join(parts) if parts else "the pool has no nodes"


@dataclass
class Placement:
    request: PlacementRequest
    chosen: Candidate
    runner_up: Candidate | None

    @property
    def reason(self) -> str:
        chosen = self.chosen
        why = {"cost": "cheapest per unit of work", "time": "fastest", "pack": "tightest fit"}[self.request.objective]
        text = f"{why}: {_describe(chosen)}"
        if self.runner_up is not None:
            text += f"; next best: {_describe(self.runner_up)}"
        return text


@dataclass
class Unplaceable:
    request: PlacementRequest
    rejections: Rejections

    @property
    def reason(self) -> str:
        return "no placement fits: " + self.rejections.summary()


def _describe(candidate: Candidate) -> str:
    device = candidate.devices[0]
    what = device.mig_profile and f"MIG {device.mig_profile} of {device.model}" or device.model
    return (
        f"{len(candidate.devices)}x {what} on {candidate.node.name} at {candidate.price_per_hour:.2f}/h, "
        f"speed {candidate.speed:g} -> {candidate.cost_per_work:.2f} per unit of work"
    )


def place(request: PlacementRequest, view: PoolView, stack: Stack) -> Placement | Unplaceable:
    rejections = Rejections()
    candidates: list[Candidate] = []
    for node in view.nodes:
        status = _first_failure(stack.node_filters, lambda f: f.filter_node(request, node))
        if status is not None:
            rejections.add(status)
            continue
        feasible = []
        for device in node.devices:
            status = _first_failure(stack.device_filters, lambda f: f.filter_device(request, device))
            if status is None:
                feasible.append(device)
            else:
                rejections.add(status)
        for candidate in _group(request, node, feasible, rejections):
            status = _first_failure(stack.candidate_filters, lambda f: f.filter_candidate(request, candidate))
            if status is None:
                candidates.append(candidate)
            else:
                rejections.add(status)
    if not candidates:
        return Unplaceable(request, rejections)
    weights = stack.weights(request.objective)
    for candidate in candidates:
        for scorer in stack.scorers:
            candidate.scores[scorer.name] = scorer.score(request, candidate, candidates)
        candidate.total = sum(weights.get(name, 0.0) * value for name, value in candidate.scores.items())
    ranked = sorted(candidates, key=lambda c: (-c.total, c.node.name, [d.index or 0 for d in c.devices]))
    runner_up = next((c for c in ranked[1:] if c.devices[0].model != ranked[0].devices[0].model), None)
    return Placement(request, ranked[0], runner_up)


def _first_failure(filters, check) -> Status | None:  # noqa: ANN001 - filters of one of the three kinds
    for plugin in filters:
        status = check(plugin)
        if not status.ok:
            return status
    return None


def _group(request: PlacementRequest, node: NodeView, feasible: list[DeviceView], rejections: Rejections) -> list[Candidate]:
    """Candidate device sets on one node: each device for single-device jobs, else the best
    same-model set (NVLink-joined and NUMA-local first) per model."""
    by_model: dict[str, list[DeviceView]] = defaultdict(list)
    for device in feasible:
        by_model[device.model].append(device)
    candidates = []
    for model, devices in sorted(by_model.items()):
        speed = request.speed_on(model) or 1.0
        if request.count == 1:
            candidates.extend(_candidate(request, node, [device], speed) for device in devices)
            continue
        if len(devices) < request.count:
            rejections.add(Status("too_few_devices", f"{len(devices)} suitable {model} free on {node.name}, {request.count} asked"))
            continue
        candidates.append(_candidate(request, node, _best_set(devices, request.count), speed))
    return candidates


def _candidate(request: PlacementRequest, node: NodeView, devices: list[DeviceView], speed: float) -> Candidate:
    price = sum(device.price_per_hour * request.share for device in devices)
    return Candidate(node=node, devices=devices, speed=speed, price_per_hour=price)


def _best_set(devices: list[DeviceView], count: int) -> list[DeviceView]:
    """Greedy: from each start device, add the device with the most NVLink links to the set so
    far, preferring the start's NUMA node; keep the set with the most links, then one NUMA node."""
    ordered = sorted(devices, key=lambda d: (d.numa_node if d.numa_node is not None else -1, d.index or 0))
    best: list[DeviceView] = []
    best_key: tuple[int, int] = (-1, -1)
    for start in ordered:
        chosen = [start]
        rest = [d for d in ordered if d is not start]
        while len(chosen) < count:
            nxt = max(
                rest,
                key=lambda d: (
                    min(d.nvlink_to(c) for c in chosen) > 0,
                    d.numa_node == start.numa_node,
                    sum(d.nvlink_to(c) for c in chosen),
                    -(d.index or 0),
                ),
            )
            chosen.append(nxt)
            rest.remove(nxt)
        pairs_linked = sum(1 for i, a in enumerate(chosen) for b in chosen[i + 1 :] if a.nvlink_to(b) > 0)
        key = (pairs_linked, int(len({d.numa_node for d in chosen}) == 1))
        if key > best_key:
            best, best_key = chosen, key
    return best
