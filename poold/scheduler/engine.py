"""Place one job over the pool view: filter, group devices into candidates, score, pick.

Pure: it reads the view and returns a decision; :mod:`poold.scheduler.loop` commits it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from poold.scheduler.framework import Candidate, PlacementRequest, ScoreContext, Status
from poold.scheduler.stack import Stack
from poold.scheduler.view import DeviceView, NodeView, PoolView


@dataclass
class Rejections:
    """Why candidates were turned down: per reason code, a count and one example."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, status: Status) -> None:
        code = status.code
        self.counts[code] += 1
        if code not in self.examples:
            self.examples[code] = status.reason

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
    node_filters, device_filters, candidate_filters = stack.node_filters, stack.device_filters, stack.candidate_filters
    for node in view.nodes:
        status = _first_node_failure(node_filters, request, node)
        if status is not None:
            rejections.add(status)
            continue
        feasible = []
        for device in node.devices:
            # Inlined (not a helper per call): this loop is the placement hot path.
            for plugin in device_filters:
                status = plugin.filter_device(request, device)
                if not status.ok:
                    rejections.add(status)
                    break
            else:
                feasible.append(device)
        for candidate in _group(request, node, feasible, rejections):
            for plugin in candidate_filters:
                status = plugin.filter_candidate(request, candidate)
                if not status.ok:
                    rejections.add(status)
                    break
            else:
                candidates.append(candidate)
    if not candidates:
        return Unplaceable(request, rejections)
    weights = stack.weights(request.objective)
    context = ScoreContext.of(candidates)
    for candidate in candidates:
        for scorer in stack.scorers:
            candidate.scores[scorer.name] = scorer.score(request, candidate, context)
        candidate.total = sum(weights.get(name, 0.0) * value for name, value in candidate.scores.items())
    ranked = sorted(candidates, key=lambda c: (-c.total, c.node.name, [d.index or 0 for d in c.devices]))
    runner_up = next((c for c in ranked[1:] if c.devices[0].model != ranked[0].devices[0].model), None)
    return Placement(request, ranked[0], runner_up)


def _first_node_failure(filters: tuple, request: PlacementRequest, node: NodeView) -> Status | None:
    for plugin in filters:
        status = plugin.filter_node(request, node)
        if not status.ok:
            return status
    return None


def _group(request: PlacementRequest, node: NodeView, feasible: list[DeviceView], rejections: Rejections) -> list[Candidate]:
    """Candidate device sets on one node, one per model: for a fraction, the fullest device it
    fits on; for one whole device, the lowest-indexed; for several, the best-linked set."""
    by_model: dict[str, list[DeviceView]] = defaultdict(list)
    for device in feasible:
        by_model[device.model].append(device)
    candidates = []
    for model, devices in sorted(by_model.items()):
        speed = request.speed_on(model) or 1.0
        if request.count == 1:
            # Devices of one model on one node score alike but for fit: keep the tightest.
            device = min(devices, key=lambda d: (d.free_share, d.index or 0)) if request.fractional else devices[0]
            candidates.append(_candidate(request, node, [device], speed))
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
